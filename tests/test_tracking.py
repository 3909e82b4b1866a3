"""Tracking: MLflow (a real SQLite store in a temporary folder, read back through MLflow's own
client), TensorBoard's HParams (read from the event files) and a stored Optuna search stopped and
continued (read through Optuna's storage API). Two sets of runs are shared by the tests: single
runs started in this process, and one search, stopped by SIGTERM in its second trial and run
again. Every run is the toy BiT run of tests/conftest.py."""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient  # requirements-dev.txt installs it: CI tests it on both stacks
from omegaconf import OmegaConf

from runner.errors import ConfigError, RunFailed
from runner.record.tracking import PIP_COMMAND, RUN_FILE, start_tracking
from runner.train import train
from tests.conftest import compose_config, runner_env

pytestmark = pytest.mark.ascend_stack

BOTH_LOGGERS = "logger=[tensorboard,mlflow]"


def sqlite_uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def run_id_of(folder: Path) -> str:
    return json.loads((folder / RUN_FILE).read_text())["run_id"]


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(metric.step for metric in client.get_metric_history(run_id, key))


# --- single runs, in this process ------------------------------------------------------------

@pytest.fixture(scope="module")
def single_runs(tmp_path_factory, toy_bit_run):
    """A finished run, the same folder started again, and a run whose loss diverges."""
    root = tmp_path_factory.mktemp("tracking")
    uri = sqlite_uri(root)
    logged = [*toy_bit_run, BOTH_LOGGERS, f"logger.mlflow.tracking_uri={uri}"]
    finished = root / "finished"
    metrics = train(compose_config(logged, finished))
    again = train(compose_config(logged, finished))
    failed = root / "failed"
    with pytest.raises(RunFailed):
        train(compose_config([*logged, "model.learning_rate=1e40"], failed))
    return {"uri": uri, "finished": finished, "metrics": metrics, "again": again, "failed": failed,
            "client": MlflowClient(tracking_uri=uri)}


def test_a_run_is_one_mlflow_run_with_params_tags_and_metrics_per_epoch(single_runs):
    client, folder = single_runs["client"], single_runs["finished"]
    run = client.get_run(run_id_of(folder))
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.name"] == "bit" and params["batch_size"] == "16"
    composed = OmegaConf.load(folder / ".hydra/config.yaml")
    assert params["model.learning_rate"] == str(composed.model.learning_rate)
    tags = run.data.tags
    assert (tags["model"], tags["dataset"], tags["device"], tags["precision"]) == (
        "bit", "digits", "cpu", "force_fp32")
    assert "git_commit" in tags and tags["run_dir"] == str(folder)
    # Per epoch as they happen (step = the epoch index, as in history.csv), then metrics.json.
    assert steps(client, run.info.run_id, "val_accuracy") == [0, 1]
    assert steps(client, run.info.run_id, "loss") == [0, 1]
    metrics = single_runs["metrics"]
    assert run.data.metrics["final/val_accuracy"] == pytest.approx(metrics["val_accuracy"])
    assert run.data.metrics["final/epochs_completed"] == 2
    # Opening a new store (MLflow 2 migrates it through alembic's logging setup) keeps train.log.
    assert "finished: val_accuracy" in (folder / "train.log").read_text()


def test_the_run_folders_small_files_are_its_artifacts_and_weights_are_not(single_runs):
    client, folder = single_runs["client"], single_runs["finished"]
    run_id = run_id_of(folder)
    top = {item.path for item in client.list_artifacts(run_id)}
    assert {".hydra", "metrics.json", "history.csv", "env.json", "status.json", "train.log",
            "checkpoints"} <= top
    assert [item.path for item in client.list_artifacts(run_id, "checkpoints")] == ["checkpoints/labels.txt"]
    local = Path(client.download_artifacts(run_id, "metrics.json", str(folder.parent)))
    assert json.loads(local.read_text()) == single_runs["metrics"]


