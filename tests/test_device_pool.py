"""`hydra/launcher=device_pool` (hydra_plugins/device_pool_launcher): a sweep's jobs in parallel, one
device per job, each job a process of its own. On this 2-core machine the devices are CPU core sets
[0] and [1]; on the Ascend stack, the fake npu_device's cards. The evidence is what each job's
process recorded (<sweep dir>/device_pool.jsonl: its device, its pid, its cores, when the sweep
gave and took back the device), not timings."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import pytest

from hydra_plugins.device_pool_launcher import devices as pool_module
from hydra_plugins.device_pool_launcher.devices import CPUS_ENV, form_pool
from hydra_plugins.device_pool_launcher.record import RECORD_FILE, append_record, read_records
from tests.conftest import FAKE_NPU_DIR, compose_config, needs_ascend_stack, runner_env

POOL = ["hydra/launcher=device_pool", "hydra.launcher.devices=[[0],[1]]"]
SEEDS = ["1", "2", "3", "4"]


def sweep_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner", "-m", *args]


def run_sweep(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(sweep_command(*args), capture_output=True, text=True,
                          env=env or runner_env(), timeout=900)


def records(sweep_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (sweep_dir / RECORD_FILE).read_text().splitlines()]


def job_dir(sweep_dir: Path, *values: str) -> Path:
    (folder,) = [p for p in sweep_dir.iterdir() if p.is_dir() and all(v in p.name.split(",") for v in values)]
    return folder


def status(folder: Path) -> dict:
    return json.loads((folder / "status.json").read_text())


def overlap(a: dict, b: dict) -> bool:
    """Whether two jobs held their devices at the same time (the sweep's own clock, one process)."""
    return a["started"] < b["ended"] and b["started"] < a["ended"]


# --- four jobs on two cores ----------------------------------------------------------------

@pytest.fixture(scope="module")
def sweep(tmp_path_factory, toy_bit_run) -> dict:
    """Four jobs on cores [0] and [1], logging to MLflow (a local SQLite store)."""
    sweep_dir = tmp_path_factory.mktemp("pool") / "sweep"
    uri = f"sqlite:///{sweep_dir.parent / 'mlflow.db'}"
    result = run_sweep(*toy_bit_run, *POOL, f"seed={','.join(SEEDS)}", "logger=[tensorboard,mlflow]",
                       f"logger.mlflow.tracking_uri={uri}", f"hydra.sweep.dir={sweep_dir}")
    return {"result": result, "dir": sweep_dir, "uri": uri}


def test_all_four_jobs_finish_and_the_sweep_exits_0(sweep):
    assert sweep["result"].returncode == 0, sweep["result"].stderr[-3000:]
    for seed in SEEDS:
        assert status(job_dir(sweep["dir"], f"seed={seed}"))["status"] == "finished"
    assert sorted(record["job"] for record in records(sweep["dir"])) == [0, 1, 2, 3]


def test_each_job_ran_alone_on_its_core_in_a_process_of_its_own(sweep):
    """Every thread of a job's process (TensorFlow's pools included, read as the job ended) could
    run on its device's core only: the process pinned itself before TensorFlow started."""
    jobs = records(sweep["dir"])
    assert len({job["pid"] for job in jobs}) == 4 and os.getpid() not in {job["pid"] for job in jobs}
    for job in jobs:
        core = int(job["device"].split(":")[1])
        assert job["affinity"] == [core] and job["threads_affinity"] == [core], job
        assert job["exit_code"] == 0 and job["ended_as"] == "returned"
    assert {job["device"] for job in jobs} == {"cpu:0", "cpu:1"}


def test_at_most_two_jobs_at_once_and_never_two_on_one_core(sweep):
    jobs = records(sweep["dir"])
    for a, b in combinations(jobs, 2):
        assert not (a["device"] == b["device"] and overlap(a, b)), (a, b)
    for a, b, c in combinations(jobs, 3):
        assert not (overlap(a, b) and overlap(b, c) and overlap(a, c)), (a, b, c)
    assert any(overlap(a, b) for a, b in combinations(jobs, 2))  # and they did run in parallel


def test_the_summary_names_each_jobs_device(sweep):
    with open(sweep["dir"] / "summary.csv") as f:
        rows = {row["run_dir"]: row for row in csv.DictReader(f)}
    assert {row["status"] for row in rows.values()} == {"finished"}
    for job in records(sweep["dir"]):
        assert rows[job["run_dir"]]["device"] == job["device"]
        assert float(rows[job["run_dir"]]["wall_seconds"]) > 0
    assert "| device |" in (sweep["dir"] / "summary.md").read_text()


def test_the_jobs_are_child_runs_of_the_sweeps_mlflow_run(sweep):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sweep["uri"])
    parent = json.loads((sweep["dir"] / "mlflow_run.json").read_text())["run_id"]
    for seed in SEEDS:
        child = json.loads((job_dir(sweep["dir"], f"seed={seed}") / "mlflow_run.json").read_text())
        assert client.get_run(child["run_id"]).data.tags["mlflow.parentRunId"] == parent
    assert client.get_run(parent).info.status == "FINISHED"


