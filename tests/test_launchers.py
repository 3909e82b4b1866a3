"""The launchers docs/sweeps.md offers besides the basic one, each running a real two-job sweep:
`hydra/launcher=joblib` (a pool of loky worker processes) and `hydra/launcher=submitit_local` (a
fresh process per job). One sweep per launcher, shared by its module's tests."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runner.versions import installed_version as version
from tests.conftest import runner_env

pytestmark = pytest.mark.ascend_stack  # the plugins are in the Ascend locks too

LAUNCHERS = {
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
}
JOBS = ["seed=1", "seed=2"]  # the folder names: seed is the one swept key
# The launcher whose sweep also logs to MLflow (a local SQLite store): its jobs run in loky's pool
# processes, the least direct way for the sweep's environment to reach a job. One launcher only:
# MLflow costs each job process seconds of imports.
TRACKED = "joblib"


# submitit 1.5.4 cannot find its executors on Python 3.9; the Ascend locks pin 1.5.3, so
# only an environment installed before that pin skips (and says how to fix it).
SUBMITIT_BROKEN = sys.version_info < (3, 10) and version("submitit") == "1.5.4"


@pytest.fixture(scope="module", params=sorted(LAUNCHERS))
def sweep(request, tmp_path_factory, toy_bit_run) -> dict:
    launcher = request.param
    if launcher == "submitit_local" and SUBMITIT_BROKEN:
        pytest.skip("submitit 1.5.4 fails on Python 3.9 (KeyError: 'submitit'): "
                    "the Ascend locks install 1.5.3 (1.4.6 on Python 3.7)")
    sweep_dir = tmp_path_factory.mktemp(launcher) / "sweep"
    uri = f"sqlite:///{sweep_dir.parent / 'mlflow.db'}"
    tracking = ["logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri={uri}"]
    result = subprocess.run(
        [sys.executable, "-m", "runner", "-m", *toy_bit_run, *LAUNCHERS[launcher], "seed=1,2",
         *(tracking if launcher == TRACKED else []), f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True, text=True, env=runner_env(), timeout=600,
    )
    return {"launcher": launcher, "result": result, "dir": sweep_dir, "uri": uri}


def job_dir(sweep: dict, job: str) -> Path:
    return next(path for path in sweep["dir"].iterdir() if path.is_dir() and job in path.name)


def test_the_sweep_exits_0_with_both_jobs_finished(sweep):
    assert sweep["result"].returncode == 0, sweep["result"].stderr[-3000:]
    for job in JOBS:
        metrics = json.loads((job_dir(sweep, job) / "metrics.json").read_text())
        assert metrics["epochs_completed"] == 2
        assert json.loads((job_dir(sweep, job) / "status.json").read_text())["status"] == "finished"


def test_the_jobs_ran_under_the_chosen_launcher(sweep):
    for job in JOBS:
        hydra_yaml = yaml.safe_load((job_dir(sweep, job) / ".hydra" / "hydra.yaml").read_text())
        target = hydra_yaml["hydra"]["launcher"]["_target_"]
        assert sweep["launcher"].replace("_local", "") in target.lower(), target
    if sweep["launcher"] == "submitit_local":  # submitit keeps each job's own process logs
        assert len(list((sweep["dir"] / ".submitit").glob("*/*_log.out"))) == 2


def test_the_jobs_ran_at_once_each_in_a_process_of_its_own(sweep):
    """docs/sweeps.md: joblib runs the jobs in parallel in a pool of worker processes,
    submitit_local starts a fresh process per job, all at once. Each job's run.lock keeps the pid
    of its process and when it took the folder: the second job took its folder before the first
    one had written its metrics.json."""
    from datetime import datetime

    from runner.record.lock import read_holder

    holders = [read_holder(job_dir(sweep, job)) for job in JOBS]
    assert holders[0].pid != holders[1].pid
    last_start = max(datetime.fromisoformat(holder.since).timestamp() for holder in holders)
    first_end = min((job_dir(sweep, job) / "metrics.json").stat().st_mtime for job in JOBS)
    assert last_start <= first_end


def test_the_launcher_hands_the_sweeps_mlflow_run_to_its_jobs(sweep):
    """docs/sweeps.md: the sweep is one MLflow parent run with a child run per job; its id reaches
    the jobs through RUNNER_MLFLOW_PARENT_RUN_ID, which the launchers pass on to their job
    processes (tests/test_tracking.py checks the basic launcher)."""
    from mlflow.tracking import MlflowClient

    if sweep["launcher"] != TRACKED:
        pytest.skip(f"MLflow is checked with one launcher, {TRACKED}, to keep the tests short")
    client = MlflowClient(tracking_uri=sweep["uri"])
    parent = json.loads((sweep["dir"] / "mlflow_run.json").read_text())["run_id"]
    for job in JOBS:
        child = json.loads((job_dir(sweep, job) / "mlflow_run.json").read_text())["run_id"]
        assert client.get_run(child).data.tags["mlflow.parentRunId"] == parent
    assert client.get_run(parent).info.status == "FINISHED"


def test_the_summary_lists_both_jobs(sweep):
    with open(sweep["dir"] / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["seed"] for row in rows) == ["1", "2"]
    assert {row["status"] for row in rows} == {"finished"}
