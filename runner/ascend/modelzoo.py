"""The console lines of the Ascend ModelZoo recipes' train.py, and the figures their test/*.sh
scripts read back from those lines with grep and awk.

`modelzoo=bit` or `modelzoo=learnable_resizer` (scripts/ascend/ sets it) makes a run print the
original's lines on stdout and compute metrics.json's Ascend figures the way that recipe's scripts
do, so a ModelZoo user's tooling reads the same numbers from the log as from metrics.json. The
originals: Ascend/ModelZoo-TensorFlow, TensorFlow2/built-in/keras_sample/cv/
bit_ID2496_for_TensorFlow2.X and learnable_resizer_ID2518_for_TensorFlow2.X (docs/ascend.md).

Lines (printed, not logged: the scripts' awk counts whitespace-separated fields from the start):
  both      `Epoch 2/5` and `10/10 - 5s - loss: 0.6148 - accuracy: 0.7891 - val_loss: 0.3020 -
            val_accuracy: 0.9036` (Keras 2.6's verbose=2 epoch line)
  bit       `params:  {...}`, `step:N ,loss: X ,time:T` every log_steps steps (N counts from 0 in
            each epoch), `epoch_duration:  S`, and at the end `imgs/s: F`
  resizer   `TimeHistory: S seconds, F examples/second between steps A and B` every log_steps steps

Nothing here imports TensorFlow (runner.ascend reads the names and formats).
"""
from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

NETWORKS = {
    "bit": "bit_ID2496_for_TensorFlow2.X",
    "learnable_resizer": "learnable_resizer_ID2518_for_TensorFlow2.X",
}
DYNAMIC_PERF = "dynamic_perf"  # BiT's dynamic-shape script: its own CaseName and TrainingTime
SLOW_STEP_SECONDS = 10  # BiT's train.py leaves steps of 10 s or more out of its throughput
EPOCH_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")  # what the originals' lines hold


def keras_number(value: float) -> str:
    """A metric as Keras 2.6's progress bar prints it."""
    return f"{value:.4f}" if value > 1e-3 else f"{value:.4e}"


def epoch_line(steps: int, seconds: float, logs: dict[str, float]) -> str:
    """Keras 2.6's verbose=2 line. Printed by the runner, not by Keras: tf-keras 2.21 appends
    ` - 5s/epoch - 500ms/step`, which moves the last field the BiT scripts read."""
    figures = "".join(f" - {key}: {keras_number(logs[key])}" for key in EPOCH_KEYS if key in logs)
    return f"{steps}/{steps} - {seconds:.0f}s{figures}"


class ConsoleLines:
    """What both recipes print per epoch; subclasses add their per-step lines and figures.

    Called by runner.ascend.figures.ModelZooLines with Keras' hooks. Keeps every number as the
    text it printed, so the figures are exactly what a script's awk would read from the log.
    """

    def __init__(self, batch_size: int, log_steps: int, epochs: int, out: TextIO | None = None):
        self.batch_size, self.log_steps, self.epochs = batch_size, log_steps, epochs
        self.out = out or sys.stdout
        self.epoch_texts: list[dict[str, str]] = []  # each epoch line's figures, as printed
        self.steps_in_epoch = 0

    def print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def train_begin(self, params: dict[str, Any]) -> None:
        pass

    def epoch_begin(self, epoch: int) -> None:
        self.epoch_start = time.perf_counter()
        self.steps_in_epoch = 0
        if self.epochs > 1:
            self.print(f"Epoch {epoch + 1}/{self.epochs}")

    def batch_begin(self, batch: int) -> None:
        pass

    def batch_end(self, batch: int, loss: float) -> None:
        self.steps_in_epoch = batch + 1

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        line = epoch_line(self.steps_in_epoch, time.perf_counter() - self.epoch_start, logs)
        self.epoch_texts.append({k: keras_number(logs[k]) for k in EPOCH_KEYS if k in logs})
        self.print(line)

    def train_end(self) -> None:
        pass

    def last_epoch(self, key: str) -> float:
        return float(self.epoch_texts[-1][key]) if self.epoch_texts else float("nan")

    def epoch_losses(self) -> list[str]:
        return [texts["loss"] for texts in self.epoch_texts if "loss" in texts]


