"""`python -m runner [overrides]`: a thin Hydra shell around runner.train.train.

`python -m runner resume=<run dir>` continues a stopped run with the overrides it was started
with (runner/record/resume.py). How a run ends decides the exit status:

- single run: 0 finished; 2 bad config, an output folder that cannot be written, or a run folder
  another process holds (one paragraph, no traceback); 1 failed (NaN loss, out of memory, a bug);
  130/143 stopped by Ctrl-C/SIGTERM (resumable).
- multirun (-m): a failed job is recorded in its folder (status.json) and the sweep goes on; a job
  whose folder another process holds is skipped, writing nothing; at the end
  runner.record.sweep_summary.SweepSummary writes the summary and exits 1 if any job did not
  finish. Ctrl-C or SIGTERM stops the whole sweep (130/143); the same command with
  hydra.sweep.dir=<that folder> skips finished jobs and resumes the others.
"""
from __future__ import annotations

import atexit
import difflib
import logging
import math
import os
import re
import sys
import threading
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

import runner.config.schema  # noqa: F401  (registers the config schemas)
from runner.config.ray_launcher import check_ray_launcher
from runner.errors import ConfigError, RunInterrupted
from runner.record.lock import RunFolderBusy
from runner.record.resume import expand_resume_argument, say_if_resumable_elsewhere

log = logging.getLogger("runner")

# What a failed sweep job returns: the basic sweeper goes on (an exception would end the sweep
# without a summary), and Optuna records a failed trial ("must be float-castable"; a NaN would
# crash hydra-optuna-sweeper 1.3.0: it tells Optuna the NaN again with the FAIL state).
FAILED_JOB_RESULT = None


# An absolute path: the `runner` command (`pip install -e .`) runs from any folder.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from runner.train import train

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    if not multirun:
        _refuse_mistakes_before_the_folder(cfg)
        if not any(Path(cfg.output_dir).iterdir()):  # a new folder, not a resumed one
            say_if_resumable_elsewhere(Path(cfg.output_dir), list(HydraConfig.get().overrides.task))
    try:
        metrics = train(cfg, HydraConfig.get())
    except RunFolderBusy as busy:  # nothing was written: the folder is another process's
        log.error("%s%s", "job skipped: " if multirun else "", busy)
        if multirun:
            return FAILED_JOB_RESULT
        sys.exit(2)
    except KeyboardInterrupt as stop:  # RunInterrupted, or Ctrl-C outside training
        if multirun:
            log.warning(
                "sweep stopped; to go on, run the same command again with hydra.sweep.dir=%s",
                HydraConfig.get().sweep.dir,
            )
        sys.exit(stop.exit_code if isinstance(stop, RunInterrupted) else 130)
    except Exception as error:  # train() has logged it and written status.json
        if multirun:
            return FAILED_JOB_RESULT
        sys.exit(2 if isinstance(error, ConfigError) else 1)
    return sweeper_score(metrics, str(cfg.optimized_metric))


def _refuse_mistakes_before_the_folder(cfg: DictConfig) -> None:
    """A single run's config mistake leaves no folder behind: Hydra has just made an empty one,
    which goes again (a sweep's failed job keeps its folder: the summary says why it failed)."""
    from runner.preflight import check_config

    try:
        check_config(cfg, HydraConfig.get().overrides.task)
    except ConfigError as mistake:
        log.error("%s", mistake)
        _remove_if_empty(Path(cfg.output_dir))
        sys.exit(2)


def _remove_if_empty(run_dir: Path) -> None:
    """Never a folder with files (a resumed run's, another run's)."""
    try:
        run_dir.rmdir()
    except OSError:  # not empty, or already gone
        pass


def sweeper_score(metrics: dict[str, float], metric: str) -> float | None:
    """What a job returns to the sweeper: its optimized metric, or, when that is not a number
    (a validation loss of inf/NaN), a failed job's result: a sweeper cannot rank NaN."""
    value = metrics[metric]
    return value if math.isfinite(value) else FAILED_JOB_RESULT


