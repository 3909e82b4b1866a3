"""`python -m runner -m ...` as a user runs it: job folders, failed jobs, the summary, re-runs,
and the search and cluster launcher configs. One real sweep is shared by the tests below."""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir

from tests.conftest import CONF_DIR, ON_ASCEND_STACK, runner_env

# deterministic=true on TF 2.6 (the Ascend stack) needs this from the start, as the run says.
DETERMINISM_ENV = {"TF_DETERMINISTIC_OPS": "1"} if ON_ASCEND_STACK else {}


def run_sweep(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner", "-m", *args], capture_output=True, text=True,
        env={**runner_env(), **DETERMINISM_ENV}, timeout=timeout,
    )


@pytest.fixture(scope="module")
def sweep_fixed(toy_bit_run) -> list[str]:
    """The toy BiT run, deterministic, with its crop size swept instead: model.crop_size=40 is
    larger than the 32 px images (a ConfigError, before TensorFlow), so the first job fails and
    the second must still run and finish."""
    return [arg for arg in toy_bit_run if not arg.startswith("model.crop_size=")] + [
        "deterministic=true"
    ]


def job_folder(sweep_dir, *values: str):
    """The one job folder whose name holds all these key=value pairs (Hydra's override_dirname)."""
    (folder,) = [p for p in sweep_dir.iterdir() if p.is_dir() and all(v in p.name.split(",") for v in values)]
    return folder


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, sweep_fixed):
    sweep_dir = tmp_path_factory.mktemp("sweep")
    result = run_sweep(*sweep_fixed, "model.crop_size=40,24", f"hydra.sweep.dir={sweep_dir}")
    return result, sweep_dir


def read_json(path):
    return json.loads(path.read_text())


def test_each_job_gets_a_readable_folder_with_the_run_contract(sweep):
    _, sweep_dir = sweep
    jobs = [p.name for p in sweep_dir.iterdir() if p.is_dir()]
    assert len(jobs) == 2 and not any("/" in name or "seed=" in name for name in jobs)  # no paths
    finished = job_folder(sweep_dir, "model.crop_size=24")
    for name in ("train.log", "history.csv", "metrics.json", "status.json", "env.json",
                 ".hydra/config.yaml", ".hydra/overrides.yaml", "checkpoints/best_weights.h5"):
        assert (finished / name).is_file(), name
    assert list((finished / "tensorboard").rglob("events.out.tfevents.*"))
    assert read_json(finished / "status.json")["status"] == "finished"


def test_a_failed_job_is_recorded_and_the_sweep_goes_on_then_exits_non_zero(sweep):
    result, sweep_dir = sweep
    assert result.returncode == 1, result.stderr[-3000:]
    assert "1 of 2 job(s) did not finish" in result.stdout  # Hydra's own log goes to stdout
    bad_job = job_folder(sweep_dir, "model.crop_size=40")
    assert f"job {bad_job.name} failed: model.crop_size=40" in result.stdout  # the log names it
    # docs/sweeps.md: status.json says failed, a one-line reason and the error's type.
    status = read_json(bad_job / "status.json")
    assert set(status) == {"status", "reason", "error", "wall_seconds"}
    assert (status["status"], status["error"]) == ("failed", "ConfigError")
    assert "model.crop_size=40 must be positive and at most dataset.image_size=32" in status["reason"]
    assert "\n" not in status["reason"]
    # ... and its train.log has the message, without a traceback for bad input.
    log = (bad_job / "train.log").read_text()
    assert "run failed: model.crop_size=40" in log and "Traceback" not in log
    assert not (bad_job / "metrics.json").exists()
    assert "Traceback" not in result.stderr