# --- a failing job frees its device ----------------------------------------------------------

@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory, toy_bit_run) -> dict:
    """One device (core 1) and two jobs, the first of which fails (a crop larger than the images):
    the second can only run once the failed job has given the core back."""
    sweep_dir = tmp_path_factory.mktemp("pool_fail") / "sweep"
    fixed = [arg for arg in toy_bit_run if not arg.startswith("model.crop_size=")]
    result = run_sweep(*fixed, "hydra/launcher=device_pool", "hydra.launcher.devices=[[1]]",
                       "model.crop_size=40,24", f"hydra.sweep.dir={sweep_dir}")
    return {"result": result, "dir": sweep_dir}


def test_a_failed_job_frees_its_device_and_the_sweep_exits_1(failing_sweep):
    sweep_dir = failing_sweep["dir"]
    assert failing_sweep["result"].returncode == 1, failing_sweep["result"].stderr[-3000:]
    failed, finished = (job_dir(sweep_dir, f"model.crop_size={crop}") for crop in (40, 24))
    assert status(failed)["status"] == "failed" and status(finished)["status"] == "finished"
    first, second = sorted(records(sweep_dir), key=lambda job: job["job"])
    assert first["device"] == second["device"] == "cpu:1"
    assert first["run_dir"] == failed.name and second["started"] >= first["ended"]
    with open(sweep_dir / "summary.csv") as f:
        assert [row["status"] for row in csv.DictReader(f)] == ["failed", "finished"]


# --- SIGTERM stops every job; the same command resumes ------------------------------------------

LONG_JOBS = ["epochs=20", "steps_per_epoch=300"]  # minutes of training: still running when stopped


def epochs_done(folder: Path) -> int:
    history = folder / "history.csv"
    return max(0, len(history.read_text().splitlines()) - 1) if history.is_file() else 0


@pytest.fixture(scope="module")
def stopped_and_resumed(tmp_path_factory, toy_bit_run) -> dict:
    """SIGTERM to the sweep once both running jobs have completed an epoch; then the same command."""
    sweep_dir = tmp_path_factory.mktemp("pool_stop") / "sweep"
    overrides = [*[a for a in toy_bit_run if not a.startswith(("epochs=", "steps_per_epoch="))],
                 *LONG_JOBS, *POOL, f"seed={','.join(SEEDS)}", f"hydra.sweep.dir={sweep_dir}"]
    with open(sweep_dir.parent / "stopped.err", "w") as stderr:
        sweep = subprocess.Popen(sweep_command(*overrides), env=runner_env(), stdout=stderr, stderr=stderr)
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and sweep.poll() is None:
                folders = [p for p in sweep_dir.glob("*/") if p.is_dir()] if sweep_dir.is_dir() else []
                if len(folders) == 2 and all(epochs_done(folder) >= 1 for folder in folders):
                    break
                time.sleep(0.5)
            sweep.send_signal(signal.SIGTERM)
            stopped_code = sweep.wait(timeout=300)
        finally:
            if sweep.poll() is None:
                sweep.kill()
    stopped = {"code": stopped_code, "records": records(sweep_dir),
               "status": {p.name: status(p) for p in sweep_dir.iterdir() if p.is_dir()}}
    resumed = run_sweep(*overrides)
    return {"dir": sweep_dir, "stopped": stopped, "resumed": resumed,
            "stderr": (sweep_dir.parent / "stopped.err").read_text()}


