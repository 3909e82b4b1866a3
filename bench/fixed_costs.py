"""8. Fixed costs: whole `python -m runner` runs, their wall time against their pure step time.

Both sides of each ratio come from the same run: the wall time from launch to exit (measured
here) and the step time (optimizer steps x the steady seconds per step StepLogger measured, in
metrics.json). train.log's stamps split the rest into start-up (launch to the first finished
step, less that step), the pauses between epochs (an epoch's end line to the next epoch's first
step line, less that step) and the closing (the last epoch's line to exit). Each step is logged
(log_steps=1) so that every epoch's first step has its line.

The quickstart's runs alternate with its training as a bare Keras 2 script (bench/keras_floor.py),
measured the same way: the floor TensorFlow and Keras set under any program's wall / step time.
"""
from __future__ import annotations

import json
import re
import statistics
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from bench.report import Row
from bench.startup import LOG_TIME_FORMAT, timed_output, wall_seconds
from runner.record.run_folder import LOG_FILE, read_metrics
from runner.versions import installed_tensorflow
from tests.bit_fixtures import write_bit_savedmodel

SECTION = "8 fixed costs"
QUICKSTART: list[str] = []  # `python -m runner` as the README runs it
# BiT's seed recipe shape (conf/model/bit.yaml: batch 64, 15 epochs of 10 steps) through a tiny
# SavedModel on digits: per-epoch costs dominate, as on an NPU. No early stopping: all 15 epochs.
BIT_SHAPE = ["model=bit", "dataset=digits", "dataset.image_size=32", "model.crop_size=24",
             "model.early_stopping_patience=0"]
STEP_LINE = re.compile(r"epoch: (\d+) step: (\d+) ,.* ,time: ([\d.]+)")
EPOCH_LINE = re.compile(r"epoch (\d+)/\d+ ")
FIRST_STEP = re.compile(r"first training step finished ([\d.]+)s after fit started")


def recipe_overrides(recipe: str, work_dir: Path, shorten: list[str]) -> list[str]:
    if recipe == "resizer":
        return [*QUICKSTART, *shorten]
    handle = work_dir / "toy-bit-savedmodel"
    if not (handle / "saved_model.pb").is_file():
        write_bit_savedmodel(handle, 16)
    return [*BIT_SHAPE, f"model.handle={handle}", *shorten]


def measure_run(overrides: list[str], run_dir: Path) -> dict[str, float]:
    """One run: its wall time, step time and the fixed costs train.log's stamps show."""
    launched = datetime.now()
    wall = wall_seconds([sys.executable, "-m", "runner", *overrides, "log_steps=1",
                         f"hydra.run.dir={run_dir}"])
    metrics = read_metrics(run_dir)
    step_seconds = metrics["batch_size"] / metrics["images_per_sec"]
    parts = log_parts((run_dir / LOG_FILE).read_text(), launched, launched + timedelta(seconds=wall))
    return {"wall": wall, "steps": metrics["optimizer_steps"] * step_seconds, **parts}


def floor_command(epochs: int, batch_size: int, steps_per_epoch: int | None) -> list[str]:
    """`python -m bench.keras_floor`'s arguments; steps_per_epoch 0: one pass over the split."""
    return [sys.executable, "-m", "bench.keras_floor", *map(str, (epochs, batch_size, steps_per_epoch or 0))]


def measure_floor(epochs: int, batch_size: int, steps_per_epoch: int | None) -> dict[str, float]:
    """The same training as a bare Keras 2 script: its wall time and its step time."""
    wall, printed = timed_output(floor_command(epochs, batch_size, steps_per_epoch))
    figures = json.loads(printed.strip().splitlines()[-1])
    return {"wall": wall, "steps": figures["steps"] * figures["step_seconds"]}


