"""Keras callbacks the runner adds: per-step log lines and steady-state throughput, and what
resuming needs (trim history.csv to the restored backup; early stopping that remembers earlier
attempts; stop cleanly on a signal)."""
from __future__ import annotations

import logging
import os
import time
from contextlib import suppress
from pathlib import Path

from runner.errors import RunInterrupted
from runner.keras2 import keras
from runner.record.resume import StopSignals, trim_history
from runner.record.run_folder import backup_epoch, read_history
from runner.record.tracking import NoTracker

log = logging.getLogger("runner.fit")

WARMUP_STEPS = 5  # the first steps include tracing and pipeline start-up


class StepLogger(keras.callbacks.Callback):
    """Logs loss, accuracy and speed every `log_steps` steps and after each epoch.

    Also measures throughput from the steps' own wall time (not validation, not callbacks),
    skipping the first WARMUP_STEPS steps of the run. With steps_per_execution > 1, Keras calls
    the batch hooks once per execution (first and last step of it), so steps are counted from
    those indices. The first step's line marks the end of start-up (`python -m bench` reads it).
    """

    def __init__(self, log_steps: int, batch_size: int, epochs: int):
        super().__init__()
        self.log_steps = log_steps
        self.batch_size = batch_size
        self.epochs = epochs
        self.steps_seen = 0
        self.steady_seconds = 0.0
        self.steady_steps = 0
        self.all_seconds = 0.0
        self.first_step_seconds = 0.0  # from fit's start to the end of step 1: tracing, compiling

    @property
    def images_per_sec(self) -> float:
        seconds, steps = (
            (self.steady_seconds, self.steady_steps)
            if self.steady_steps
            else (self.all_seconds, self.steps_seen)
        )
        return steps * self.batch_size / seconds if seconds else 0.0

    @property
    def seconds_per_step(self) -> float:
        return self.batch_size / self.images_per_sec if self.images_per_sec else 0.0

    def on_train_begin(self, logs=None):
        self.train_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.epoch_start = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self.step_start = time.perf_counter()
        self.first_batch = batch

    def on_train_batch_end(self, batch, logs=None):
        seconds = time.perf_counter() - self.step_start
        steps = batch - self.first_batch + 1
        if self.steps_seen == 0:
            self.first_step_seconds = time.perf_counter() - self.train_start
            log.info(
                "first training step finished %.2fs after fit started (tracing included)",
                self.first_step_seconds,
            )
        self.steps_seen += steps
        self.all_seconds += seconds
        if self.steps_seen > WARMUP_STEPS:
            self.steady_seconds += seconds
            self.steady_steps += steps
        if (batch + 1) // self.log_steps > self.first_batch // self.log_steps:
            logs = logs or {}
            log.info(
                "epoch: %d step: %d ,loss: %.4f ,accuracy: %.4f ,time: %.4f ,imgs/s: %.1f",
                self.epoch + 1, batch + 1, logs.get("loss", float("nan")),
                logs.get("accuracy", float("nan")), seconds, steps * self.batch_size / seconds,
            )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        figures = " ".join(f"{k}: {v:.4f}" for k, v in logs.items() if k != "learning_rate")
        log.info(
            "epoch %d/%d %s time: %.1fs imgs/s: %.1f",
            epoch + 1, self.epochs, figures, time.perf_counter() - self.epoch_start,
            self.images_per_sec,
        )


