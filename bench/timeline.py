"""Where a run's wall time goes: `python -m bench.timeline [runner overrides]`.

Runs `python -m runner`'s train(cfg) in this process with every stage of runner/train.py and
every hook of every fit() callback timed (wrapped, not replaced: the run is the real one), then
prints the timeline, the pause between each epoch's end line and the next epoch's first step,
and the totals per callback and hook. Timestamps are seconds since this process started.
"""
from __future__ import annotations

import functools
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

T0 = time.perf_counter()
STAGES = ("_set_up_device", "_load_data", "_fit", "_evaluate", "_record")
HOOKS = ("on_train_begin", "on_epoch_begin", "on_epoch_end", "on_test_begin", "on_test_end",
         "on_train_end")


def now() -> float:
    return time.perf_counter() - T0


@dataclass
class Timeline:
    """(start, end, label) spans, and the step marks fit() passes."""

    spans: list[tuple[float, float, str]] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)

    def timed(self, function: Callable, label: str) -> Callable:
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            start = now()
            try:
                return function(*args, **kwargs)
            finally:
                self.spans.append((start, now(), label))
        return wrapper

    def mark(self, label: str) -> None:
        self.marks.append((now(), label))


def marker_callback(timeline: Timeline):
    """First in fit()'s list: marks each epoch's first and last step and validation's ends."""
    from runner.keras2 import keras

    class Marks(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch, self.steps = epoch, 0
            timeline.mark(f"epoch {epoch + 1} begin")

        def on_train_batch_begin(self, batch, logs=None):
            if self.steps == 0:
                timeline.mark(f"epoch {self.epoch + 1} step 1 begin")

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            self.last_step_end = now()
            if self.steps == 1:
                timeline.mark(f"epoch {self.epoch + 1} step 1 end")

        def on_test_begin(self, logs=None):
            timeline.marks.append((self.last_step_end, f"epoch {self.epoch + 1} step {self.steps} end"))
            timeline.mark("validation begin")

        def on_test_end(self, logs=None):
            timeline.mark("validation end")

    return Marks()


def instrument(timeline: Timeline) -> None:
    """Wrap runner/train.py's stages and each callback's epoch-level hooks."""
    import runner.fit.run_callbacks as run_callbacks_module
    import runner.train as train_module

    for stage in STAGES:
        setattr(train_module, stage, timeline.timed(getattr(train_module, stage), f"stage {stage}"))
    original = run_callbacks_module.run_callbacks

    def timed_callbacks(*args, **kwargs):
        callbacks = original(*args, **kwargs)
        for callback in callbacks:
            for hook in HOOKS:
                label = f"{type(callback).__name__}.{hook}"
                setattr(callback, hook, timeline.timed(getattr(callback, hook), label))
        return [marker_callback(timeline), *callbacks]

    run_callbacks_module.run_callbacks = timed_callbacks


class StackSampler:
    """Samples the main thread's Python stack every `interval` seconds: what the run does in a
    pause no hook accounts for (a profile, not a guess)."""

    def __init__(self, interval: float = 0.25):
        import threading

        self.interval = interval
        self.samples: list[tuple[float, str]] = []
        self.main_id = threading.get_ident()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import traceback

        while not self.stopped.wait(self.interval):
            frame = sys._current_frames().get(self.main_id)
            if frame is not None:
                stack = traceback.extract_stack(frame)[-6:]
                self.samples.append((now(), " < ".join(
                    f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(stack))))

    def in_gaps(self, timeline: Timeline) -> list[str]:
        """Samples taken between an epoch's last on_epoch_end and the next epoch's begin."""
        ends = [end for _, end, label in timeline.spans if label.endswith("on_epoch_end")]
        begins = [t for t, label in timeline.marks if label.endswith(" begin") and "epoch" in label
                  and "step" not in label]
        lines = []
        for begin in begins[1:]:
            gap_start = max((end for end in ends if end < begin), default=begin)
            lines += [f"{t:8.2f}  {stack}" for t, stack in self.samples if gap_start < t < begin]
        return lines


def time_garbage_collections(timeline: Timeline) -> None:
    """Python's cyclic garbage collections as spans: a full one walks every Python object, the
    traced graphs' included."""
    import gc

    started: dict[str, float] = {}

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started["t"] = now()
        elif "t" in started:
            timeline.spans.append((started.pop("t"), now(), f"gc generation {info['generation']}"))

    gc.callbacks.append(callback)


def report(timeline: Timeline) -> str:
    """The timeline in order, then per-epoch pauses, then totals per label."""
    events = sorted([(start, f"{label} ({end - start:.2f}s)") for start, end, label in timeline.spans
                     if end - start >= 0.05 or "stage" in label] + timeline.marks)
    lines = [f"{t:8.2f}  {text}" for t, text in events]
    totals: dict[str, float] = defaultdict(float)
    for start, end, label in timeline.spans:
        totals[label] += end - start
    lines.append("totals:")
    lines += [f"  {seconds:7.2f}s  {label}" for label, seconds in
              sorted(totals.items(), key=lambda item: -item[1]) if seconds >= 0.01]
    return "\n".join(lines)


def main(overrides: list[str]) -> None:
    from runner.__main__ import prefer_legacy_keras

    prefer_legacy_keras()  # first, as `python -m runner` does: TensorFlow's import reads it

    started = now()
    import tensorflow  # noqa: F401  (timed: the floor under every start-up)

    print(f"import tensorflow: {now() - started:.2f}s", flush=True)
    timeline = Timeline()
    instrument(timeline)
    time_garbage_collections(timeline)
    from runner.__main__ import main as runner_main

    sys.argv = ["runner", *overrides]
    sampler = StackSampler()
    sampler.thread.start()
    try:
        runner_main()
    except SystemExit:
        pass
    finally:
        sampler.stopped.set()
        print(report(timeline), flush=True)
        print("stack samples between epochs:", *sampler.in_gaps(timeline), sep="\n", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