def test_sigterm_stops_every_running_job_which_records_interrupted(stopped_and_resumed):
    stopped = stopped_and_resumed["stopped"]
    assert stopped["code"] == 143, stopped_and_resumed["stderr"][-3000:]
    assert len(stopped["status"]) == 2  # the other two jobs never started
    for job_status in stopped["status"].values():
        assert job_status["status"] == "interrupted" and job_status["epochs_completed"] >= 1
    assert [job["ended_as"] for job in stopped["records"]] == ["interrupted", "interrupted"]


def test_a_stopped_sweep_leaves_no_job_process_behind(stopped_and_resumed):
    for job in stopped_and_resumed["stopped"]["records"]:
        with pytest.raises(ProcessLookupError):
            os.kill(job["pid"], 0)


def test_the_same_command_resumes_the_interrupted_jobs_and_runs_the_rest(stopped_and_resumed):
    sweep_dir, resumed = stopped_and_resumed["dir"], stopped_and_resumed["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in stopped_and_resumed["stopped"]["status"]:
        assert "resuming after epoch" in (sweep_dir / name / "train.log").read_text()
    for seed in SEEDS:
        folder = job_dir(sweep_dir, f"seed={seed}")
        assert status(folder)["status"] == "finished"
        epochs = [line.split(",")[0] for line in (folder / "history.csv").read_text().splitlines()[1:]]
        assert epochs == [str(epoch) for epoch in range(20)]  # each epoch once


# --- the pool's settings -------------------------------------------------------------------------

def test_cpu_devices_are_core_sets_and_a_lone_core_may_be_an_int():
    assert [d.ids for d in form_pool("cpu", [0, [1]])] == [("0",), ("1",)]
    assert form_pool("cpu", None) == form_pool("cpu", sorted(os.sched_getaffinity(0)))


@pytest.mark.parametrize("kind,devices,message", [
    ("cpu", [[0, 1], [1]], "overlap"),
    ("cpu", [[0], [4096]], "not among the cores"),
    ("cpu", [], "is empty"),
    ("gpu", [[0, 1]], "one id per device"),
    ("npu", [0, 0], "names a device twice"),
    ("tpu", [0], "must be one of"),
])
def test_a_pool_that_cannot_be_formed_is_refused(kind, devices, message):
    # Looked up now: Hydra's plugin scan runs the plugin's modules again, rebinding their classes.
    with pytest.raises(pool_module.DevicePoolError, match=message):
        form_pool(kind, devices)


def test_each_kind_of_device_gets_its_own_variable():
    gpu, npu = form_pool("gpu", ["3"])[0], form_pool("npu", [5])[0]
    assert gpu.environment({}) == {"CUDA_VISIBLE_DEVICES": "3"}
    assert npu.environment({}) == {"ASCEND_DEVICE_ID": "5"}
    cpu = form_pool("cpu", [[0, 1]])[0]
    assert cpu.environment({}) == {CPUS_ENV: "0,1", "TF_NUM_INTRAOP_THREADS": "2",
                                   "TF_NUM_INTEROP_THREADS": "2"}
    assert "TF_NUM_INTRAOP_THREADS" not in cpu.environment({"TF_NUM_INTRAOP_THREADS": "1"})


def test_an_optuna_search_asks_for_a_trial_per_device():
    def n_jobs(*overrides: str) -> int:
        return compose_config(["hparams_search=optuna", *overrides], with_hydra=True).hydra.sweeper.n_jobs

    assert n_jobs() == 1
    assert n_jobs(*POOL) == 2
    assert n_jobs("hydra/launcher=device_pool", "device=npu", "hydra.launcher.devices=[0,1,2,3,4,5,6,7]",
                  "hydra.launcher.jobs_per_device=2") == 16
    assert n_jobs(*POOL, "hydra.sweeper.n_jobs=1") == 1  # the command line still wins


def test_a_set_device_id_would_put_every_npu_job_on_one_card_and_is_refused(tmp_path):
    result = run_sweep("hydra/launcher=device_pool", "device=npu", "device.id=3",
                       "hydra.launcher.devices=[0,1]", "seed=1,2", f"hydra.sweep.dir={tmp_path / 's'}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "leave device.id null" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "s").exists()  # no sweep folder, empty or not


def test_a_pool_refused_at_setup_leaves_no_sweep_folder(tmp_path):
    result = run_sweep("hydra/launcher=device_pool", "hydra.launcher.devices=[99999]", "seed=1,2",
                       f"hydra.sweep.dir={tmp_path / 's'}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert not (tmp_path / "s").exists()


def test_the_plugin_imports_no_tensorflow_and_nothing_of_the_application():
    """`python -m runner --help` and `--cfg job` import every Hydra plugin: they stay fast. And the
    plugin is Hydra's, like its joblib and submitit launchers: it needs nothing of the runner."""
    code = ("import sys, hydra_plugins.device_pool_launcher.launcher, "
            "hydra_plugins.device_pool_launcher._child, hydra_plugins.device_pool_launcher.config, "
            "hydra_plugins.device_pool_launcher.record; "
            "app = sorted(m for m in sys.modules if m.split('.')[0] in ('runner', 'models', 'data')); "
            "assert 'tensorflow' not in sys.modules and not app, app")
    subprocess.run([sys.executable, "-c", code], env=runner_env(), check=True, timeout=120)


def test_the_record_reads_back_whole_lines_with_the_standard_library_alone(tmp_path):
    """The public reader of device_pool.jsonl (the summary reads it): a line cut short by a kill
    is skipped; importing it imports neither Hydra nor TensorFlow."""
    append_record(tmp_path, {"job": 0, "device": "cpu:0"})
    append_record(tmp_path, {"job": 1, "device": "cpu:1"})
    with open(tmp_path / RECORD_FILE, "a") as file:
        file.write('{"job": 2, "dev')
    assert read_records(tmp_path) == [{"job": 0, "device": "cpu:0"}, {"job": 1, "device": "cpu:1"}]
    assert read_records(tmp_path / "another launcher's sweep") == []
    code = ("import sys, hydra_plugins.device_pool_launcher.record; "
            "heavy = {'hydra', 'omegaconf', 'tensorflow', 'cloudpickle'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], env=runner_env(), check=True, timeout=120)


# --- the fake NPU (Ascend stack) ---------------------------------------------------------------

@pytest.fixture(scope="module")
def npu_sweep(tmp_path_factory, toy_bit_run) -> dict:
    """Three jobs on two fake cards; each job's process writes what its fake npu_device saw."""
    root = tmp_path_factory.mktemp("pool_npu")
    env = {**runner_env(), "PYTHONPATH": f"{FAKE_NPU_DIR}:{runner_env()['PYTHONPATH']}",
           "FAKE_NPU_RECORD": str(root / "fake-{pid}.json")}
    result = run_sweep(*toy_bit_run, "device=npu", "hydra/launcher=device_pool",
                       "hydra.launcher.devices=[0,1]", "seed=1,2,3", f"hydra.sweep.dir={root / 'sweep'}",
                       env=env)
    return {"result": result, "root": root}


@pytest.mark.ascend_stack
@needs_ascend_stack
def test_each_npu_job_opens_the_card_the_pool_gave_it(npu_sweep):
    assert npu_sweep["result"].returncode == 0, npu_sweep["result"].stderr[-3000:]
    jobs = records(npu_sweep["root"] / "sweep")
    assert len(jobs) == 3 and {job["device"] for job in jobs} == {"npu:0", "npu:1"}
    for job in jobs:
        fake = json.loads((npu_sweep["root"] / f"fake-{job['pid']}.json").read_text())
        assert fake["opened"]["name"].endswith("NPU:" + job["device"].split(":")[1]), (job, fake)


@pytest.mark.ascend_stack
@needs_ascend_stack
def test_a_sweeps_npu_jobs_share_one_compile_cache(npu_sweep):
    """docs/devices.md: under -m every job opens the NPU with the sweep's op and graph caches."""
    sweep = (npu_sweep["root"] / "sweep").resolve()
    opened_with = [json.loads((npu_sweep["root"] / f"fake-{job['pid']}.json").read_text())["open_options"]
                   for job in records(npu_sweep["root"] / "sweep")]
    assert len(opened_with) == 3
    for options in opened_with:
        assert options["op_compiler_cache_dir"] == str(sweep / "npu_compile_cache" / "op")
        assert options["graph_compiler_cache_dir"] == str(sweep / "npu_compile_cache" / "graph")
    assert (sweep / "npu_compile_cache" / "op").is_dir()


# --- a job whose process is killed counts as failed; its device goes on ----------------------------

@pytest.fixture(scope="module")
def killed_job(tmp_path_factory, toy_bit_run) -> dict:
    """One core, two jobs; the first job's process is SIGKILLed (as the kernel's out-of-memory
    killer would) once it has completed an epoch."""
    sweep_dir = tmp_path_factory.mktemp("pool_kill") / "sweep"
    overrides = [*[a for a in toy_bit_run if not a.startswith(("epochs=", "steps_per_epoch="))],
                 *LONG_JOBS, "hydra/launcher=device_pool", "hydra.launcher.devices=[[0]]", "seed=1,2",
                 f"hydra.sweep.dir={sweep_dir}"]
    sweep = subprocess.Popen(sweep_command(*overrides), env=runner_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline, first = time.monotonic() + 600, None
        while first is None and time.monotonic() < deadline and sweep.poll() is None:
            folders = list(sweep_dir.glob("*seed=1*")) if sweep_dir.is_dir() else []
            if folders and epochs_done(folders[0]) >= 1:
                first = folders[0]
            time.sleep(0.5)
        pid = status(first)["pid"]
        os.kill(pid, signal.SIGKILL)
        output, _ = sweep.communicate(timeout=600)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    return {"dir": sweep_dir, "pid": pid, "code": sweep.returncode, "output": output}


def test_a_killed_job_counts_as_failed_and_the_next_job_gets_its_device(killed_job):
    assert killed_job["code"] == 1, killed_job["output"][-3000:]
    first, second = sorted(records(killed_job["dir"]), key=lambda job: job["job"])
    assert (first["pid"], first["ended_as"], first["exit_code"]) == (killed_job["pid"], "died", -9)
    assert second["ended_as"] == "returned" and second["started"] >= first["ended"]
    with open(killed_job["dir"] / "summary.csv") as f:
        assert [row["status"] for row in csv.DictReader(f)] == ["interrupted", "finished"]


@pytest.mark.parametrize("jobs_per_device", [1, 2])
def test_jobs_spread_over_the_devices_before_they_share_and_never_past_jobs_per_device(jobs_per_device,
                                                                                        tmp_path):
    from hydra_plugins.device_pool_launcher._pool import DevicePool, Job, Running

    pool = DevicePool(form_pool("npu", [0, 1]), jobs_per_device, 0.0, 1.0, tmp_path)
    chosen = []
    while True:
        device = pool._free_device()
        if device is None:
            break
        chosen.append(device.label)
        pool.running.append(Running(Job(len(chosen), [], None), device, None, tmp_path / "r"))
    assert chosen == ["npu:0", "npu:1"] * jobs_per_device
    pool.running.pop(0)  # a job on npu:0 ends: its device is the one with room
    assert pool._free_device().label == "npu:0"
