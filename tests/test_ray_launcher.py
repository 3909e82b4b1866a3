"""Hydra's Ray launcher through the project's presets (conf/hydra/launcher/ray_*.yaml, docs/sweeps.md
"Ray"): a real two-node Ray cluster on 127.0.0.1, started and stopped by the tests, each node with
one CPU and one unit of a resource standing in for a device; a sweep of the runner across it. On
the Ascend stack the stand-in is Ray's own `NPU` resource and the jobs run device=npu on the fake
npu_device, so each job opens the card Ray gave it. Also what the presets need installed."""
from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from runner.config.ray_launcher import check_ray_launcher
from runner.errors import ConfigError
from runner.record.lock import read_holder
from runner.versions import installed_version
from tests.conftest import FAKE_NPU_DIR, ON_ASCEND_STACK, runner_env

pytestmark = pytest.mark.ascend_stack  # Ray is in the Ascend dev locks too (Python >= 3.8)

needs_ray = pytest.mark.skipif(
    installed_version("hydra-ray-launcher") is None,
    reason="hydra-ray-launcher is not installed (requirements-ray.txt; Python >= 3.8)",
)
RAY = str(Path(sys.executable).parent / "ray")
SEEDS = ["1", "2", "3", "4"]  # four jobs, two nodes of one job slot each


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_cluster(sessions: set[int], token: str) -> None:
    """End every process of this test's cluster: each `ray start` runs in a session of its own,
    which its processes keep, and their environment holds the cluster's token (Ray renames its
    processes, so their command lines do not tell). Not `ray stop`, which would end every Ray
    cluster of the user on this machine, not only the test's."""
    for stop in (signal.SIGTERM, signal.SIGKILL):
        pids = cluster_processes(sessions, token)
        for pid in pids:
            try:
                os.kill(pid, stop)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 15
        while pids and time.monotonic() < deadline:
            time.sleep(0.2)
            pids = cluster_processes(sessions, token)
        if not pids:
            return


