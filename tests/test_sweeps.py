"""`python -m runner -m ...` as a user runs it: job folders, failed jobs, the summary, re-runs,
and the search and cluster launcher configs. One real sweep is shared by the tests below."""

import csv
import json
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir

from tests.conftest import CONF_DIR, ON_ASCEND_STACK, runner_env

# Tiny and deterministic. model.target_size=16 is invalid (a ConfigError, before TensorFlow): the
# first job fails, the second must still run and finish.
SWEEP_FIXED = [
    "batch_size=16", "epochs=2", "steps_per_epoch=3", "log_steps=1", "dataset.val_fraction=0.05",
    "deterministic=true",
]
SWEPT = ["model.target_size=16,32"]


def job_folder(target_size: int, log_steps: int = 1) -> str:
    return (f"batch_size=16,dataset.val_fraction=0.05,deterministic=True,epochs=2,"
            f"log_steps={log_steps},model.target_size={target_size},steps_per_epoch=3")


BAD_JOB, FINISHED_JOB = job_folder(16), job_folder(32)


# deterministic=true on TF 2.6 (the Ascend stack) needs this from the start, as the run says.
DETERMINISM_ENV = {"TF_DETERMINISTIC_OPS": "1"} if ON_ASCEND_STACK else {}


def run_sweep(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner", "-m", *args], capture_output=True, text=True,
        env={**runner_env(), **DETERMINISM_ENV}, timeout=timeout,
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("sweep")
    result = run_sweep(*SWEEP_FIXED, *SWEPT, f"hydra.sweep.dir={sweep_dir}")
    return result, sweep_dir


def read_json(path):
    return json.loads(path.read_text())


def test_each_job_gets_a_readable_folder_with_the_run_contract(sweep):
    _, sweep_dir = sweep
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert jobs == sorted([BAD_JOB, FINISHED_JOB])  # no seed, no paths in the names
    finished = sweep_dir / FINISHED_JOB
    for name in ("train.log", "history.csv", "metrics.json", "status.json", "env.json",
                 ".hydra/config.yaml", ".hydra/overrides.yaml", "checkpoints/best_weights.h5"):
        assert (finished / name).is_file(), name
    assert read_json(finished / "status.json")["status"] == "finished"


def test_a_failed_job_is_recorded_and_the_sweep_goes_on_then_exits_non_zero(sweep):
    result, sweep_dir = sweep
    assert result.returncode == 1, result.stderr[-3000:]
    assert "1 of 2 job(s) did not finish" in result.stdout  # Hydra's own log goes to stdout
    status = read_json(sweep_dir / BAD_JOB / "status.json")
    assert status == {**status, "status": "failed", "error": "ConfigError"}
    assert "model.target_size=16 must lie between 32" in status["reason"]
    assert not (sweep_dir / BAD_JOB / "metrics.json").exists()
    assert "Traceback" not in result.stderr


def test_summary_rows_match_each_jobs_metrics(sweep):
    _, sweep_dir = sweep
    with open(sweep_dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["run_dir"] for row in rows] == [BAD_JOB, FINISHED_JOB]
    assert [row["status"] for row in rows] == ["failed", "finished"]
    assert [row["overrides"] for row in rows] == ["model.target_size=16", "model.target_size=32"]
    assert rows[1]["model.target_size"] == "32"
    metrics = read_json(sweep_dir / FINISHED_JOB / "metrics.json")
    for column in ("val_accuracy", "val_loss", "images_per_sec", "wall_seconds"):
        assert float(rows[1][column]) == pytest.approx(metrics[column])
    assert "must lie between 32" in rows[0]["reason"] and rows[0]["val_accuracy"] == ""
    markdown = (sweep_dir / "summary.md").read_text()
    assert "2 job(s): 1 finished, 1 not finished." in markdown
    assert f"| model.target_size=32 | finished | {metrics['val_accuracy']:.4f}" in markdown
    assert (sweep_dir / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_rerun_sweep_skips_finished_jobs_and_repeats_a_deterministic_run(sweep):
    """Runs after the tests above: it sweeps again in the same folder, over the finished job
    (log_steps=1) and the same training in a new folder (log_steps=2 changes only the log).
    With deterministic=true and the same seed, this other process must write the same history."""
    _, sweep_dir = sweep
    finished = sweep_dir / FINISHED_JOB
    history_before = (finished / "history.csv").read_text()
    fixed = [arg for arg in SWEEP_FIXED if arg != "log_steps=1"]
    result = run_sweep(
        *fixed, "log_steps=1,2", "model.target_size=32",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert "already holds a finished run" in result.stderr  # the job's log goes to stderr
    assert (finished / "history.csv").read_text() == history_before
    repeated = sweep_dir / job_folder(32, log_steps=2)
    assert (repeated / "history.csv").read_text() == history_before
    # The summary covers every job folder: the failed job of the first sweep still counts.
    assert result.returncode == 1
    with open(sweep_dir / "summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 3


def test_optuna_search_goes_on_after_a_diverged_trial(tmp_path):
    """Two learning rates to choose from, one of which diverges (NaN loss): the search records a
    failed trial, keeps the other as the best, and the sweep exits 1. (TPE seeded with seed=42
    picks 1e30 then 0.01 with the pinned optuna 2.10.1.)"""
    sweep_dir = tmp_path / "search"
    result = run_sweep(
        "hparams_search=optuna", "hydra.sweeper.n_trials=2",
        "model.learning_rate=choice(0.01,1e30)", "batch_size=16", "epochs=1", "steps_per_epoch=2",
        "dataset.val_fraction=0.05", f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"model.learning_rate": 0.01}  # batch_size was fixed
    with open(sweep_dir / "summary.csv") as f:
        rows = {row["model.learning_rate"]: row for row in csv.DictReader(f)}
    assert rows["1e+30"]["status"] == "failed" and "loss became nan" in rows["1e+30"]["reason"]
    assert rows["0.01"]["status"] == "finished"
    assert best["best_value"] == pytest.approx(float(rows["0.01"]["val_accuracy"]))


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


def test_optuna_search_space_composes():
    cfg = compose_with_hydra(["hparams_search=optuna"])
    assert cfg.hydra.sweeper.direction == "maximize"
    assert set(cfg.hydra.sweeper.params) == {"model.learning_rate", "batch_size"}
    assert cfg.hydra.callbacks.sweep_summary._target_ == "runner.summarize.SweepSummary"


def test_slurm_launcher_config_composes():
    cfg = compose_with_hydra([
        "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=1", "hydra.launcher.timeout_min=240",
    ])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 1, 240)
