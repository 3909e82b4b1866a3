"""Where a run is reported besides its folder: MLflow (`logger=mlflow`) and TensorBoard's HParams
tab (`logger=tensorboard`, the default).

The run folder stays the source of truth. A tracking store that cannot be reached when a run
starts stops it before training (a ConfigError naming the URI); one that fails later is warned
about once, and the run goes on without it. MLflow is imported only when `logger=mlflow` is
chosen: it is an optional requirement (requirements-mlflow.txt), and `--help`, `--cfg job` and
config errors stay fast. The MLflow run's id is kept in the run folder (mlflow_run.json), so a
resumed run continues its own MLflow run; a sweep's parent run is kept in the sweep folder.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runner.errors import ConfigError
from runner.record.environment import git_commit
from runner.record.run_folder import (
    BEST_WEIGHTS,
    CHECKPOINTS,
    ENV_FILE,
    HISTORY_FILE,
    HYDRA_DIR,
    LABELS_FILE,
    LAST_WEIGHTS,
    LOG_FILE,
    METRICS_FILE,
    OVERRIDES_FILE,
    STATUS_FILE,
    TENSORBOARD_DIR,
    flat_config,
    read_metrics,
    write_json_atomic,
)

log = logging.getLogger(__name__)

PIP_COMMAND = "pip install -r requirements-mlflow.txt"
RUN_FILE = "mlflow_run.json"  # in a run folder (its MLflow run) or a sweep folder (the parent)
PARENT_RUN_ENV = "RUNNER_MLFLOW_PARENT_RUN_ID"  # set by MlflowSweep for the sweep's jobs
# Small files of a run folder logged as artifacts (paths relative to it); .hydra/ goes whole.
ARTIFACTS = (METRICS_FILE, HISTORY_FILE, ENV_FILE, STATUS_FILE, LOG_FILE, f"{CHECKPOINTS}/{LABELS_FILE}")
WEIGHTS = (f"{CHECKPOINTS}/{BEST_WEIGHTS}", f"{CHECKPOINTS}/{LAST_WEIGHTS}")
# The hyperparameters every run shows in TensorBoard's HParams tab, besides its overrides.
HPARAM_KEYS = ("model", "dataset", "batch_size", "epochs", "model.learning_rate", "precision")
HPARAM_METRICS = ("val_accuracy", "val_loss", "train_accuracy", "train_loss", "images_per_sec",
                  "wall_seconds")
MAX_PARAMS_PER_BATCH = 100  # MLflow's limit for one log_batch call
MAX_PARAM_LENGTH = 500  # the smallest value limit among the MLflow versions the stacks install


def read_overrides(run_dir: Path) -> list[str]:
    """The command line's overrides Hydra recorded for a run (none for a run a test started)."""
    path = run_dir / OVERRIDES_FILE
    return [str(item) for item in OmegaConf.load(path)] if path.is_file() else []


# --- TensorBoard HParams -------------------------------------------------------------------

def hparams(cfg: DictConfig, overrides: list[str]) -> dict[str, bool | int | float | str]:
    """The run's hyperparameters: the keys of HPARAM_KEYS and every key an override set, with
    the composed value (a group choice such as `model=bit` keeps the option's name)."""
    values: dict[str, bool | int | float | str] = {}
    for override in [*HPARAM_KEYS, *overrides]:
        key, _, text = override.lstrip("+~").partition("=")
        value = OmegaConf.select(cfg, key, default=text)
        if isinstance(value, DictConfig):  # a group: its name, not its contents
            value = text or value.get("name", value.get("mode", ""))
        values[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return values


def write_hparams(cfg: DictConfig, run_dir: Path, metrics: dict[str, Any]) -> None:
    """One HParams session per run in tensorboard/, beside Keras' train/ and validation/
    scalars: `tensorboard --logdir <sweep folder>` lists the sweep's runs as a table."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    writer = tf.summary.create_file_writer(str(run_dir / TENSORBOARD_DIR))
    with writer.as_default():
        hp.hparams(hparams(cfg, read_overrides(run_dir)), trial_id=run_dir.name)
        for name in HPARAM_METRICS:
            tf.summary.scalar(name, metrics[name], step=metrics["epochs_completed"])
    writer.close()


# --- MLflow ----------------------------------------------------------------------------------

class NoTracker:
    """What train() calls when no tracker is chosen: nothing happens."""

    def log_epoch(self, epoch: int, logs: dict[str, Any]) -> None:
        pass

    def finish(self, run_dir: Path) -> None:
        pass

    def end(self, status: str, reason: str = "") -> None:
        pass


def import_mlflow() -> Any:
    try:
        import mlflow
    except ImportError as error:
        raise ConfigError(
            f"logger=mlflow needs MLflow, which is not installed here ({error}). Install it with "
            f"`{PIP_COMMAND}`, or choose logger=tensorboard."
        ) from None
    return mlflow


def tracking_uri(uri: str) -> str:
    """A relative SQLite path is taken from the working directory, as outputs/ is, and made
    absolute (jobs of some launchers start elsewhere); its folder is created."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return uri
    path = Path(uri[len(prefix):]).expanduser().absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"logger.mlflow.tracking_uri={uri}: cannot create the folder of its SQLite file "
            f"({error}). Point it at a writable place, e.g. sqlite:///outputs/mlflow.db."
        ) from None
    return prefix + str(path)


