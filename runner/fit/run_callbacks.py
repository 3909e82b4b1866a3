"""The callbacks of a run's fit(), in the order they must run, and how many epochs fit() gets.

The order is what makes a run resumable anywhere: history.csv is trimmed to the backup before
CSVLogger opens it, checkpoints and the history row are written before the backup, and the
signal check comes last (see `run_callbacks`).
"""
from __future__ import annotations

from typing import Any

from runner.device.workers import current_worker
from runner.fit.callbacks import (
    AtomicModelCheckpoint,
    HistoryResume,
    ResumableEarlyStopping,
    StepLogger,
    StopOnSignal,
    TrackEpochs,
)
from runner.keras2 import backup_and_restore, best_checkpoint, keras
from runner.record.resume import StopSignals
from runner.record.run_folder import RunFolder, read_history
from runner.record.tracking import NoTracker


def early_stopping(patience: int | None, folder: RunFolder) -> ResumableEarlyStopping | None:
    """Early stopping on val_accuracy that restores the best epoch's weights; None when off
    (model.early_stopping_patience 0 or null)."""
    if not patience:
        return None
    return ResumableEarlyStopping(
        folder.path, folder.best_weights, monitor="val_accuracy", mode="max",
        patience=patience, restore_best_weights=True,
    )


def epochs_to_run(epochs: int, folder: RunFolder, model: keras.Model,
                  stopping: ResumableEarlyStopping | None) -> int:
    """The run's epochs, except for a run whose early stopping fired before it was killed (during
    the final evaluation): the epochs its backup holds. Keras 2's fit() looks at stop_training only
    after a step, so it would train a step of one more epoch, validate and record it. With no
    epoch left, fit() still restores the backup and the best epoch's weights."""
    epochs_done = folder.backup_epochs()
    if not epochs_done or stopping is None:
        return epochs
    stopping.set_model(model)
    stopped = stopping.replay(read_history(folder.path)[:epochs_done])
    return epochs_done if stopped else epochs


def run_callbacks(logger_cfg: Any, device_cfg: Any, folder: RunFolder, step_logger: StepLogger,
                  signals: StopSignals, tracker: NoTracker,
                  stopping: ResumableEarlyStopping | None) -> list:
    """logger_cfg: TensorBoard's scalars when logger.tensorboard; device_cfg: which process writes
    the checkpoints."""
    callbacks = [
        HistoryResume(folder.backup, folder.history),  # before CSVLogger opens it
        keras.callbacks.TerminateOnNaN(),
        best_checkpoint(
            str(folder.best_weights), monitor="val_accuracy", mode="max",
            best_so_far=folder.best_val_accuracy_so_far(), checkpoint_class=AtomicModelCheckpoint,
        ),
        AtomicModelCheckpoint(str(folder.last_weights), save_weights_only=True),
        keras.callbacks.CSVLogger(str(folder.history), append=True),
        # profile_batch=0: Keras 2.6 profiles the second batch by default (tf-keras does not);
        # debug=profiling is the runner's way to profile.
        *([keras.callbacks.TensorBoard(str(folder.tensorboard), profile_batch=0)]
          if logger_cfg.tensorboard else []),
        step_logger,
        TrackEpochs(tracker),
    ]
    if not current_worker(device_cfg).is_chief and not device_cfg.multi_worker:
        # Only rank 0 writes checkpoints; every rank keeps its own backup so that each can resume.
        # (Under TensorFlow's multi-worker strategy every worker must save, since saving runs
        # collectives; Keras writes a non-chief's copy to a temporary folder and deletes it.)
        callbacks = [c for c in callbacks if not isinstance(c, keras.callbacks.ModelCheckpoint)]
    if stopping is not None:
        callbacks.append(stopping)
    # The backup last: an epoch is done once it is backed up, after its history row and checkpoints
    # were written. A kill before that runs the epoch again (history.csv is trimmed to the backup),
    # so no epoch is lost or listed twice. Its on_train_begin, restoring the backup, still runs
    # before the first step. StopOnSignal after it: stops once the epoch is recorded.
    return [*callbacks, backup_and_restore(str(folder.backup)), StopOnSignal(signals)]