def log_parts(log_text: str, launched: datetime, exited: datetime) -> dict[str, float]:
    """start-up, first step after fit's start, median and total pause between epochs, closing."""
    first_step_after_fit, step_lines, epoch_ends = None, [], []
    for line in log_text.splitlines():
        stamp = _stamp(line)
        first_step, step = FIRST_STEP.search(line), STEP_LINE.search(line)
        if first_step and first_step_after_fit is None:
            first_step_after_fit = float(first_step.group(1))
        elif step:
            step_lines.append((stamp, int(step.group(1)), int(step.group(2)), float(step.group(3))))
        elif EPOCH_LINE.search(line) and "step:" not in line:
            epoch_ends.append(stamp)
    first = step_lines[0]
    pauses = [
        (stamp - epoch_ends[epoch - 2]).total_seconds() - seconds
        for stamp, epoch, step, seconds in step_lines if step == 1 and 2 <= epoch <= len(epoch_ends) + 1
    ]
    return {
        "startup": (first[0] - launched).total_seconds() - first[3],
        "first_step_after_fit": first_step_after_fit,
        "pause_median": statistics.median(pauses) if pauses else 0.0,
        "pauses": sum(pauses),
        "closing": (exited - epoch_ends[-1]).total_seconds(),
    }


def _stamp(line: str) -> datetime | None:
    try:
        return datetime.strptime(line[1:24], LOG_TIME_FORMAT)
    except ValueError:
        return None


def fixed_cost_rows(bench, recipe: str) -> list[Row]:
    """bench.size.rounds runs of the recipe's shape; medians, with the per-run ratios."""
    from bench.rates import new_run_dir

    shorten = list(bench.size.fixed_cost_run) if recipe == "resizer" else list(bench.size.fixed_cost_bit_run)
    overrides = recipe_overrides(recipe, bench.work_dir, shorten)
    cfg = bench.compose(overrides) if recipe == "resizer" else None  # the floor is the quickstart's
    runs, floors = [], []
    for _ in range(bench.size.rounds):  # the runner and the bare script alternate
        runs.append(measure_run(overrides, new_run_dir(bench.work_dir, f"fixed-{recipe}")))
        if cfg is not None:
            floors.append(measure_floor(cfg.epochs, cfg.batch_size, cfg.steps_per_epoch))
    shape = " ".join(o for o in overrides if not o.startswith("model.handle=")) or "(the quickstart)"
    return cost_rows(recipe, shape, runs, f"TF {installed_tensorflow()[1]}", floors)


def cost_rows(recipe: str, shape: str, runs: list[dict[str, float]], stack: str,
              floors: Sequence[dict[str, float]] = ()) -> list[Row]:
    """The medians of the runs' figures, and of the bare script's (floors) when measured; each
    measurement names the stack, so that both stacks' rows can stand in one dated section of
    results.md."""
    def med(key: str) -> float:
        return statistics.median(run[key] for run in runs)

    ratios = [run["wall"] / run["steps"] for run in runs]
    per_run = "per run " + ", ".join(f"{r:.2f}" for r in ratios)
    goal = "goal <= 1.3; " if recipe == "resizer" else ""
    figures = [  # (measurement, value, unit, note, per-run values)
        ("wall, launch to exit", med("wall"), "s", f"python -m runner {shape}", ()),
        ("pure step time", med("steps"), "s", "optimizer steps x steady s/step", ()),
        ("wall / step time", statistics.median(ratios), "ratio", goal + per_run, tuple(ratios)),
        ("first step after fit starts", med("first_step_after_fit"), "s",
         "tracing included; goal <= 10 s", ()),
        ("start-up: launch to first step", med("startup"), "s", "less the step itself", ()),
        ("pause between epochs (median)", med("pause_median"), "s",
         "epoch line to next epoch's first step, less the step; goal <= 2 s", ()),
        ("pauses between epochs, all", med("pauses"), "s", "per run", ()),
        ("closing: last epoch to exit", med("closing"), "s",
         "final figures, metrics.json, HParams, exit", ()),
    ]
    if floors:
        floor_ratios = [floor["wall"] / floor["steps"] for floor in floors]
        figures += [
            ("bare Keras 2 script: wall", statistics.median(f["wall"] for f in floors), "s",
             "the same training, nothing else (bench/keras_floor.py)", ()),
            ("bare Keras 2 script: wall / step time", statistics.median(floor_ratios), "ratio",
             "the floor under the runner's; per run " + ", ".join(f"{r:.2f}" for r in floor_ratios),
             tuple(floor_ratios)),
        ]
    return [Row(SECTION, recipe, f"{name}, {stack}", value, unit, note, rounds)
            for name, value, unit, note, rounds in figures]
