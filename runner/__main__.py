"""`python -m runner [overrides]`: a thin Hydra shell around runner.train.train.

`python -m runner resume=<run dir>` continues a stopped run with the overrides it was started
with (runner/resume.py). How a run ends decides the exit status:

- single run: 0 finished; 2 bad config (one paragraph, no traceback); 1 failed (NaN loss, out of
  memory, a bug); 130/143 stopped by Ctrl-C/SIGTERM (resumable).
- multirun (-m): a failed job is recorded in its folder (status.json) and the sweep goes on; at the
  end runner.summarize.SweepSummary writes the summary and exits 1 if any job failed. Ctrl-C or
  SIGTERM stops the whole sweep (130/143); the same command with hydra.sweep.dir=<that folder>
  skips finished jobs and resumes the others.
"""
from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import runner.schema  # noqa: F401  (registers the config schemas)
from runner.errors import ConfigError, RunInterrupted
from runner.resume import expand_resume_argument

log = logging.getLogger("runner")

# What a failed sweep job returns: the basic sweeper goes on (an exception would end the sweep
# without a summary), and Optuna records a failed trial ("must be float-castable"; a NaN would
# crash hydra-optuna-sweeper 1.3.0: it tells Optuna the NaN again with the FAIL state).
FAILED_JOB_RESULT = None


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from runner.train import train

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        metrics = train(cfg)
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
    return metrics[str(cfg.optimized_metric)]


def _run() -> None:
    try:
        sys.argv[1:] = expand_resume_argument(sys.argv[1:])
    except ConfigError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    _run()