class BitLines(ConsoleLines):
    """bit_ID2496's train.py: its LossHistory callback's lines.

    Figures as its scripts read them: TrainingTime the last step line's time (seconds; the
    dynamic script: the mean of all step lines but the first), ActualFPS its `imgs/s:` line
    (batch / mean step time of epochs 2 and later; the dynamic script: batch / TrainingTime),
    TrainAccuracy the last epoch line's val_accuracy, ActualLoss the last epoch line's loss
    (the dynamic script: the last step line's).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.steps: list[tuple[str, str]] = []  # (loss, time) of each step line, as printed
        self.epoch_means: list[float] = []  # mean step time of each epoch after the first
        self.epoch_step_times: list[float] = []
        self.first_epoch_mean = float("nan")

    def train_begin(self, params: dict[str, Any]) -> None:
        self.print(f"params:  {params}")

    def epoch_begin(self, epoch: int) -> None:
        super().epoch_begin(epoch)
        self.epoch_step_times = []

    def batch_begin(self, batch: int) -> None:
        self.step_start = time.perf_counter()

    def batch_end(self, batch: int, loss: float) -> None:
        super().batch_end(batch, loss)
        if batch % self.log_steps:
            return
        seconds = time.perf_counter() - self.step_start
        if seconds < SLOW_STEP_SECONDS:
            self.epoch_step_times.append(seconds)
        texts = (f"{loss:f}", f"{seconds:f}")
        self.steps.append(texts)
        self.print(f"step:{batch} ,loss: {texts[0]} ,time:{texts[1]}")

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        super().epoch_end(epoch, logs)
        self.print(f"epoch_duration:  {time.perf_counter() - self.epoch_start}")
        mean = statistics.mean(self.epoch_step_times) if self.epoch_step_times else float("nan")
        if epoch == 0:
            self.first_epoch_mean = mean
        else:
            self.epoch_means.append(mean)

    def train_end(self) -> None:
        self.print(f"imgs/s: {self.images_per_sec():.2f}")

    def images_per_sec(self) -> float:
        # The original divides by the mean of an empty list after one epoch (`imgs/s: nan`):
        # a one-epoch run reports its only epoch instead.
        means = self.epoch_means or [self.first_epoch_mean]
        return self.batch_size / statistics.mean(means)

    def figures(self, case_kind: str) -> dict[str, float]:
        later = [float(seconds) for _, seconds in self.steps[1:]]
        if case_kind == DYNAMIC_PERF:
            training_time = float(f"{statistics.mean(later):.6g}") if later else float("nan")
            fps = float(f"{self.batch_size / training_time:.2f}")
            loss = float(self.steps[-1][0]) if later else float("nan")
        else:
            training_time = float(self.steps[-1][1]) if self.steps else float("nan")
            fps = float(f"{self.images_per_sec():.2f}")
            loss = self.last_epoch("loss")
        return {"ActualFPS": fps, "TrainingTime": training_time,
                "TrainAccuracy": self.last_epoch("val_accuracy"), "ActualLoss": loss}

    def losses(self, case_kind: str) -> list[str]:
        if case_kind == DYNAMIC_PERF:
            return [loss for loss, _ in self.steps[1:]]
        return self.epoch_losses()


class ResizerLines(ConsoleLines):
    """learnable_resizer_ID2518's learnable_resizer.py: its TimeHistory callback's lines.

    Figures as its scripts read them: ActualFPS the last TimeHistory line's examples/second,
    TrainingTime batch * 1000 / ActualFPS (ms), TrainAccuracy and ActualLoss the last epoch
    line's training accuracy and loss.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.global_steps = 0
        self.last_log_step = 0
        self.window_start: float | None = None
        self.last_rate = ""

    def epoch_begin(self, epoch: int) -> None:
        super().epoch_begin(epoch)
        self._start_window()

    def batch_begin(self, batch: int) -> None:
        self._start_window()

    def _start_window(self) -> None:
        # As the original: a window starts at the first step after a line (or at an epoch's
        # start) and so may include the validation between two epochs.
        if self.window_start is None:
            self.window_start = time.perf_counter()

    def batch_end(self, batch: int, loss: float) -> None:
        super().batch_end(batch, loss)
        self.global_steps += 1
        if self.global_steps - self.last_log_step >= self.log_steps:
            self._window_line()

    def _window_line(self) -> None:
        seconds = time.perf_counter() - (self.window_start or time.perf_counter())
        steps = self.global_steps - self.last_log_step
        self.last_rate = f"{steps * self.batch_size / seconds:.2f}"
        self.print(f"TimeHistory: {seconds:.2f} seconds, {self.last_rate} examples/second "
                   f"between steps {self.last_log_step} and {self.global_steps}")
        self.last_log_step, self.window_start = self.global_steps, None

    def train_end(self) -> None:
        # A run shorter than log_steps would leave the scripts without a figure (the original
        # logs every 145 steps): one line for the whole run then.
        if not self.last_rate and self.global_steps:
            self._window_line()

    def figures(self, case_kind: str) -> dict[str, float]:
        fps = float(self.last_rate) if self.last_rate else float("nan")
        return {"ActualFPS": fps, "TrainingTime": float(f"{self.batch_size * 1000 / fps:.2f}"),
                "TrainAccuracy": self.last_epoch("accuracy"), "ActualLoss": self.last_epoch("loss")}

    def losses(self, case_kind: str) -> list[str]:
        return self.epoch_losses()


CONSOLES: dict[str, type[ConsoleLines]] = {"bit": BitLines, "learnable_resizer": ResizerLines}

# How each script writes a figure into <CaseName>.log: as the text its awk took from the log.
_FIXED = {"ActualFPS": "{:.2f}".format, "TrainAccuracy": keras_number}
FIGURE_TEXT: dict[tuple[str, str], dict[str, Callable[[float], str]]] = {
    ("bit", "acc"): {**_FIXED, "TrainingTime": "{:f}".format, "ActualLoss": keras_number},
    ("bit", "perf"): {**_FIXED, "TrainingTime": "{:f}".format, "ActualLoss": keras_number},
    ("bit", DYNAMIC_PERF): {**_FIXED, "TrainingTime": "{:.6g}".format, "ActualLoss": "{:f}".format},
    ("learnable_resizer", "acc"): {**_FIXED, "TrainingTime": "{:.2f}".format, "ActualLoss": keras_number},
    ("learnable_resizer", "perf"): {**_FIXED, "TrainingTime": "{:.2f}".format, "ActualLoss": keras_number},
}


def case_name(network: str, batch_size: int, rank_size: int, case_kind: str) -> str:
    return f"{network}_bs{batch_size}_{rank_size}p_{case_kind}"


def loss_file_name(case: str) -> str:
    """The file the scripts' awk writes the loss values into, beside train_<id>.log."""
    return f"train_{case}_loss.txt"
