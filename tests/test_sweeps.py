"""`python -m runner -m ...` as a user runs it: job folders, failed jobs, the summary, re-runs,
and the search and cluster launcher configs. One real sweep is shared by the tests below."""

import csv
import json
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir

from runner.train import train
from tests.conftest import CONF_DIR, compose_config, runner_env

# Tiny and deterministic; model.target_size=16 is invalid (a ConfigError, before TensorFlow) and
# learning_rate=1e30 diverges (NaN loss): only job #0 finishes, and failures sit in the middle.
SWEEP_FIXED = [
    "batch_size=16", "epochs=2", "steps_per_epoch=3", "log_steps=1", "dataset.val_fraction=0.05",
    "deterministic=true",
]
SWEPT = ["model.learning_rate=0.01,1e30", "model.target_size=32,16"]
FIXED_IN_NAME = "batch_size=16,dataset.val_fraction=0.05,deterministic=true,epochs=2,log_steps=1"


def job_folder(learning_rate: str, target_size: int) -> str:
    return (f"{FIXED_IN_NAME},model.learning_rate={learning_rate},model.target_size={target_size},"
            "steps_per_epoch=3")


FINISHED_JOB = job_folder("0.01", 32)
NAN_JOB = job_folder("1e+30", 32)
BAD_JOBS = [job_folder("0.01", 16), job_folder("1e+30", 16)]


def run_sweep(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner", "-m", *args], capture_output=True, text=True,
        env=runner_env(), timeout=timeout,
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
    assert jobs == sorted([FINISHED_JOB, NAN_JOB, *BAD_JOBS])  # no seed, no paths in the names
    finished = sweep_dir / FINISHED_JOB
    for name in ("train.log", "history.csv", "metrics.json", "status.json", "env.json",
                 ".hydra/config.yaml", ".hydra/overrides.yaml", "checkpoints/best.weights.h5"):
        assert (finished / name).is_file(), name
    assert read_json(finished / "status.json")["status"] == "finished"


def test_failed_jobs_are_recorded_and_the_sweep_goes_on_then_exits_non_zero(sweep):
    result, sweep_dir = sweep
    assert result.returncode == 1, result.stderr[-3000:]
    assert "3 of 4 job(s) did not finish" in result.stderr
    nan_status = read_json(sweep_dir / NAN_JOB / "status.json")
    assert nan_status["status"] == "failed" and "loss became nan" in nan_status["reason"]
    assert not (sweep_dir / NAN_JOB / "metrics.json").exists()
    for folder in BAD_JOBS:
        status = read_json(sweep_dir / folder / "status.json")
        assert status == {**status, "status": "failed", "error": "ConfigError"}
        assert "model.target_size=16 must lie between 32" in status["reason"]
    # Job #1 failed before job #2 (the NaN one) ran: a failure does not stop the sweep.
    assert "Traceback" not in result.stderr


def test_summary_rows_match_each_jobs_metrics(sweep):
    _, sweep_dir = sweep
    with open(sweep_dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["run_dir"] for row in rows] == [FINISHED_JOB, BAD_JOBS[0], NAN_JOB, BAD_JOBS[1]]
    assert [row["status"] for row in rows] == ["finished", "failed", "failed", "failed"]
    assert rows[0]["overrides"] == "model.learning_rate=0.01,model.target_size=32"
    assert rows[0]["model.learning_rate"] == "0.01" and rows[0]["model.target_size"] == "32"
    metrics = read_json(sweep_dir / FINISHED_JOB / "metrics.json")
    for column in ("val_accuracy", "val_loss", "images_per_sec", "wall_seconds"):
        assert float(rows[0][column]) == pytest.approx(metrics[column])
    assert "diverged" in rows[2]["reason"] and rows[2]["val_accuracy"] == ""
    markdown = (sweep_dir / "summary.md").read_text()
    assert "4 job(s): 1 finished, 3 not finished." in markdown
    assert f"| model.learning_rate=0.01,model.target_size=32 | finished | {metrics['val_accuracy']:.4f}" \
        in markdown
    assert (sweep_dir / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_and_deterministic_give_the_same_history(sweep, tmp_path):
    """Determinism across processes: this run in pytest repeats the sweep's finished job."""
    _, sweep_dir = sweep
    overrides = [*SWEEP_FIXED, "model.learning_rate=0.01", "model.target_size=32"]
    train(compose_config(overrides, tmp_path / "again"))
    again = (tmp_path / "again" / "history.csv").read_text().splitlines()
    assert len(again) == 3
    assert again == (sweep_dir / FINISHED_JOB / "history.csv").read_text().splitlines()


def test_a_rerun_sweep_skips_finished_jobs(sweep):
    """Runs last: it re-runs part of the sweep above in the same folder."""
    _, sweep_dir = sweep
    finished = sweep_dir / FINISHED_JOB
    history_before = (finished / "history.csv").read_text()
    result = run_sweep(
        *SWEEP_FIXED, "model.learning_rate=0.01", "model.target_size=32,16",
        f"hydra.sweep.dir={sweep_dir}", timeout=120,
    )
    assert result.returncode == 1  # the bad job fails again
    assert "already holds a finished run" in result.stderr
    assert (finished / "history.csv").read_text() == history_before
    with open(sweep_dir / "summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 4  # the summary covers every job folder


def test_optuna_search_writes_its_best_trial(tmp_path):
    sweep_dir = tmp_path / "search"
    result = run_sweep(
        "hparams_search=optuna", "hydra.sweeper.n_trials=1", "batch_size=16", "epochs=1",
        "steps_per_epoch=2", "dataset.val_fraction=0.05", f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"model.learning_rate"}  # batch_size was fixed
    assert 1e-4 <= best["best_params"]["model.learning_rate"] <= 1e-1
    (job,) = [p for p in sweep_dir.iterdir() if (p / "metrics.json").is_file()]
    assert best["best_value"] == pytest.approx(read_json(job / "metrics.json")["val_accuracy"])
    assert (sweep_dir / "summary.md").is_file()


def compose_with_hydra(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


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