# Hydra's own config errors: an unknown group option or key, a wrong type, a bad enum value, an
# override it cannot parse. (Not InstantiationException: a broken callback is a bug, not input.)
HYDRA_CONFIG_ERRORS = (ConfigCompositionException, OverrideParseException, OmegaConfBaseException)


def hydra_error_message(error: Exception) -> str:
    """Hydra's message and the first line of the OmegaConf error under it (the part naming the
    type or the allowed values), in one paragraph, without Hydra's search path and OmegaConf's
    key metadata; ConfigError folds the option lists Hydra prints one per line."""
    from runner.config.keys import did_you_mean

    message = str(error).split("Config search path:")[0]
    cause = error.__cause__
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.parent_node is not None:
        # Not Hydra's advice to append the key with +: the runner would never read it.
        message = message.split("To append to your config")[0]
        key = cause.full_key
        message += f"{key} is not a key of the config.{did_you_mean(key, cause.parent_node)}"
    elif isinstance(cause, OmegaConfBaseException) and str(cause) not in message:
        message += " " + str(cause).strip().splitlines()[0]
    message += _group_options(message)
    return str(ConfigError(
        f"{message} (python -m runner --help lists the groups and their options; "
        "python -m runner --cfg job [overrides] prints the config with its keys.)"
    ))


def _group_options(message: str) -> str:
    """A missing option inside a list (`debug=[dump,nonexistent]`) gets only "Could not load
    'debug/nonexistent'" from Hydra, without the options it lists for a single choice."""
    missing = re.search(r"Could not load '([\w/]+)/([^'/]+)'", message)
    group_dir = Path(CONF_DIR) / missing.group(1) if missing else None
    if group_dir is None or not group_dir.is_dir() or "Available options" in message:
        return ""
    options = sorted(p.stem for p in group_dir.glob("*.yaml"))
    name = missing.group(2)
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.7)
    return (f" {missing.group(1)} has no option {name!r}; its options: {', '.join(options)}."
            + (f" Did you mean {close[0]}?" if close else ""))


def prefer_legacy_keras() -> None:
    """Before TensorFlow's import (the run's, later): TF 2.21's `import tensorflow` loads Keras 3
    eagerly unless told that its Keras is the legacy Keras 2 (the runner's, runner/keras2.py), and
    Keras 3 imports matplotlib.pyplot (and on a first run builds its font cache): seconds of
    start-up for a run that draws nothing. Called by the command, not at import: a process that
    only imports this module keeps its environment. TensorFlow 2.6 ignores it; a user's value wins."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def run() -> NoReturn:
    """`python -m runner` and the `runner` command (`pip install -e .`)."""
    try:
        _run()
    except SystemExit as stop:
        exit_without_teardown(stop.code)
    exit_without_teardown(0)


def exit_without_teardown(code: int | str | None) -> NoReturn:
    """Exit as Python would (threading's exit hooks, non-daemon threads joined, exit handlers
    run: logging, TensorFlow's, MLflow's; streams flushed; a str code printed, status 1), less
    the interpreter's teardown of every object left. That teardown frees TensorFlow's traced
    graphs one by one: about 2 s after a quickstart on an idle 2-core machine and 17 s under load
    (docs/performance.md), after the results are written. An exception this does not catch (a
    bug) exits the usual way."""
    # What Python's own exit runs, in its order (both private, both in CPython 3.7-3.13): the
    # threading exit hooks (loky's, which stop joblib's worker manager), then joining non-daemon
    # threads, then atexit's handlers.
    threading._shutdown()
    atexit._run_exitfuncs()
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def _run() -> None:
    prefer_legacy_keras()
    try:
        sys.argv[1:] = expand_resume_argument(sys.argv[1:])
        check_ray_launcher(sys.argv[1:])
    except ConfigError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(2)
    if os.environ.get("HYDRA_FULL_ERROR") == "1":  # the user asked for Hydra's own traceback
        main()
        return
    # Without it, Hydra prints a config error and exits 1, the code of a failed run; with it, the
    # error reaches us and exits 2 like every other config mistake. Only Hydra's error report reads
    # the variable (launchers' jobs and the sweep summary do not), so the jobs it reaches are unchanged.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except HYDRA_CONFIG_ERRORS as error:
        print(f"Error: {hydra_error_message(error)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