class HistoryResume(keras.callbacks.Callback):
    """Goes before CSVLogger: history.csv keeps the rows of the epochs the backup on disk holds
    (the one BackupAndRestore restores), before CSVLogger opens it to append."""

    def __init__(self, backup_dir: Path, history_csv: Path):
        super().__init__()
        self.backup_dir = backup_dir
        self.history_csv = history_csv

    def on_train_begin(self, logs=None):
        epochs_done = backup_epoch(self.backup_dir)
        trim_history(self.history_csv, epochs_done)
        if epochs_done:  # restored by BackupAndRestore, whose on_train_begin comes later
            log.info(
                "resuming after epoch %d: weights, optimiser state and epoch restored from %s, "
                "history.csv kept to its %d epoch(s)", epochs_done, self.backup_dir, epochs_done,
            )


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint that writes `<name>.tmp.h5` and renames it over `<name>.h5`: a kill or a full
    disk during the write leaves the previous checkpoint whole. (".tmp.h5", not ".h5.tmp": Keras
    picks the HDF5 format from the ending.)"""

    def __init__(self, filepath: str, **kwargs):
        self.final_path = Path(filepath)
        super().__init__(str(self.final_path.with_suffix(".tmp.h5")), **kwargs)

    def on_epoch_end(self, epoch, logs=None):
        try:
            super().on_epoch_end(epoch, logs)
        except Exception:  # a full disk, say: the previous checkpoint stays, the partial one goes
            with suppress(OSError):
                Path(self.filepath).unlink()
            raise
        written = Path(self.filepath)
        if written.is_file():  # saved this epoch (a non-chief worker writes elsewhere and deletes)
            os.replace(written, self.final_path)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose patience counts the epochs of the run's earlier attempts.

    Keras keeps the counter in memory, so a resumed run would wait `patience` epochs afresh. Goes
    after HistoryResume: history.csv then holds the epochs the restored backup holds, and replaying
    them rebuilds the counter and the best value; the best epoch's weights are the best checkpoint
    (same monitor, same mode). tf-keras restores them when training ends; Keras 2.6 restores them
    in the epoch that stops, before the backup saves it, so there the backup holds them.
    """

    def __init__(self, run_dir: Path, best_weights_file: Path, **kwargs):
        super().__init__(**kwargs)
        self.run_dir = run_dir
        self.best_weights_file = best_weights_file

    def replay(self, rows: list[dict[str, float]]) -> bool:
        """Start afresh and count `rows` (history.csv's: earlier attempts' epochs) as epochs just
        run, without their weights (gone); True if early stopping fired in them (never at the first
        epoch, which always improves on nothing)."""
        super().on_train_begin()
        restore_best_weights, self.restore_best_weights = self.restore_best_weights, False
        for epoch, row in enumerate(rows):
            self.on_epoch_end(epoch, row)
        self.restore_best_weights = restore_best_weights
        return self.stopped_epoch > 0

    def on_train_begin(self, logs=None):
        self.replay(read_history(self.run_dir))
        if self.restore_best_weights and self.best_weights_file.is_file():
            current = self.model.get_weights()
            self.model.load_weights(self.best_weights_file)
            self.best_weights = self.model.get_weights()
            self.model.set_weights(current)

    def on_train_end(self, logs=None):
        """The best epoch's weights come back when training ran to its last epoch too: tf-keras
        2.21 does so, Keras 2.6 (the Ascend stack) only when it stopped training early, and the
        final evaluation must score the same weights on both stacks."""
        super().on_train_end(logs)
        if self.restore_best_weights and self.best_weights is not None and not self.stopped_epoch:
            self.model.set_weights(self.best_weights)


class TrackEpochs(keras.callbacks.Callback):
    """Hands each finished epoch's metrics to the run's tracker (runner/record/tracking.py) at once, so a
    tracking UI follows the run live."""

    def __init__(self, tracker: NoTracker):
        super().__init__()
        self.tracker = tracker

    def on_epoch_end(self, epoch, logs=None):
        self.tracker.log_epoch(epoch, dict(logs or {}))


class StopOnSignal(keras.callbacks.Callback):
    """Raises RunInterrupted at the first step or epoch end after Ctrl-C/SIGTERM. Goes last, so an
    epoch's backup, checkpoints and history row are all written before it stops."""

    def __init__(self, signals: StopSignals):
        super().__init__()
        self.signals = signals

    def _stop_if_asked(self) -> None:
        if self.signals.requested is not None:
            raise RunInterrupted(self.signals.requested)

    def on_train_batch_end(self, batch, logs=None):
        self._stop_if_asked()

    def on_test_batch_end(self, batch, logs=None):
        self._stop_if_asked()

    def on_epoch_end(self, epoch, logs=None):
        self._stop_if_asked()


class StopOnLossExplosion(keras.callbacks.Callback):
    """Ends fit() once the training loss passes `factor` times its first step's (1 if that is
    lower: a resumed run may start near 0), as TerminateOnNaN does for NaN: a loss of 1e16 from
    model.learning_rate=1e9 is finite, and would otherwise end a run as `finished`. `what` says
    what it stopped on (train() then fails the run as diverged); factor None: off."""

    def __init__(self, factor: float | None):
        super().__init__()
        self.factor = factor
        self.first_loss: float | None = None
        self.what: str | None = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if self.factor is None or loss is None:
            return
        loss = float(loss)
        if self.first_loss is None:
            self.first_loss = loss
            return
        reference = max(self.first_loss, 1.0)
        if loss > self.factor * reference and self.what is None:
            self.what = (f"The training loss reached {loss:.3g}, over divergence_factor={self.factor:g} "
                         f"times its first step's {self.first_loss:.3g}, and training stopped")
            self.model.stop_training = True
