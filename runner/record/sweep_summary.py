"""A sweep's results in its root folder: summary.csv, summary.md and summary.png.

SweepSummary, a Hydra callback (conf/config.yaml: hydra.callbacks), writes them when a multirun
ends and makes the command exit 1 if a job did not finish. `python -m runner.summarize <sweep
dir>` rebuilds them for any finished or partial sweep. No TensorFlow here (it reads the files
each job left: .hydra/overrides.yaml, status.json, metrics.json, history.csv); matplotlib is
imported only to draw.
"""
from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.device_pool_launcher.record import read_records  # jobs' devices
from runner.config.schema import direction
from runner.record.placement import node_label
from runner.record.run_folder import (
    CONFIG_FILE,
    FINISHED,
    HYDRA_FILE,
    INTERRUPTED,
    OVERRIDES_FILE,
    RUNNING,
    current_status,
    read_env,
    read_history,
    read_metrics,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

SUMMARY_CSV, SUMMARY_MD, SUMMARY_PNG = "summary.csv", "summary.md", "summary.png"
METRIC_COLUMNS = ("val_accuracy", "val_loss", "images_per_sec", "wall_seconds", "epochs_completed")


@dataclass
class JobResult:
    """What one job folder of a sweep says about its run."""

    run_dir: Path
    overrides: dict[str, str]  # key -> value, as given on the command line
    status: str
    reason: str
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    placement: dict[str, Any]  # env.json's: host, device, Ray node (runner/record/placement.py)

    @property
    def finished(self) -> bool:
        return self.status == FINISHED


def _job_number(run_dir: Path) -> float:
    """Hydra's job number (the order it launched the jobs in); unknown ones go last."""
    try:
        return float(OmegaConf.load(run_dir / HYDRA_FILE).hydra.job.num)
    except Exception:  # a job folder cut short: order it by name after the others
        return math.inf


def find_jobs(sweep_dir: Path) -> list[Path]:
    """The sweep's job folders (each holds .hydra/overrides.yaml), in launch order."""
    dirs = {path.parent.parent for path in sweep_dir.glob(f"**/{OVERRIDES_FILE}")}
    return sorted(dirs, key=lambda d: (_job_number(d), str(d)))


def read_job(run_dir: Path) -> JobResult:
    overrides = [str(item) for item in OmegaConf.load(run_dir / OVERRIDES_FILE)]
    metrics = read_metrics(run_dir)
    status = current_status(run_dir) or {}
    return JobResult(
        run_dir=run_dir,
        overrides=dict(item.split("=", 1) for item in overrides if "=" in item),
        # metrics.json is written last, so it alone means finished (train() skips such a folder).
        status=FINISHED if metrics is not None else status.get("status", "not started"),
        reason="" if metrics is not None else _reason(status),
        metrics=metrics or {},
        history=read_history(run_dir),
        placement=(read_env(run_dir) or {}).get("placement", {}),
    )


def _reason(status: dict[str, Any]) -> str:
    """Why a job did not finish, and for an interrupted one how to go on."""
    if status.get("status") == RUNNING:
        return (f"held by {status['holder']}: another process runs it, so a launch beside it "
                "skips it") if "holder" in status else ""
    if status.get("status") == INTERRUPTED and "resume" in status:
        return "; ".join(filter(None, [status.get("reason"), f"resume with: {status['resume']}"]))
    return status.get("reason", "")


def swept_keys(jobs: Sequence[JobResult]) -> list[str]:
    """Override keys whose value differs between jobs: what the sweep varied."""
    keys = sorted({key for job in jobs for key in job.overrides})
    return [key for key in keys if len({job.overrides.get(key) for job in jobs}) > 1]


def _label(job: JobResult, keys: Sequence[str]) -> str:
    return ",".join(f"{key}={job.overrides.get(key, '')}" for key in keys)


def optimized_metric(jobs: Sequence[JobResult]) -> str:
    """The metric the jobs returned to the sweeper (their config's optimized_metric)."""
    for job in jobs:
        config = job.run_dir / CONFIG_FILE
        if config.is_file():
            return str(OmegaConf.load(config).get("optimized_metric", "val_accuracy"))
    return "val_accuracy"


def best_job(jobs: Sequence[JobResult], metric: str) -> JobResult | None:
    """The finished job with the best value of metric (the sweeper's best trial), if any."""
    scored = [job for job in jobs if job.finished and math.isfinite(job.metrics.get(metric, math.nan))]
    pick = min if direction(metric) == "minimize" else max
    return pick(scored, key=lambda job: job.metrics[metric], default=None)


def job_devices(sweep_dir: Path) -> dict[str, str]:
    """Job folder (relative to the sweep's) -> the device its last attempt ran on, for a sweep
    run with hydra/launcher=device_pool; empty for any other launcher."""
    return {record["run_dir"]: record["device"] for record in read_records(sweep_dir) if "run_dir" in record}


def summary_rows(jobs: Sequence[JobResult], sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job: its swept values, overrides, status (+ reason), metrics, the device
    (device-pool and Ray sweeps), the Ray node (Ray sweeps), folder and whether it is the best by
    optimized_metric."""
    keys = swept_keys(jobs)
    best = best_job(jobs, optimized_metric(jobs))
    devices = job_devices(sweep_dir)
    on_ray = any("ray_node_id" in job.placement for job in jobs)
    return [
        {
            **{key: job.overrides.get(key, "") for key in keys},
            "overrides": _label(job, keys or sorted(job.overrides)),
            "status": job.status,
            "reason": job.reason,
            **{column: job.metrics.get(column, "") for column in METRIC_COLUMNS},
            **({"device": devices.get(str(job.run_dir.relative_to(sweep_dir)))
                or job.placement.get("device", "")} if devices or on_ray else {}),
            **({"node": node_label(job.placement) if job.placement else ""} if on_ray else {}),
            "run_dir": str(job.run_dir.relative_to(sweep_dir)),
            "best": "best" if job is best else "",
        }
        for job in jobs
    ]


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["overrides", "status"])
        writer.writeheader()
        writer.writerows(rows)


def _cell(value: Any) -> str:
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|")


def markdown(rows: Sequence[dict[str, Any]], jobs: Sequence[JobResult], sweep_dir: Path) -> str:
    where = [column for column in ("device", "node") if rows and column in rows[0]]
    columns = ["overrides", "status", *METRIC_COLUMNS, *where, "run_dir", "reason", "best"]
    finished = [job for job in jobs if job.finished]
    lines = [
        f"# Sweep {sweep_dir}",
        "",
        f"{len(jobs)} job(s): {len(finished)} finished, {len(jobs) - len(finished)} not finished.",
    ]
    metric = optimized_metric(jobs)
    best = best_job(jobs, metric)
    if best is not None:
        lines.append(
            f"Best {metric} {best.metrics[metric]:.4f}: "
            f"{best.run_dir.relative_to(sweep_dir)}"
        )
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[column]) for column in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _against_swept_value(ax: Any, jobs: Sequence[JobResult], keys: Sequence[str], metric: str) -> None:
    """metric against the first swept value, one line per combination of the other swept values."""
    x_key, group_keys = (keys[0], keys[1:]) if keys else ("job", [])
    groups: dict[str, list[tuple[str, float]]] = {}
    for number, job in enumerate(jobs):
        if job.finished and metric in job.metrics:
            x = job.overrides.get(x_key, str(number))
            groups.setdefault(_label(job, group_keys), []).append((x, job.metrics[metric]))
    categories = sorted({x for points in groups.values() for x, _ in points}, key=_sort_key)
    for label, points in groups.items():
        points.sort(key=lambda point: _sort_key(point[0]))
        ax.plot([categories.index(x) for x, _ in points], [y for _, y in points], "o-",
                label=label or None)
    ax.set_xticks(range(len(categories)), categories)
    ax.set_xlabel(x_key)
    ax.set_ylabel(metric)
    if group_keys:
        ax.legend(fontsize="small")


def _sort_key(text: str) -> tuple[int, float, str]:
    """Numbers in numeric order, then anything else by name."""
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def _learning_curves(ax: Any, jobs: Sequence[JobResult], keys: Sequence[str]) -> None:
    for job in jobs:
        epochs = [row["epoch"] + 1 for row in job.history if "val_accuracy" in row]
        if epochs:
            values = [row["val_accuracy"] for row in job.history if "val_accuracy" in row]
            ax.plot(epochs, values, ".-", label=_label(job, keys) or job.run_dir.name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val_accuracy")
    ax.set_title("learning curves")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="x-small")


def plot(jobs: Sequence[JobResult], path: Path) -> Figure:
    """val accuracy and throughput against the swept values, and each job's learning curve (the
    figure is returned too, for a reader that checks what it shows)."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

    keys = swept_keys(jobs)
    figure = Figure(figsize=(15, 4.5), layout="constrained")
    accuracy, speed, curves = figure.subplots(1, 3)
    _against_swept_value(accuracy, jobs, keys, "val_accuracy")
    _against_swept_value(speed, jobs, keys, "images_per_sec")
    _learning_curves(curves, jobs, keys)
    figure.suptitle(f"{path.parent.name}: {sum(job.finished for job in jobs)}/{len(jobs)} finished")
    figure.savefig(path, dpi=100)
    return figure


def write_summary(sweep_dir: Path) -> list[JobResult]:
    """Write summary.csv, summary.md and summary.png into sweep_dir; return the jobs read."""
    jobs = [read_job(run_dir) for run_dir in find_jobs(sweep_dir)]
    rows = summary_rows(jobs, sweep_dir)
    write_csv(rows, sweep_dir / SUMMARY_CSV)
    (sweep_dir / SUMMARY_MD).write_text(markdown(rows, jobs, sweep_dir))
    plot(jobs, sweep_dir / SUMMARY_PNG)
    return jobs


class SweepSummary(Callback):
    """Writes the summary when a multirun ends; exits 1 if any job did not finish."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Before the sweeper opens its storage there (hparams_search=optuna: <sweep dir>/optuna.db).
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = write_summary(sweep_dir)
        log.info("sweep summary: %s", sweep_dir / SUMMARY_MD)
        unfinished = [job for job in jobs if not job.finished]
        for job in unfinished:
            log.error("job %s %s: %s", job.run_dir.name, job.status, job.reason)
        if unfinished:
            log.error("%d of %d job(s) did not finish", len(unfinished), len(jobs))
            # SystemExit, not an exception: Hydra turns a callback's exceptions into warnings.
            raise SystemExit(1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runner.summarize",
        description="Rebuild summary.csv, summary.md and summary.png of a (finished or partial) sweep.",
    )
    parser.add_argument("sweep_dir", type=Path, help="the sweep's folder (hydra.sweep.dir)")
    sweep_dir = parser.parse_args(argv).sweep_dir
    if not find_jobs(sweep_dir):
        print(
            f"Error: {sweep_dir} holds no job folders (none with .hydra/overrides.yaml): pass the "
            "folder of a `python -m runner -m ...` sweep (hydra.sweep.dir).",
            file=sys.stderr,
        )
        return 2
    try:
        write_summary(sweep_dir)
    except OSError as error:  # a full or read-only disk: the jobs' own records are untouched
        print(f"Error: the summary cannot be written into {sweep_dir} ({error}). Free space there (or "
              "make it writable) and run python -m runner.summarize again; the jobs' folders are "
              "as they were.", file=sys.stderr)
        return 2
    print((sweep_dir / SUMMARY_MD).read_text(), end="")
    return 0