@contextmanager
def _root_logging_kept() -> Iterator[None]:
    """MLflow 2 (the Ascend stack's) migrates a new SQLite store through alembic's fileConfig,
    which replaces the root logger's handlers (train.log's, Hydra's console) and level: restore
    them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def connect(uri: str) -> Any:
    """An MlflowClient that has answered once; else the one-paragraph error naming the URI."""
    mlflow = import_mlflow()
    # A server that does not answer must not hold a run for minutes of retries (MLflow's default).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    try:
        with _root_logging_kept():
            client = mlflow.tracking.MlflowClient(tracking_uri=tracking_uri(uri))
            client.search_experiments(max_results=1)  # creates a new SQLite store's tables
    except ConfigError:
        raise
    except Exception as error:
        raise ConfigError(
            f"The MLflow tracking store logger.mlflow.tracking_uri={uri} cannot be reached "
            f"({type(error).__name__}: {error}). Nothing was trained. Start that server, fix the "
            "URI (e.g. sqlite:///outputs/mlflow.db, a local file), or run without MLflow "
            "(logger=tensorboard)."
        ) from None
    return client


def _experiment_id(client: Any, name: str, uri: str) -> str:
    """The experiment's id, created on first use; a local SQLite store keeps its artifacts in
    mlartifacts/ beside the database (MLflow's default would be ./mlruns of the working folder)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


def _saved_run_id(client: Any, folder: Path, uri: str) -> str | None:
    """The MLflow run this folder started earlier in the same store, if it is still there."""
    path = folder / RUN_FILE
    saved = json.loads(path.read_text()) if path.is_file() else {}
    if saved.get("tracking_uri") != uri:
        return None
    try:
        run = client.get_run(saved["run_id"])
    except Exception:  # deleted from the store since
        return None
    return run.info.run_id if run.info.lifecycle_stage == "active" else None


def _params(cfg: DictConfig) -> list[tuple[str, str]]:
    return [(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in flat_config(cfg).items()]


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def open_run(client: Any, uri: str, folder: Path, experiment: str, tags: dict[str, str],
             params: list[tuple[str, str]]) -> str:
    """The folder's MLflow run: its earlier one, set running again, or a new one with these tags
    and params (params are logged once: MLflow refuses to change them)."""
    from mlflow.entities import Param

    run_id = _saved_run_id(client, folder, uri)
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
        log.info("MLflow: continuing run %s in %s", run_id, uri)
        return run_id
    run = client.create_run(_experiment_id(client, experiment, uri), tags=tags, run_name=folder.name)
    run_id = run.info.run_id
    for chunk in _chunks(params, MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=[Param(key, value) for key, value in chunk])
    write_json_atomic(folder / RUN_FILE, {"tracking_uri": uri, "run_id": run_id,
                                          "experiment_id": run.info.experiment_id})
    log.info("MLflow: run %s in %s (experiment %s)", run_id, uri, experiment)
    return run_id


def _tags(cfg: DictConfig, run_dir: Path) -> dict[str, str]:
    commit = git_commit() or ""
    tags = {
        "model": str(cfg.model.name), "dataset": str(cfg.dataset.name),
        "device": str(cfg.device.type), "precision": str(cfg.precision.mode),
        "overrides": " ".join(read_overrides(run_dir)), "git_commit": commit,
        "mlflow.source.git.commit": commit, "run_dir": str(run_dir.absolute()),
    }
    parent = os.environ.get(PARENT_RUN_ENV)
    return {**tags, "mlflow.parentRunId": parent} if parent else tags


class MlflowTracker(NoTracker):
    """One run's MLflow run. Every call after start-up is guarded: the first failure is warned
    about, later calls are skipped, and training and the run folder go on."""

    def __init__(self, client: Any, uri: str, run_id: str, log_weights: bool):
        self.client, self.uri, self.run_id, self.log_weights = client, uri, run_id, log_weights
        self.broken = False

    def _guarded(self, what: str, call: Any, *args: Any, **kwargs: Any) -> None:
        if self.broken:
            return
        try:
            call(*args, **kwargs)
        except Exception as error:
            self.broken = True
            log.warning(
                "MLflow (%s) failed while logging %s: %s: %s. Training goes on and the run "
                "folder keeps every result; this run logs nothing more to MLflow.",
                self.uri, what, type(error).__name__, error,
            )

    def log_epoch(self, epoch: int, logs: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(key, float(value), _now_ms(), epoch) for key, value in logs.items()
                   if hasattr(value, "__float__")]  # Python and NumPy numbers
        self._guarded(f"epoch {epoch}", self.client.log_batch, self.run_id, metrics=metrics)

    def finish(self, run_dir: Path) -> None:
        """metrics.json's numbers as final/<name>, the run folder's small files, FINISHED."""
        from mlflow.entities import Metric

        metrics = read_metrics(run_dir) or {}
        numbers = [Metric(f"final/{key}", float(value), _now_ms(), 0) for key, value in metrics.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool)]
        self._guarded(METRICS_FILE, self.client.log_batch, self.run_id, metrics=numbers)
        self._guarded(f"{HYDRA_DIR}/", self.client.log_artifacts, self.run_id, str(run_dir / HYDRA_DIR),
                      str(HYDRA_DIR))
        files = [*ARTIFACTS, *(WEIGHTS if self.log_weights else ())]
        for name in files:
            if (run_dir / name).is_file():
                folder = str(Path(name).parent) if "/" in name else None
                self._guarded(name, self.client.log_artifact, self.run_id, str(run_dir / name), folder)
        self.end("FINISHED")

    def end(self, status: str, reason: str = "") -> None:
        if reason:
            self._guarded("the failure", self.client.set_tag, self.run_id, "failure", reason[:5000])
        self._guarded(f"the end ({status})", self.client.set_terminated, self.run_id, status)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def start_tracking(cfg: DictConfig, run_dir: Path) -> NoTracker:
    """The run's tracker, its MLflow run open (or continued); raises ConfigError if the store
    cannot be reached, before anything is trained."""
    settings = cfg.logger.get("mlflow")
    if settings is None:
        return NoTracker()
    client = connect(settings.tracking_uri)
    uri = tracking_uri(settings.tracking_uri)
    try:
        run_id = open_run(client, uri, run_dir, settings.experiment_name, _tags(cfg, run_dir),
                          _params(cfg))
    except Exception as error:
        raise ConfigError(
            f"The MLflow tracking store {uri} answered but refused to start this run "
            f"({type(error).__name__}: {error}). Nothing was trained. Fix the store or run "
            "without MLflow (logger=tensorboard)."
        ) from None
    return MlflowTracker(client, uri, run_id, settings.log_weights)


class MlflowSweep(Callback):
    """With logger=mlflow, a sweep is one MLflow run (kept in <sweep dir>/mlflow_run.json, so a
    re-run sweep continues it) and each job a child run of it (the id reaches the jobs through
    the environment, which every launcher passes on)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        settings = config.get("logger", {}).get("mlflow")
        if settings is None:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        try:
            client = connect(settings.tracking_uri)
            uri = tracking_uri(settings.tracking_uri)
            tags = {"overrides": " ".join(config.hydra.overrides.task), "sweep_dir": str(sweep_dir),
                    "git_commit": git_commit() or ""}
            os.environ[PARENT_RUN_ENV] = open_run(client, uri, sweep_dir, settings.experiment_name,
                                                  tags, [])
        except ConfigError as error:  # each job will stop with the same message
            log.error("%s", error)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from runner.record.sweep_summary import find_jobs, read_job

        run_id = os.environ.pop(PARENT_RUN_ENV, None)
        settings = config.get("logger", {}).get("mlflow")
        if run_id is None or settings is None:
            return
        jobs = [read_job(job) for job in find_jobs(Path(config.hydra.sweep.dir))]
        status = "FINISHED" if all(job.finished for job in jobs) else "FAILED"
        try:
            client = connect(settings.tracking_uri)
        except ConfigError as error:
            log.warning("the sweep's MLflow run %s is not ended: %s", run_id, error)
            return
        MlflowTracker(client, tracking_uri(settings.tracking_uri), run_id, False).end(status)
