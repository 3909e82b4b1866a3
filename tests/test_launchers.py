"""The launchers docs/sweeps.md offers besides the basic one, each running a real two-job sweep:
`hydra/launcher=joblib` (a pool of loky worker processes) and `hydra/launcher=submitit_local` (a
fresh process per job). One sweep per launcher, shared by its module's tests."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from tests.conftest import runner_env

pytestmark = pytest.mark.ascend_stack  # the plugins are in requirements-ascend.txt too

LAUNCHERS = {
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
}
JOBS = ["seed=1", "seed=2"]  # the folder names: seed is the one swept key


# submitit 1.5.4 cannot find its executors on Python 3.9; requirements-ascend.txt pins 1.5.3, so
# only an environment installed before that pin skips (and says how to fix it).
SUBMITIT_BROKEN = sys.version_info < (3, 10) and version("submitit") == "1.5.4"


@pytest.fixture(scope="module", params=sorted(LAUNCHERS))
def sweep(request, tmp_path_factory, toy_bit_run) -> dict:
    launcher = request.param
    if launcher == "submitit_local" and SUBMITIT_BROKEN:
        pytest.skip("submitit 1.5.4 fails on Python 3.9 (KeyError: 'submitit'): "
                    "pip install -r requirements-ascend.txt installs 1.5.3")
    sweep_dir = tmp_path_factory.mktemp(launcher) / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "runner", "-m", *toy_bit_run, *LAUNCHERS[launcher], "seed=1,2",
         f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True, text=True, env=runner_env(), timeout=600,
    )
    return {"launcher": launcher, "result": result, "dir": sweep_dir}


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


def test_the_summary_lists_both_jobs(sweep):
    with open(sweep["dir"] / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["seed"] for row in rows) == ["1", "2"]
    assert {row["status"] for row in rows} == {"finished"}
