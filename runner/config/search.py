"""Continuing a stored Optuna search (conf/hparams_search/optuna.yaml keeps the study in
<sweep dir>/optuna.db): the same command with the same hydra.sweep.dir loads the study, and this
Hydra callback prepares it before hydra-optuna-sweeper asks for new trials.

- A trial left RUNNING by a stopped command is marked FAIL and its parameters are queued again,
  so the next trial is that same job: its folder resumes from its backup (runner/record/resume.py).
- The sampler's seed is `seed` plus the number of trials already stored: a re-seeded sampler
  would otherwise propose the first command's points again (the sampler's random state is not
  stored with the study).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

log = logging.getLogger(__name__)

SQLITE_PREFIX = "sqlite:///"


def _stored_study(storage: str | None, study_name: str) -> Any:
    """The stored study, or None: no storage, a SQLite file not written yet, or no such study."""
    if not storage:
        return None
    if storage.startswith(SQLITE_PREFIX) and not Path(storage[len(SQLITE_PREFIX):]).is_file():
        return None  # not written yet (loading would create it)
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # Optuna's answer for a study that is not in the storage
        return None


def requeue_stopped_trials(study: Any) -> int:
    """Mark the trials a stopped command left RUNNING as failed and queue their parameters."""
    from optuna.trial import TrialState

    stopped = [trial for trial in study.trials if trial.state == TrialState.RUNNING]
    for trial in stopped:
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params)
        log.info("trial %d was stopped: its parameters %s run again first", trial.number, trial.params)
    return len(stopped)


class ContinueStudy(Callback):
    """Prepares a stored study before the sweeper continues it (see the module's docstring)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = config.hydra.sweeper
        study = _stored_study(sweeper.get("storage"), sweeper.get("study_name"))
        if study is None:
            return
        requeue_stopped_trials(study)
        stored = len(study.trials)
        with read_write(sweeper.sampler):  # Hydra's config is read-only; the sampler is built next
            sweeper.sampler.seed = int(sweeper.sampler.seed) + stored
        log.info("continuing study %r (%d trial(s) stored) with %d new trial(s); sampler seed %d",
                 study.study_name, stored, sweeper.n_trials, sweeper.sampler.seed)