def test_a_finished_run_started_again_logs_nothing_twice(single_runs):
    client, folder = single_runs["client"], single_runs["finished"]
    assert single_runs["again"] == single_runs["metrics"]
    experiment = client.get_experiment_by_name("runner")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.info.run_name for run in runs) == ["failed", "finished"]
    assert steps(client, run_id_of(folder), "val_accuracy") == [0, 1]


def test_a_failed_run_is_marked_failed_with_its_reason(single_runs):
    run = single_runs["client"].get_run(run_id_of(single_runs["failed"]))
    assert run.info.status == "FAILED"
    assert re.search(r"loss became (nan|inf)", run.data.tags["failure"])


def test_the_default_store_is_a_sqlite_file_with_artifacts_beside_it(single_runs):
    db = Path(single_runs["uri"][len("sqlite:///"):])
    assert db.is_file()
    experiment = single_runs["client"].get_experiment_by_name("runner")
    assert experiment.artifact_location == (db.parent / "mlartifacts").as_uri()
    cfg = compose_config([BOTH_LOGGERS], Path("unused"))
    assert cfg.logger.mlflow.tracking_uri == "sqlite:///outputs/mlflow.db"


def test_hparams_are_in_the_run_tensorboard_events(single_runs):
    session = hparams_session(single_runs["finished"] / "tensorboard")
    assert session["hparams"] == {
        "model": "bit", "dataset": "digits", "batch_size": 16.0, "epochs": 2.0,
        "model.learning_rate": pytest.approx(session["hparams"]["model.learning_rate"]),
        "precision": "force_fp32",
    }
    assert session["metrics"]["val_accuracy"] == pytest.approx(single_runs["metrics"]["val_accuracy"])


def hparams_session(logdir: Path) -> dict:
    """The HParams plugin's session (hyperparameters) and the scalars written beside it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    events = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    values = {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
              for name, value in start.hparams.items()}
    metrics = {tag: float(tensor_util.make_ndarray(events.Tensors(tag)[-1].tensor_proto))
               for tag in events.Tags()["tensors"] if not tag.startswith("_hparams_")}
    return {"hparams": values, "metrics": metrics}


# --- failures of the store ---------------------------------------------------------------

def test_an_unreachable_store_stops_the_run_before_training(tmp_path):
    """Fast: the run stops before any data or model exists, so no epoch is recorded."""
    uri = "http://127.0.0.1:9"  # the discard port: nothing listens
    cfg = compose_config(["logger=mlflow", f"logger.mlflow.tracking_uri={uri}"], tmp_path)
    with pytest.raises(ConfigError, match=rf"logger.mlflow.tracking_uri={uri} cannot be reached") as error:
        train(cfg)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "history.csv").exists() and not (tmp_path / "checkpoints").exists()
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "failed"


def test_a_sqlite_path_that_cannot_be_created_is_named(tmp_path, toy_bit_run):
    (tmp_path / "a_file").write_text("")
    uri = f"sqlite:///{tmp_path}/a_file/mlflow.db"
    overrides = [*toy_bit_run, "logger=mlflow", f"logger.mlflow.tracking_uri={uri}"]
    cfg = compose_config(overrides, tmp_path / "run")
    with pytest.raises(ConfigError, match="cannot create the folder of its SQLite file"):
        start_tracking(cfg, tmp_path / "run")


def test_a_store_failing_mid_run_is_warned_about_once_and_the_run_goes_on(tmp_path, toy_bit_run, caplog):
    """The store refuses the run's writes once it has started (the run was deleted there)."""
    uri = sqlite_uri(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    tracker = start_tracking(compose_config([*toy_bit_run, "logger=mlflow",
                                             f"logger.mlflow.tracking_uri={uri}"], run_dir), run_dir)
    MlflowClient(tracking_uri=uri).delete_run(run_id_of(run_dir))
    tracker.log_epoch(0, {"loss": 1.0})
    tracker.log_epoch(1, {"loss": 0.5})
    tracker.finish(run_dir)
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "MLflow" in r.message]
    assert len(warnings) == 1 and uri.replace("sqlite:///", "") in warnings[0].message
    assert "Training goes on" in warnings[0].message