def test_summary_rows_match_each_jobs_metrics(sweep):
    _, sweep_dir = sweep
    with open(sweep_dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    # docs/sweeps.md: one column per swept key, then these, in this order.
    assert list(rows[0]) == [
        "model.crop_size", "overrides", "status", "reason", "val_accuracy", "val_loss",
        "images_per_sec", "wall_seconds", "epochs_completed", "run_dir", "best",
    ]
    bad_job, finished = (job_folder(sweep_dir, f"model.crop_size={crop}") for crop in (40, 24))
    assert [row["run_dir"] for row in rows] == [bad_job.name, finished.name]
    assert [row["status"] for row in rows] == ["failed", "finished"]
    assert [row["overrides"] for row in rows] == ["model.crop_size=40", "model.crop_size=24"]
    assert rows[1]["model.crop_size"] == "24"
    metrics = read_json(finished / "metrics.json")
    for column in ("val_accuracy", "val_loss", "images_per_sec", "wall_seconds", "epochs_completed"):
        assert float(rows[1][column]) == pytest.approx(metrics[column])
    assert [row["best"] for row in rows] == ["", "best"]
    assert "at most dataset.image_size" in rows[0]["reason"] and rows[0]["val_accuracy"] == ""
    markdown = (sweep_dir / "summary.md").read_text()
    assert "2 job(s): 1 finished, 1 not finished." in markdown
    assert f"| model.crop_size=24 | finished | {metrics['val_accuracy']:.4f}" in markdown
    assert (sweep_dir / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (sweep_dir / "multirun.yaml").is_file()  # Hydra's record of the sweep, beside them


def test_a_rerun_sweep_skips_finished_jobs_and_repeats_a_deterministic_run(
    sweep, sweep_fixed, tmp_path
):
    """A copy of the sweep folder (the tests above read the original) swept again: over the
    finished job (log_steps=1) and the same training in a new folder (log_steps=2 changes only the
    log). With deterministic=true and the same seed, this other process must write the same history."""
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(sweep[1], sweep_dir)
    finished = job_folder(sweep_dir, "model.crop_size=24", "log_steps=1")
    history_before = (finished / "history.csv").read_text()
    fixed = [arg for arg in sweep_fixed if arg != "log_steps=1"]
    result = run_sweep(*fixed, "log_steps=1,2", "model.crop_size=24", f"hydra.sweep.dir={sweep_dir}")
    assert "already holds a finished run" in result.stderr  # the job's log goes to stderr
    assert (finished / "history.csv").read_text() == history_before
    repeated = job_folder(sweep_dir, "model.crop_size=24", "log_steps=2")
    assert (repeated / "history.csv").read_text() == history_before
    # The summary covers every job folder: the failed job of the first sweep still counts.
    assert result.returncode == 1
    with open(sweep_dir / "summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 3


def test_optuna_search_goes_on_after_a_diverged_trial(tmp_path, toy_bit_run):
    """Two learning rates to choose from, one of which diverges (NaN or inf loss): the search records a
    failed trial, keeps the other as the best, and the sweep exits 1. (TPE seeded with seed=42
    picks 1e40 then 0.01 with the pinned optuna 2.10.1.)"""
    sweep_dir = tmp_path / "search"
    result = run_sweep(
        *toy_bit_run, "hparams_search=optuna", "hydra.sweeper.n_trials=2",
        "model.learning_rate=choice(0.01,1e40)", f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"model.learning_rate": 0.01}  # batch_size was fixed
    with open(sweep_dir / "summary.csv") as f:
        rows = {row["model.learning_rate"]: row for row in csv.DictReader(f)}
    assert rows["1e+40"]["status"] == "failed"
    assert re.search(r"loss became (nan|inf)", rows["1e+40"]["reason"])
    assert rows["0.01"]["status"] == "finished"
    assert best["best_value"] == pytest.approx(float(rows["0.01"]["val_accuracy"]))
    # docs/sweeps.md: the failed trial returned None and Optuna recorded it as failed; the study
    # is stored in <sweep folder>/optuna.db under the name `search`.
    import optuna

    study = optuna.load_study(study_name="search", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert sorted(trial.state.name for trial in study.trials) == ["COMPLETE", "FAIL"]


def compose_with_hydra(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_each_seed_of_a_seed_sweep_gets_its_own_folder():
    """Repeats over seeds are a sweep too: the seed must be in the job's folder name, or the
    second seed would find the first one's metrics.json and count as finished. Paths stay out."""
    names = [
        compose_with_hydra([f"seed={seed}", "dataset=cats_vs_dogs", "dataset.data_dir=/data"])
        .hydra.job.override_dirname
        for seed in (1, 2)
    ]
    assert names == ["dataset=cats_vs_dogs,seed=1", "dataset=cats_vs_dogs,seed=2"]


def test_the_folder_of_a_job_names_what_was_set_not_where_things_live():
    """docs/sweeps.md: every override given on the command line is in the job's folder name,
    swept or not, except output_dir, data and model paths, and the keys that only say where results
    are reported and how a search judges them (logger..., optimized_metric, hparams_search)."""
    overrides = [
        "model=bit", "model.handle=/models/bit", "model.cache_dir=/cache", "dataset=cats_vs_dogs",
        "dataset.data_dir=/data", "logger=mlflow", "logger.mlflow.tracking_uri=sqlite:///m.db",
        "logger.mlflow.experiment_name=e", "optimized_metric=val_loss", "hparams_search=optuna",
        "output_dir=/out", "batch_size=32",
    ]
    name = compose_with_hydra(overrides).hydra.job.override_dirname
    assert name == "batch_size=32,dataset=cats_vs_dogs,model=bit"


def test_the_sweep_folders_the_docs_show():
    """docs/sweeps.md: `-m batch_size=32,64 epochs=5,15` runs 4 jobs, each in a folder named
    after its overrides under hydra.sweep.dir, by default outputs/multirun/<date>/<time>."""
    from itertools import product

    from hydra.core.override_parser.overrides_parser import OverridesParser

    swept = OverridesParser.create().parse_overrides(["batch_size=32,64", "epochs=5,15"])
    jobs = list(product(*([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
                          for o in swept)))
    folders = [compose_with_hydra(list(job)).hydra for job in jobs]
    assert [f.job.override_dirname for f in folders] == [
        "batch_size=32,epochs=5", "batch_size=32,epochs=15", "batch_size=64,epochs=5",
        "batch_size=64,epochs=15",
    ]
    assert all(f.sweep.subdir == f.job.override_dirname for f in folders)
    assert re.fullmatch(r"outputs/multirun/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d-\d{6}", folders[0].sweep.dir)


def test_the_run_writes_hydra_s_files_itself_and_joblib_has_a_worker_per_core():
    """docs/sweeps.md: hydra.output_subdir is null (the run writes .hydra/ once it holds the lock);
    joblib's pool has hydra.launcher.n_jobs workers, by default one per core (-1)."""
    assert compose_with_hydra([]).hydra.output_subdir is None
    launcher = compose_with_hydra(["hydra/launcher=joblib"]).hydra.launcher
    assert launcher.n_jobs == -1 and launcher.prefer == "processes"


def test_optuna_search_space_composes():
    """docs/sweeps.md: TPE seeded by `seed`, the study `search` stored in <sweep folder>/optuna.db,
    and the callback that continues a stored study (runner.config.search.ContinueStudy)."""
    cfg = compose_with_hydra(["hparams_search=optuna", "hydra.sweep.dir=/sweeps/s"])
    assert cfg.hydra.sweeper.direction == "maximize"
    assert set(cfg.hydra.sweeper.params) == {"model.learning_rate", "batch_size"}
    assert cfg.hydra.callbacks.sweep_summary._target_ == "runner.record.sweep_summary.SweepSummary"
    assert cfg.hydra.sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert (cfg.hydra.sweeper.study_name, cfg.hydra.sweeper.storage) == (
        "search", "sqlite:////sweeps/s/optuna.db")
    assert cfg.hydra.callbacks.continue_study._target_ == "runner.config.search.ContinueStudy"


def test_a_search_kept_in_memory_has_no_study_to_continue():
    """docs/sweeps.md: hydra.sweeper.storage=null keeps the study in memory: nothing is loaded
    and the sampler keeps `seed`."""
    from runner.config.search import ContinueStudy

    cfg = compose_with_hydra(["hparams_search=optuna", "hydra.sweeper.storage=null", "seed=7"])
    ContinueStudy().on_multirun_start(cfg)
    assert cfg.hydra.sweeper.sampler.seed == 7


def test_slurm_launcher_config_composes():
    cfg = compose_with_hydra([
        "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=1", "hydra.launcher.timeout_min=240",
        "hydra.launcher.max_num_timeout=3",  # docs/sweeps.md: requeue a job that hit its limit
    ])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 1, 240)
    assert launcher.max_num_timeout == 3


def test_a_continued_search_seeds_its_sampler_past_the_stored_trials_and_reruns_a_stopped_one(tmp_path):
    """docs/sweeps.md: the same command continues a stored study; its sampler is seeded with
    `seed` + the trials stored (else it would propose the first command's points again), and a
    trial a stopped command left running is queued again first."""
    import optuna
    from optuna.trial import TrialState

    from runner.config.search import ContinueStudy

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="search", storage=storage, direction="maximize")
    for value in (0.5, 0.6):
        trial = study.ask({"batch_size": optuna.distributions.CategoricalDistribution([8, 16])})
        study.tell(trial, value)
    stopped = study.ask({"batch_size": optuna.distributions.CategoricalDistribution([8, 16])})
    cfg = compose_with_hydra(["hparams_search=optuna", f"hydra.sweep.dir={tmp_path}", "seed=7"])
    ContinueStudy().on_multirun_start(cfg)
    trials = optuna.load_study(study_name="search", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL,
                                         TrialState.WAITING]
    assert trials[3].system_attrs["fixed_params"] == stopped.params  # how Optuna queues a trial
    assert cfg.hydra.sweeper.sampler.seed == 7 + len(trials)
