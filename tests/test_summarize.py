"""`python -m runner.summarize <sweep dir>` on a partial sweep, without TensorFlow: job folders are
written here in the layout `python -m runner -m` leaves (tests/test_sweeps.py runs the real one)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hydra_plugins.device_pool_launcher.record import append_record
from runner.record.sweep_summary import job_devices
from tests.conftest import runner_env

JOBS = [  # (overrides, status.json, metrics.json or None, history epochs)
    (["batch_size=32", "epochs=5"], {"status": "finished"}, {"val_accuracy": 0.5, "val_loss": 1.5,
     "images_per_sec": 40.0, "wall_seconds": 10.0, "epochs_completed": 5}, 5),
    (["batch_size=64", "epochs=5"], {"status": "failed", "reason": "ResourceExhaustedError: OOM"},
     None, 0),
    (["batch_size=32", "epochs=15"], {"status": "interrupted"}, None, 3),
    (["batch_size=64", "epochs=15"], {"status": "finished"}, {"val_accuracy": 0.75, "val_loss": 0.9,
     "images_per_sec": 60.0, "wall_seconds": 25.0, "epochs_completed": 15}, 15),
]


def write_job(sweep_dir: Path, number: int, overrides, status, metrics, epochs: int) -> Path:
    run_dir = sweep_dir / ",".join(overrides)
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), run_dir / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"job": {"num": number}}}), run_dir / ".hydra" / "hydra.yaml")
    (run_dir / "status.json").write_text(json.dumps(status))
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    if epochs:
        (run_dir / "history.csv").write_text(
            "epoch,loss,val_accuracy\n"
            + "".join(f"{e},{1 / (e + 1)},{e / (epochs + 1)}\n" for e in range(epochs))
        )
    return run_dir


def summarize(sweep_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "runner.summarize", str(sweep_dir)],
        capture_output=True, text=True, env=runner_env(), timeout=120,
    )


def test_summary_of_a_partial_sweep(tmp_path):
    # Written in reverse: the rows follow Hydra's job numbers, not the folders' age or names.
    for number, job in reversed(list(enumerate(JOBS))):
        write_job(tmp_path, number, *job)
    (tmp_path / "batch_size=128,epochs=5" / ".hydra").mkdir(parents=True)  # killed at start
    OmegaConf.save(OmegaConf.create(["batch_size=128", "epochs=5"]),
                   tmp_path / "batch_size=128,epochs=5" / ".hydra" / "overrides.yaml")
    result = summarize(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not any(line.rstrip().endswith("| tensorflow") for line in result.stderr.splitlines())
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["batch_size"], r["epochs"], r["status"]) for r in rows] == [
        ("32", "5", "finished"), ("64", "5", "failed"), ("32", "15", "interrupted"),
        ("64", "15", "finished"), ("128", "5", "not started"),
    ]
    assert rows[0]["overrides"] == "batch_size=32,epochs=5" and rows[0]["run_dir"] == "batch_size=32,epochs=5"
    assert float(rows[3]["val_accuracy"]) == 0.75 and float(rows[3]["images_per_sec"]) == 60.0
    assert rows[1]["reason"] == "ResourceExhaustedError: OOM" and rows[1]["val_accuracy"] == ""
    # docs/sweeps.md: `best` marks the finished job with the highest val_accuracy by default.
    assert [r["best"] for r in rows] == ["", "", "", "best", ""]
    assert "5 job(s): 2 finished, 3 not finished." in result.stdout
    assert "Best val_accuracy 0.7500: batch_size=64,epochs=15" in result.stdout
    assert (tmp_path / "summary.md").read_text() == result.stdout
    assert (tmp_path / "summary.png").stat().st_size > 10_000


def test_a_folder_without_jobs_exits_2(tmp_path):
    result = summarize(tmp_path)
    assert result.returncode == 2 and "holds no job folders" in result.stderr


def test_the_plot_shows_each_metric_against_the_first_swept_key_and_every_learning_curve(tmp_path):
    """docs/sweeps.md: summary.png is val_accuracy and images_per_sec against the first swept key
    (one line per value of the other swept keys), and each job's val_accuracy learning curve from
    its history.csv."""
    from runner.record.sweep_summary import find_jobs, plot, read_job

    for number, job in enumerate(JOBS):
        write_job(tmp_path, number, *job)
    figure = plot([read_job(run_dir) for run_dir in find_jobs(tmp_path)], tmp_path / "summary.png")
    accuracy, speed, curves = figure.axes
    for ax, metric in ((accuracy, "val_accuracy"), (speed, "images_per_sec")):
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("batch_size", metric)
        # The finished jobs: batch_size=32,epochs=5 and batch_size=64,epochs=15, one line each.
        lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
        values = {"val_accuracy": (0.5, 0.75), "images_per_sec": (40.0, 60.0)}[metric]
        assert lines == {"epochs=5": [values[0]], "epochs=15": [values[1]]}
    # One curve per job with a history: 5, 3 and 15 epochs (the failed job has none).
    assert sorted(len(line.get_ydata()) for line in curves.get_lines()) == [3, 5, 15]


@pytest.mark.parametrize("metric,best", [("val_accuracy", "lr=0.1"), ("val_loss", "lr=0.01")])
def test_the_best_job_follows_the_optimized_metric_and_its_direction(tmp_path, metric, best):
    """docs/sweeps.md: `best` is the finished job with the best optimized_metric: the highest
    accuracy, or the lowest loss (here another job than the most accurate one); a job whose
    metric is not a number is never the best (first here: min() would keep it)."""
    jobs = [(["lr=10"], {"val_accuracy": 0.05, "val_loss": float("nan")}),
            (["lr=0.1"], {"val_accuracy": 0.8, "val_loss": 1.2}),
            (["lr=0.01"], {"val_accuracy": 0.7, "val_loss": 0.6}),
            (["lr=1"], {"val_accuracy": 0.1, "val_loss": 2.3})]
    for number, (overrides, scores) in enumerate(jobs):
        metrics = {**scores, "images_per_sec": 1.0, "wall_seconds": 1.0, "epochs_completed": 1}
        run_dir = write_job(tmp_path, number, overrides, {"status": "finished"}, metrics, 1)
        OmegaConf.save(OmegaConf.create({"optimized_metric": metric}), run_dir / ".hydra" / "config.yaml")
    result = summarize(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "summary.csv") as f:
        assert [row["overrides"] for row in csv.DictReader(f) if row["best"]] == [best]


def test_each_job_gets_the_device_its_last_attempt_ran_on(tmp_path):
    """The summary's device column, from the device pool's record: a job run again later (a re-run
    sweep) shows its last device; the sweep's own lines (no run_dir) name no job."""
    append_record(tmp_path, {"event": "pool", "devices": ["cpu:0", "cpu:1"]})
    append_record(tmp_path, {"run_dir": "0", "device": "cpu:0"})
    append_record(tmp_path, {"run_dir": "1", "device": "cpu:1"})
    append_record(tmp_path, {"run_dir": "0", "device": "cpu:1"})
    assert job_devices(tmp_path) == {"0": "cpu:1", "1": "cpu:1"}
    assert job_devices(tmp_path / "a basic launcher's sweep") == {}


def test_the_columns_are_the_keys_the_sweep_varied_and_no_others():
    """A key every job shares (dataset=digits) is no column; a key only some jobs set is one; the
    metric columns come from metrics.json."""
    from runner.record.sweep_summary import JobResult, summary_rows

    def job(name: str, overrides: dict) -> JobResult:
        return JobResult(Path("/sweep") / name, overrides, "finished", "",
                         {"val_accuracy": 0.5, "val_loss": 1.0}, [], {})

    jobs = [job("a", {"dataset": "digits", "seed": "1"}),
            job("b", {"dataset": "digits", "seed": "2"}),
            job("c", {"dataset": "digits", "seed": "2", "batch_size": "8"})]
    rows = summary_rows(jobs, Path("/sweep"))
    columns = list(rows[0])
    assert columns[:2] == ["batch_size", "seed"] and "dataset" not in columns
    assert [(r["batch_size"], r["seed"]) for r in rows] == [("", "1"), ("", "2"), ("8", "2")]
    assert rows[2]["overrides"] == "batch_size=8,seed=2"
    assert {"val_accuracy", "val_loss", "status", "run_dir", "best"} <= set(columns)