def test_without_mlflow_installed_logger_mlflow_names_the_pip_command(tmp_path, toy_bit_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` meets when it is absent
    cfg = compose_config([*toy_bit_run, "logger=mlflow"], tmp_path)
    with pytest.raises(ConfigError, match=f"`{PIP_COMMAND}`"):
        start_tracking(cfg, tmp_path)


def test_printing_the_config_imports_neither_mlflow_nor_tensorflow():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "runner", "--cfg", "job", BOTH_LOGGERS,
         "hparams_search=optuna"], capture_output=True, text=True, env=runner_env(), timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines()}
    assert not {"mlflow", "tensorflow", "optuna"} & imported


# --- a search stopped and continued, as a user runs it ------------------------------------

# Epochs enough that SIGTERM, sent after the second trial's first epoch, lands before its last.
SEARCH_EPOCHS = "epochs=6"


def start_search(sweep_dir: Path, uri: str, toy_bit_run: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "-m", *toy_bit_run, "hparams_search=optuna",
         "hydra.sweeper.n_trials=2", "optimized_metric=val_loss", BOTH_LOGGERS, SEARCH_EPOCHS,
         f"logger.mlflow.tracking_uri={uri}", f"hydra.sweep.dir={sweep_dir}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=runner_env(),
    )


def job_folders(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml"))


def second_trial_trained_an_epoch(sweep_dir: Path) -> bool:
    jobs = job_folders(sweep_dir)
    return len(jobs) == 2 and any(
        (job / "history.csv").is_file() and not (job / "metrics.json").exists() for job in jobs)


def wait_for_second_trials_first_epoch(process: subprocess.Popen, sweep_dir: Path) -> None:
    deadline = time.monotonic() + 300
    while not second_trial_trained_an_epoch(sweep_dir):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the second trial did not finish an epoch in time"
        time.sleep(0.2)


def trial_states(storage: str) -> list[str]:
    study = optuna.load_study(study_name="search", storage=storage)
    return [trial.state.name for trial in study.trials]


def mlflow_children(client: MlflowClient, parent_id: str) -> dict[str, str]:
    experiment = client.get_experiment_by_name("runner")
    runs = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    return {run.info.run_name: run.info.status for run in runs}


@pytest.fixture(scope="module")
def search(tmp_path_factory, toy_bit_run):
    root = tmp_path_factory.mktemp("search")
    sweep_dir, uri = root / "sweep", sqlite_uri(root)
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    client = MlflowClient(tracking_uri=uri)
    process = start_search(sweep_dir, uri, toy_bit_run)
    wait_for_second_trials_first_epoch(process, sweep_dir)
    process.send_signal(signal.SIGTERM)
    _, stopped_stderr = process.communicate(timeout=300)
    parent_id = run_id_of(sweep_dir)
    stopped = {"returncode": process.returncode, "stderr": stopped_stderr,
               "trials": trial_states(storage), "children": mlflow_children(client, parent_id),
               "parent": client.get_run(parent_id).info.status}
    process = start_search(sweep_dir, uri, toy_bit_run)
    continued_stdout, continued_stderr = process.communicate(timeout=600)
    return {"sweep_dir": sweep_dir, "storage": storage, "client": client, "parent_id": parent_id,
            "stopped": stopped, "continued": {"returncode": process.returncode,
                                              "stdout": continued_stdout, "stderr": continued_stderr}}


def test_a_stopped_search_leaves_its_study_and_mlflow_runs_consistent(search):
    stopped = search["stopped"]
    assert stopped["returncode"] == 128 + signal.SIGTERM, stopped["stderr"][-3000:]
    assert stopped["trials"] == ["COMPLETE", "RUNNING"]  # what Optuna knows of a stopped trial
    assert sorted(stopped["children"].values()) == ["FINISHED", "KILLED"]
    assert stopped["parent"] == "RUNNING"  # the sweep did not end


def test_the_same_command_continues_the_study_and_reruns_the_stopped_trial(search):
    continued = search["continued"]
    assert continued["returncode"] == 0, continued["stderr"][-3000:]
    study = optuna.load_study(study_name="search", storage=search["storage"])
    states = [trial.state.name for trial in study.trials]
    # The stopped trial is failed and queued again (trial 2, same parameters), then one new one.
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert study.trials[2].params == study.trials[1].params
    assert study.trials[3].params != study.trials[0].params  # new points, not the first draws
    assert study.direction.name == "MINIMIZE"  # optimized_metric=val_loss
    assert len(job_folders(search["sweep_dir"])) == 3
    # docs/sweeps.md: the stopped trial's job folder resumes from its last epoch; the sampler's
    # seed is seed (42) plus the trials stored (2, and the stopped one queued again); jobs are
    # numbered from 0 again (the re-run trial's folder, then the new one's).
    assert "resuming after epoch" in continued["stderr"]
    assert "(3 trial(s) stored) with 2 new trial(s); sampler seed 45" in continued["stdout"]
    numbers = sorted(OmegaConf.load(job / ".hydra/hydra.yaml").hydra.job.num
                     for job in job_folders(search["sweep_dir"]))
    assert numbers == [0, 0, 1]


def test_the_resumed_trial_continues_its_own_mlflow_run(search):
    client = search["client"]
    children = mlflow_children(client, search["parent_id"])
    assert sorted(children.values()) == ["FINISHED"] * 3  # one run per job folder, none twice
    for job in job_folders(search["sweep_dir"]):
        assert steps(client, run_id_of(job), "val_loss") == list(range(6)), job.name
    assert client.get_run(search["parent_id"]).info.status == "FINISHED"
    assert run_id_of(search["sweep_dir"]) == search["parent_id"]  # the re-run sweep continued it


def test_the_summary_marks_the_best_trial_by_the_optimized_metric(search):
    sweep_dir = search["sweep_dir"]
    with open(sweep_dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    best = [row for row in rows if row["best"] == "best"]
    assert len(best) == 1
    assert float(best[0]["val_loss"]) == min(float(row["val_loss"]) for row in rows)
    study = optuna.load_study(study_name="search", storage=search["storage"])
    assert study.best_value == pytest.approx(float(best[0]["val_loss"]))
    markdown = (sweep_dir / "summary.md").read_text()
    assert f"Best val_loss {study.best_value:.4f}: {best[0]['run_dir']}" in markdown


def test_each_trial_writes_its_overridden_keys_as_hparams(search):
    for job in job_folders(search["sweep_dir"]):
        session = hparams_session(job / "tensorboard")
        assert {"model.learning_rate", "model", "dataset.image_size", "batch_size"} <= set(session["hparams"])
        assert set(session["metrics"]) >= {"val_accuracy", "val_loss"}


# --- what README's Experiment tracking section says, checked on the runs above -------------

def test_each_jobs_mlflow_run_is_tagged_with_its_overrides(search):
    """README: tags `overrides` (the job's command-line overrides, as .hydra/overrides.yaml)."""
    client = search["client"]
    for job in job_folders(search["sweep_dir"]):
        overrides = [str(item) for item in OmegaConf.load(job / ".hydra" / "overrides.yaml")]
        assert client.get_run(run_id_of(job)).data.tags["overrides"] == " ".join(overrides)


def test_log_weights_true_logs_the_weights_too(single_runs, toy_bit_run, tmp_path):
    """README: the weights too with `logger.mlflow.log_weights=true` (a copy of the finished run
    folder, reported as a new run of another experiment)."""
    import shutil

    folder = tmp_path / "with_weights"
    shutil.copytree(single_runs["finished"], folder)
    (folder / RUN_FILE).unlink()
    cfg = compose_config([*toy_bit_run, BOTH_LOGGERS, f"logger.mlflow.tracking_uri={single_runs['uri']}",
                          "logger.mlflow.log_weights=true", "logger.mlflow.experiment_name=weights"],
                         folder)
    start_tracking(cfg, folder).finish(folder)
    listed = single_runs["client"].list_artifacts(run_id_of(folder), "checkpoints")
    assert sorted(item.path for item in listed) == [
        "checkpoints/best_weights.h5", "checkpoints/labels.txt", "checkpoints/last_weights.h5"]


def test_the_default_store_is_relative_to_the_working_folder(tmp_path, monkeypatch):
    """README: `sqlite:///outputs/mlflow.db`, relative to the working folder as `outputs/` is,
    created on first use, artifacts in `outputs/mlartifacts/`."""
    from runner.record.tracking import _experiment_id, connect, tracking_uri

    monkeypatch.chdir(tmp_path)
    default = compose_config(["logger=mlflow"]).logger.mlflow.tracking_uri
    client = connect(default)
    assert (tmp_path / "outputs" / "mlflow.db").is_file()
    uri = tracking_uri(default)
    assert uri == f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    experiment = client.get_experiment(_experiment_id(client, "runner", uri))
    assert experiment.artifact_location == (tmp_path / "outputs" / "mlartifacts").as_uri()


def test_tensorboard_has_the_per_epoch_scalars(single_runs):
    """README: `tensorboard/` holds per-epoch scalars (Keras' train/ and validation/ logs)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for split in ("train", "validation"):
        events = EventAccumulator(str(single_runs["finished"] / "tensorboard" / split),
                                  size_guidance={"tensors": 0})
        events.Reload()
        for tag in ("epoch_loss", "epoch_accuracy"):
            assert [event.step for event in events.Tensors(tag)] == [0, 1], (split, tag)


def test_the_params_are_the_composed_config_flattened(single_runs):
    """README: each run is an MLflow run with the composed config flattened as params."""
    from runner.record.run_folder import flat_config

    folder = single_runs["finished"]
    params = single_runs["client"].get_run(run_id_of(folder)).data.params
    composed = flat_config(OmegaConf.load(folder / ".hydra" / "config.yaml"))
    assert params == {key: str(value) for key, value in composed.items()}


def test_a_sweep_with_a_job_that_did_not_finish_ends_its_parent_run_failed(tmp_path, monkeypatch):
    """docs/sweeps.md: the sweep's parent run ends FINISHED when every job finished, else FAILED
    (here one job finished and one failed, as their folders say), and its id reaches the jobs
    through RUNNER_MLFLOW_PARENT_RUN_ID."""
    from hydra import compose, initialize_config_dir

    from runner.record.tracking import PARENT_RUN_ENV, MlflowSweep
    from tests.conftest import CONF_DIR

    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    sweep_dir, uri = tmp_path / "sweep", sqlite_uri(tmp_path)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        config = compose(config_name="config", return_hydra_config=True, overrides=[
            "logger=mlflow", f"logger.mlflow.tracking_uri={uri}", f"hydra.sweep.dir={sweep_dir}"])
    callback = MlflowSweep()
    callback.on_multirun_start(config)
    parent_id = run_id_of(sweep_dir)
    assert os.environ[PARENT_RUN_ENV] == parent_id
    for name, status in (("seed=1", "finished"), ("seed=2", "failed")):
        (sweep_dir / name / ".hydra").mkdir(parents=True)
        (sweep_dir / name / ".hydra" / "overrides.yaml").write_text(f"- {name}\n")
        (sweep_dir / name / "status.json").write_text(json.dumps({"status": status}))
    (sweep_dir / "seed=1" / "metrics.json").write_text(json.dumps({"val_accuracy": 0.5}))
    callback.on_multirun_end(config)
    assert MlflowClient(tracking_uri=uri).get_run(parent_id).info.status == "FAILED"
    assert PARENT_RUN_ENV not in os.environ
