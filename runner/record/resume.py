"""Resuming a stopped run: graceful Ctrl-C/SIGTERM, the `resume=<run dir>` shortcut, and keeping
history.csv and the config consistent with the Keras backup. TensorFlow is imported only to read
a backup's epoch.

Keras' BackupAndRestore (checkpoints/backup) saves weights, optimiser state (so the optimiser's
step count and with it the learning-rate schedule) and the epoch counter after every epoch, as a
TensorFlow checkpoint in backup/chief/ (the same format on both stacks); the next fit() in the
same run directory restores them. This module handles the rest.
"""
from __future__ import annotations

import csv
import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType

from omegaconf import OmegaConf

from runner.errors import ConfigError, RunInterrupted
from runner.record.run_folder import INTERRUPTED, OVERRIDES_FILE, RESUME_PREFIX, read_status, resume_command

log = logging.getLogger(__name__)



class StopSignals:
    """While active, the first SIGINT or SIGTERM asks training to stop after the current step
    (a callback polls `requested`), so the backup and history.csv are never cut mid-write;
    a second one stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        # Handlers can only be installed from the main thread (not so in some launchers' workers).
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signal_number: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            raise RunInterrupted(signal_number)
        self.requested = signal_number
        log.warning(
            "%s received: stopping after the current step (send it again to stop at once)",
            signal.Signals(signal_number).name,
        )


def trim_history(history_csv: Path, epochs: int) -> None:
    """Keep only history.csv's rows for the first `epochs` epochs: those the backup holds.

    A resumed fit appends from there, so an epoch that ran again (its backup was older than its
    row, or a fresh start after a failure) is not listed twice.
    """
    if not history_csv.is_file():
        return
    with open(history_csv, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        kept = [row for row in reader if None not in row.values() and int(row["epoch"]) < epochs]
    if not kept:
        history_csv.unlink()
        return
    tmp = history_csv.with_name(history_csv.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    os.replace(tmp, history_csv)


def _quoted_override_value(text: str) -> str:
    """A value Hydra's override parser takes as one string: a sweep job's folder name holds
    '=' and ',' (batch_size=32,epochs=5), which would otherwise read as a sweep."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def expand_resume_argument(argv: list[str]) -> list[str]:
    """`resume=<run dir>` -> the run's own overrides (.hydra/overrides.yaml) + hydra.run.dir=<run dir>.

    Done on the command line before Hydra parses it, so Hydra composes exactly the run's config
    and records the real overrides again.
    """
    resume_args = [arg for arg in argv if arg.startswith(RESUME_PREFIX)]
    if not resume_args:
        return argv
    if len(resume_args) > 1 or {"-m", "--multirun"} & set(argv):
        raise ConfigError(
            "resume=<run dir> takes one run folder and no -m: to resume a sweep, run the same "
            "sweep command again with hydra.sweep.dir=<its folder>."
        )
    given = resume_args[0][len(RESUME_PREFIX):]
    run_dir = Path(given).expanduser().resolve()
    overrides_file = run_dir / OVERRIDES_FILE
    if not overrides_file.is_file():
        raise ConfigError(
            f"resume={given}: {overrides_file} does not exist, "
            "so this is not a run folder written by `python -m runner`. Pass the folder that holds "
            "train.log and .hydra/."
        )
    saved = [str(item) for item in OmegaConf.load(overrides_file)]
    others = [arg for arg in argv if arg not in resume_args]
    return [*saved, *others, f"hydra.run.dir={_quoted_override_value(str(run_dir))}"]


def interrupted_twins(run_dir: Path, overrides: list[str]) -> list[Path]:
    """Interrupted runs of the same overrides in the outputs/ tree a new single run starts in
    (outputs/<date>/<time>/): starting again makes a new folder, and the user may have meant to
    resume one of those. Newest first."""
    root = run_dir.resolve().parents[1]
    if root.name != "outputs":  # a hydra.run.dir of the user's own: no tree to look through
        return []
    twins = [file.parent.parent for file in root.glob(f"*/*/{OVERRIDES_FILE}")]  # the run folders
    return sorted(
        (folder for folder in twins if folder != run_dir.resolve()
         and (read_status(folder) or {}).get("status") == INTERRUPTED
         and sorted(str(item) for item in OmegaConf.load(folder / OVERRIDES_FILE)) == sorted(overrides)),
        key=lambda folder: folder.stat().st_mtime, reverse=True,
    )


def say_if_resumable_elsewhere(run_dir: Path, overrides: list[str]) -> None:
    twins = interrupted_twins(run_dir, overrides)
    if twins:
        log.warning("an interrupted run with these overrides is in %s: this starts a new one in %s. "
                    "To go on with that one instead: %s", twins[0], run_dir, resume_command(twins[0]))