def cluster_processes(sessions: set[int], token: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            in_session = os.getsid(int(entry.name)) in sessions
            if in_session or token.encode() in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:  # ended meanwhile, or another user's
            continue
    return pids


@pytest.fixture(scope="module")
def cluster() -> dict:
    """A head node and a second node joined to it, both on 127.0.0.1 only, with token
    authentication (a token of this test's own; Ray releases before token authentication ignore
    the variables), each with one CPU and one unit of the stand-in device. Always stopped."""
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live in it
    device = "NPU" if ON_ASCEND_STACK else "card"
    token = secrets.token_hex(16)
    env = {**runner_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": f"{FAKE_NPU_DIR}:{runner_env()['PYTHONPATH']}"}
    port = free_port()
    node = ["--node-ip-address=127.0.0.1", "--num-cpus=1", f"--resources={json.dumps({device: 1})}",
            f"--temp-dir={temp_dir}", f"--dashboard-agent-listen-port={free_port()}",
            "--disable-usage-stats"]
    head = [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false",
            f"--dashboard-port={free_port()}", f"--ray-client-server-port={free_port()}", *node]
    second = [RAY, "start", f"--address=127.0.0.1:{port}", *node]
    # Ray hands out the NPU ids a node was started with: the second node's card is card 1.
    second_env = {**env, "ASCEND_RT_VISIBLE_DEVICES": "1"} if device == "NPU" else env
    sessions: set[int] = set()
    try:
        for command, command_env in ((head, env), (second, second_env)):
            start = subprocess.Popen(command, env=command_env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
            sessions.add(start.pid)
            output, _ = start.communicate(timeout=300)
            assert start.returncode == 0, output[-3000:]
        yield {"address": f"127.0.0.1:{port}", "env": {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"},
               "device": device}
    finally:
        stop_cluster(sessions, token)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not cluster_processes(sessions, token), "the test's Ray cluster outlived it"


def node_ids(cluster: dict) -> set[str]:
    code = "import ray; ray.init(); print(' '.join(node['NodeID'] for node in ray.nodes() if node['Alive']))"
    result = subprocess.run([sys.executable, "-c", code], env=cluster["env"], capture_output=True,
                            text=True, timeout=300, check=True)
    return set(result.stdout.split())


def on_the_cluster(cluster: dict) -> list[str]:
    """Each job asks for one unit of the stand-in device (and one CPU): on the Ascend stack the
    NPU preset with device=npu, elsewhere the CPU preset plus the custom resource."""
    device = cluster["device"]
    if device == "NPU":
        return ["hydra/launcher=ray_npu", "device=npu"]
    return ["hydra/launcher=ray_cpu", f"+hydra.launcher.ray.remote.resources={{{device}:1}}"]


def sweep_on(cluster: dict, *overrides: str) -> subprocess.CompletedProcess:
    """`python -m runner -m ...` with RAY_ADDRESS naming the cluster."""
    return subprocess.run([sys.executable, "-m", "runner", "-m", *on_the_cluster(cluster), *overrides],
                          env=cluster["env"], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def sweep(cluster, toy_bit_run, tmp_path_factory) -> dict:
    """Four jobs of the toy run across the cluster (RAY_ADDRESS names it), each asking for one CPU
    and one unit of the stand-in device, logging to MLflow (a local SQLite store)."""
    sweep_dir = tmp_path_factory.mktemp("ray") / "sweep"
    uri = f"sqlite:///{sweep_dir.parent / 'mlflow.db'}"
    result = sweep_on(cluster, *toy_bit_run, f"seed={','.join(SEEDS)}", "logger=[tensorboard,mlflow]",
                      f"logger.mlflow.tracking_uri={uri}", f"hydra.sweep.dir={sweep_dir}")
    return {"result": result, "dir": sweep_dir, "rows": summary_rows(sweep_dir, "seed"),
            "nodes": node_ids(cluster), "uri": uri}


def summary_rows(sweep_dir: Path, key: str) -> dict[str, dict[str, str]]:
    with open(sweep_dir / "summary.csv") as f:
        return {row[key]: row for row in csv.DictReader(f)}


@needs_ray
def test_every_job_of_the_sweep_finishes_on_the_cluster(sweep):
    assert sweep["result"].returncode == 0, sweep["result"].stderr[-3000:]
    assert sorted(sweep["rows"]) == SEEDS
    assert {row["status"] for row in sweep["rows"].values()} == {"finished"}


@needs_ray
def test_the_summary_names_each_jobs_node_and_both_nodes_ran_jobs(sweep):
    """The node column: the address and the start of the id of the Ray node each job ran on (one
    address: both nodes run on this machine)."""
    short_ids = {node_id[:8] for node_id in sweep["nodes"]}
    assert len(short_ids) == 2
    nodes = [row["node"].split() for row in sweep["rows"].values()]
    assert len({address for address, _ in nodes}) == 1
    assert {short_id for _, short_id in nodes} == short_ids


@needs_ray
def test_each_job_ran_in_a_fresh_worker(sweep):
    """max_calls: 1 in the presets: no worker runs a second job (Ray would reuse it otherwise)."""
    pids = [read_holder(sweep["dir"] / row["run_dir"]).pid for row in sweep["rows"].values()]
    assert len(set(pids)) == len(SEEDS)


@needs_ray
def test_the_summary_names_the_device_each_job_got(sweep):
    """On the Ascend stack each node has one fake card, card 0 on the head and card 1 on the second
    node: each job opened the card Ray gave it on its node (from ASCEND_RT_VISIBLE_DEVICES).
    Elsewhere the jobs run on the CPU."""
    device_by_node = {}
    for row in sweep["rows"].values():
        device_by_node.setdefault(row["node"], set()).add(row["device"])
    if not ON_ASCEND_STACK:
        assert set.union(*device_by_node.values()) == {"cpu"}
        return
    assert sorted(tuple(devices) for devices in device_by_node.values()) == [("npu:0",), ("npu:1",)]


@needs_ray
def test_the_sweeps_mlflow_run_reaches_the_jobs_on_the_cluster(sweep):
    """The cluster's workers do not inherit the sweep's environment: the presets hand them the
    sweep's MLflow run id (runtime_env), so each job's run is a child of the sweep's."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sweep["uri"])
    parent = json.loads((sweep["dir"] / "mlflow_run.json").read_text())["run_id"]
    for row in sweep["rows"].values():
        child = json.loads((sweep["dir"] / row["run_dir"] / "mlflow_run.json").read_text())["run_id"]
        assert client.get_run(child).data.tags["mlflow.parentRunId"] == parent
    assert client.get_run(parent).info.status == "FINISHED"


@pytest.fixture(scope="module")
def failing_sweep(cluster, toy_bit_run, tmp_path_factory) -> dict:
    """Two jobs on the cluster, the first of which fails (a crop larger than the images)."""
    sweep_dir = tmp_path_factory.mktemp("ray_failing") / "sweep"
    overrides = [arg for arg in toy_bit_run if not arg.startswith("model.crop_size=")]
    command = [*overrides, "model.crop_size=40,24", f"hydra.sweep.dir={sweep_dir}"]
    result = sweep_on(cluster, *command)
    return {"result": result, "rows": summary_rows(sweep_dir, "model.crop_size"), "dir": sweep_dir,
            "command": command}


@needs_ray
def test_a_failed_job_is_recorded_and_the_sweep_goes_on_then_exits_1(failing_sweep):
    assert failing_sweep["result"].returncode == 1, failing_sweep["result"].stderr[-3000:]
    failed, finished = failing_sweep["rows"]["40"], failing_sweep["rows"]["24"]
    assert (failed["status"], finished["status"]) == ("failed", "finished")
    assert "model.crop_size=40" in failed["reason"]


@needs_ray
def test_the_same_sweep_again_skips_the_finished_job_and_tries_the_failed_one_again(cluster,
                                                                                   failing_sweep):
    folders = {size: failing_sweep["dir"] / row["run_dir"] for size, row in failing_sweep["rows"].items()}
    before = {size: (folder / name).stat().st_mtime_ns
              for size, folder, name in (("24", folders["24"], "metrics.json"),
                                         ("40", folders["40"], "status.json"))}
    again = sweep_on(cluster, *failing_sweep["command"])
    assert again.returncode == 1, again.stderr[-3000:]
    assert (folders["24"] / "metrics.json").stat().st_mtime_ns == before["24"]  # not trained again
    assert (folders["40"] / "status.json").stat().st_mtime_ns > before["40"]  # run (and failed) again


@pytest.fixture(scope="module")
def search(cluster, toy_bit_run, tmp_path_factory) -> dict:
    """hparams_search=optuna with two trials at a time, one per node."""
    sweep_dir = tmp_path_factory.mktemp("ray_search") / "sweep"
    result = sweep_on(cluster, *toy_bit_run, "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                      "hydra.sweeper.n_jobs=2", f"hydra.sweep.dir={sweep_dir}")
    return {"result": result, "dir": sweep_dir}


@needs_ray
def test_an_optuna_search_runs_its_trials_at_once_across_the_nodes(search):
    """Both trials ran at the same time (each took its folder before the other wrote its
    metrics.json), each on a node of its own, and Optuna's best is the summary's best."""
    from datetime import datetime

    assert search["result"].returncode == 0, search["result"].stderr[-3000:]
    with open(search["dir"] / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {row["status"] for row in rows} == {"finished"}
    assert len({row["node"] for row in rows}) == 2
    folders = [search["dir"] / row["run_dir"] for row in rows]
    last_start = max(datetime.fromisoformat(read_holder(folder).since).timestamp() for folder in folders)
    assert last_start <= min((folder / "metrics.json").stat().st_mtime for folder in folders)
    assert (search["dir"] / "optimization_results.yaml").is_file()
    assert [row["best"] for row in rows].count("best") == 1


@pytest.fixture(scope="module")
def local_sweep(toy_bit_run, tmp_path_factory) -> dict:
    """hydra/launcher=ray_npu with no cluster: the sweep starts a Ray instance of its own, here
    told it has two NPUs and two CPUs (on the Ascend stack the jobs open the fake's cards; elsewhere
    they run on the CPU beside them). Its processes are ended afterwards, should any outlive it."""
    sweep_dir = tmp_path_factory.mktemp("ray_local") / "sweep"
    token = secrets.token_hex(16)
    env = {**runner_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": f"{FAKE_NPU_DIR}:{runner_env()['PYTHONPATH']}"}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "runner", "-m", *toy_bit_run, "hydra/launcher=ray_npu",
               *(["device=npu"] if ON_ASCEND_STACK else []), "seed=1,2",
               "+hydra.launcher.ray.init.num_cpus=2", "+hydra.launcher.ray.init.resources={NPU:2}",
               "+hydra.launcher.ray.init.include_dashboard=false", f"hydra.sweep.dir={sweep_dir}"]
    sweep = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    try:
        output, _ = sweep.communicate(timeout=900)
    finally:
        stop_cluster({sweep.pid}, token)
    return {"code": sweep.returncode, "output": output, "rows": summary_rows(sweep_dir, "seed"),
            "left": cluster_processes({sweep.pid}, token)}


@needs_ray
def test_without_a_cluster_the_sweep_runs_on_a_ray_of_its_own(local_sweep):
    assert local_sweep["code"] == 0, local_sweep["output"][-3000:]
    rows = local_sweep["rows"].values()
    assert {row["status"] for row in rows} == {"finished"} and len(rows) == 2
    devices = sorted(row["device"] for row in rows)
    assert devices == (["npu:0", "npu:1"] if ON_ASCEND_STACK else ["cpu", "cpu"])
    assert not local_sweep["left"]


def test_the_summary_reads_each_jobs_device_and_node_from_its_placement(tmp_path):
    """Fast, without Ray: the device and node columns come from each job's env.json (placement);
    a sweep without Ray nodes gets neither, a job that never recorded one gets empty cells."""
    from runner.record.sweep_summary import read_job, summary_rows
    from tests.test_summarize import write_job

    placements = [{"host": "h", "device": "npu:3", "ray_node_id": "a" * 56, "ray_node_ip": "10.0.0.1"},
                  {"host": "h", "device": "npu:5", "ray_node_id": "b" * 56, "ray_node_ip": "10.0.0.2"},
                  None]
    for number, placement in enumerate(placements):
        run_dir = write_job(tmp_path, number, [f"seed={number}"], {"status": "failed"}, None, 0)
        if placement is not None:
            (run_dir / "env.json").write_text(json.dumps({"placement": placement}))
    jobs = [read_job(run_dir) for run_dir in sorted(tmp_path.iterdir())]
    rows = summary_rows(jobs, tmp_path)
    assert [(row["device"], row["node"]) for row in rows] == [
        ("npu:3", "10.0.0.1 aaaaaaaa"), ("npu:5", "10.0.0.2 bbbbbbbb"), ("", "")]
    for job in jobs:
        job.placement.pop("ray_node_id", None)
    assert not {"device", "node"} & set(summary_rows(jobs, tmp_path)[0])


def test_a_job_records_the_device_its_launcher_set(monkeypatch):
    from omegaconf import OmegaConf

    from runner.record.placement import device_label

    monkeypatch.setenv("ASCEND_DEVICE_ID", "3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert device_label(OmegaConf.create({"type": "npu", "id": None})) == "npu:3"
    assert device_label(OmegaConf.create({"type": "npu", "id": 2})) == "npu:2"  # device.id wins
    assert device_label(OmegaConf.create({"type": "gpu", "id": None})) == "gpu:1"
    assert device_label(OmegaConf.create({"type": "cpu", "id": None})) == "cpu"


def test_a_ray_preset_says_what_it_needs_on_python_3_7():
    """Python 3.7 (the Ascend hosts' default) has neither hydra-ray-launcher nor a Ray with the NPU
    resource: a config error before anything starts, not Hydra's missing-config message."""
    for preset in ("ray_npu", "ray_cpu"):
        with pytest.raises(ConfigError, match="3.8"):
            check_ray_launcher(["-m", f"hydra/launcher={preset}", "seed=1,2"], python=(3, 7))
    check_ray_launcher(["-m", "hydra/launcher=device_pool"], python=(3, 7))  # others untouched


@pytest.mark.skipif(sys.version_info >= (3, 8), reason="the Python 3.7 host case")
def test_the_npu_preset_on_python_3_7_exits_2_before_any_job(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "runner", "-m", "hydra/launcher=ray_npu", "device=npu", "seed=1,2",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        env=runner_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "ray_npu" in result.stderr and not (tmp_path / "sweep").exists()
