"""The other tools' commands that README.md and docs/*.md show, run as documented.

`mlflow ui` and `tensorboard --logdir` start as real servers on the loopback (this environment's
console scripts, on a free port) and are queried through their HTTP APIs, after README's own
sweep (`python -m runner -m logger=[tensorboard,mlflow] model.learning_rate=0.01,0.003`, on the toy
BiT run) ran in a temporary working folder, so the default store `outputs/mlflow.db` and the
default sweep folder are the ones the commands name. `tfds build` needs the network: it is
checked through TFDS's own parser, registry and file naming. Each command is read from the docs,
so a changed command changes what runs here."""
from __future__ import annotations

import fnmatch
import importlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import util
from pathlib import Path
from typing import IO, Any

import pytest

from runner.record.run_folder import read_history, read_metrics
from runner.record.tracking import HPARAM_METRICS, RUN_FILE, read_overrides
from runner.versions import metadata  # importlib.metadata, or its backport on Python 3.7
from tests.conftest import runner_env
from tests.test_docs import DOCS, ROOT, doc_text

pytestmark = pytest.mark.ascend_stack

README = (ROOT / "README.md").read_text()
HOST = "127.0.0.1"
# Seconds a server may take to answer: a guard against a hang, not a speed target (MLflow 2's took
# 14 s on an idle 2-core machine, and far longer beside another test suite). A server that exits
# fails the wait at once.
START_TIMEOUT = 300  # within pytest-timeout's 600 s per test
REQUEST_TIMEOUT = 120  # per request, for the same reason


def release(package: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", metadata.version(package))[:3])


# TFDS 4.9's `tfds` command imports Apache Beam as it starts (README, Preparing the datasets).
TFDS_CLI_NEEDS_BEAM = release("tensorflow-datasets") >= (4, 9) and util.find_spec("apache_beam") is None


# --- The commands, as the docs show them -------------------------------------------------

PLACEHOLDER = "<...>"  # a logdir written as `<words>`: the doc's words for a folder it names


def tensorboard_logdirs() -> dict[str, set[str]]:
    """Each doc's `tensorboard --logdir X`, by doc: X as written, or PLACEHOLDER for `<...>`.
    What a placeholder stands for follows from where it is shown (the sweep folder in
    docs/sweeps.md, the profiling folder in docs/devices.md), not from its words."""
    shown: dict[str, set[str]] = {}
    for path in DOCS:
        for logdir in re.findall(r"`tensorboard --logdir ([^`]+)`", path.read_text()):
            logdir = PLACEHOLDER if re.fullmatch(r"<[^<>]+>", logdir) else logdir
            shown.setdefault(path.relative_to(ROOT).as_posix(), set()).add(logdir)
    return shown


def mlflow_ui_line() -> tuple[list[str], str]:
    """README's `mlflow ui` line: its arguments, and the address its comment gives."""
    ((command, address),) = set(re.findall(r"^ *mlflow ui ([^#\n]+?) +# (\S+)$", doc_text(), re.M))
    return shlex.split(command), address


def readme_sweep_command() -> list[str]:
    (command,) = re.findall(r"^ *python -m runner (-m logger=\S*mlflow\S* [^#\n]+?) *$", README, re.M)
    return shlex.split(command)


def tfds_build_commands() -> dict[str, list[str]]:
    """README's `tfds build NAME --data_dir=DIR` of each dataset, as arguments."""
    commands = re.findall(r"`tfds (build (\w+) --data_dir=DIR)`", README)
    return {name: shlex.split(command) for command, name in commands}


def tfds_load_calls() -> set[str]:
    """The datasets README prepares with `tfds.load('NAME', data_dir='DIR')`."""
    return set(re.findall(r"tfds\.load\('(\w+)', data_dir='DIR'\)", README))


def readme_layouts() -> dict[str, tuple[str, list[str]]]:
    """README's dataset table: the version folder and its files (globs) of each dataset."""
    rows = re.findall(r"`(\w+)/(\d+\.\d+\.\d+)/\{([^}]+)\}`", README)
    return {name: (version, [f.strip() for f in files.split(",")]) for name, version, files in rows}


def test_the_docs_show_exactly_the_commands_tested_here():
    assert tensorboard_logdirs() == {
        "README.md": {"outputs"}, "docs/sweeps.md": {PLACEHOLDER}, "docs/devices.md": {PLACEHOLDER}}
    assert mlflow_ui_line()[0] == ["--backend-store-uri", "sqlite:///outputs/mlflow.db"]
    assert set(tfds_build_commands()) <= set(readme_layouts()) == {"tf_flowers", "cats_vs_dogs"}
    assert tfds_load_calls() <= set(readme_layouts()) and tfds_load_calls()


# --- Servers -----------------------------------------------------------------------------

def free_port() -> int:
    """A port nothing listens on: the one the kernel gives a socket bound to port 0."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def console_script(tool: str) -> str:
    """The tool as installed in this interpreter's environment (not whatever is on PATH)."""
    return str(Path(sys.executable).parent / tool)


def stop(process: subprocess.Popen) -> None:
    """The server and whatever it started (MLflow 2's gunicorn workers outlive a SIGTERM to
    `mlflow` itself, TensorBoard's data server): its whole process group, SIGTERM then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass


@contextmanager
def started(tool: str, arguments: list[str], cwd: Path) -> Iterator[tuple[subprocess.Popen, IO[str], str]]:
    """`tool arguments --port P --host 127.0.0.1` in its own process group; its output and URL."""
    port = free_port()
    with tempfile.TemporaryFile("w+") as output:
        # As in an activated environment: MLflow 1.30 (Python 3.7) starts its server as `gunicorn`.
        scripts = str(Path(console_script(tool)).parent)
        env = {**os.environ, "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")])}
        process = subprocess.Popen(
            [console_script(tool), *arguments, "--port", str(port), "--host", HOST], cwd=cwd, env=env,
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            yield process, output, f"http://{HOST}:{port}"
        finally:
            stop(process)


def tail(output: IO[str]) -> str:
    output.seek(0)
    return output.read()[-3000:]


def wait_until(ready: Any, process: subprocess.Popen, output: IO[str], what: str) -> None:
    """Polls ready() (False or an OSError: not yet) until it holds; fails with the server's output
    if the server exits or START_TIMEOUT passes."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        assert process.poll() is None, f"{process.args[0]} exited ({process.returncode}):\n{tail(output)}"
        try:
            if ready():
                return
        except OSError:  # refused while starting, or an HTTP error
            pass
        assert time.monotonic() < deadline, f"no {what} after {START_TIMEOUT} s:\n{tail(output)}"
        time.sleep(0.25)


@contextmanager
def serving(tool: str, arguments: list[str], cwd: Path, ready_path: str) -> Iterator[str]:
    """The server's URL, once GET ready_path answers."""
    with started(tool, arguments, cwd) as (process, output, url):
        wait_until(lambda: bool(get_json(url, ready_path)), process, output, f"answer from {ready_path}")
        yield url


def get_json(url: str, path: str, **query: str) -> Any:
    address = f"{url}{path}?{urllib.parse.urlencode(query)}" if query else url + path
    with urllib.request.urlopen(address, timeout=REQUEST_TIMEOUT) as response:
        return json.load(response)


def post_json(url: str, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
        return json.load(response)


# --- README's sweep, in a working folder of its own ------------------------------------

@pytest.fixture(scope="module")
def readme_sweep(tmp_path_factory, toy_bit_run) -> Path:
    """Where README's sweep ran (with the toy run's overrides after its own): outputs/ holds
    mlflow.db, mlartifacts/ and multirun/<date>/<time>/, as a user's would."""
    folder = tmp_path_factory.mktemp("workdir")
    result = subprocess.run(
        [sys.executable, "-m", "runner", *readme_sweep_command(), *toy_bit_run], cwd=folder,
        capture_output=True, text=True, env=runner_env(), timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def sweep_folder(workdir: Path) -> Path:
    (folder,) = workdir.glob("outputs/multirun/*/*")
    return folder


def jobs(workdir: Path) -> list[Path]:
    found = sorted(p.parent for p in sweep_folder(workdir).glob("*/metrics.json"))
    assert len(found) == 2  # model.learning_rate=0.01,0.003
    return found


# --- mlflow ui -----------------------------------------------------------------------------

def option_default(help_text: str, option: str) -> str:
    """The `(default: X)` that `--help` states for an option."""
    match = re.search(rf"--{option} [A-Z]+ .*?\(default: ([^)]+)\)", " ".join(help_text.split()))
    assert match, f"--{option} has no stated default"
    return match.group(1)


def test_the_address_readme_gives_mlflow_ui_is_its_default():
    result = subprocess.run([console_script("mlflow"), "ui", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    host, port = (option_default(result.stdout, option) for option in ("host", "port"))
    assert mlflow_ui_line()[1] == f"http://{host}:{port}"


def run_json(url: str, run_id: str) -> dict[str, Any]:
    return get_json(url, "/api/2.0/mlflow/runs/get", run_id=run_id)["run"]


def as_dict(items: list[dict[str, Any]]) -> dict[str, Any]:
    """MLflow's REST lists of {key, value} (params, tags, metrics) as a dict."""
    return {item["key"]: item["value"] for item in items}


def test_mlflow_ui_serves_the_sweep_as_one_parent_run_with_a_child_per_job(readme_sweep):
    experiment_path = "/api/2.0/mlflow/experiments/get-by-name"
    with serving("mlflow", ["ui", *mlflow_ui_line()[0]], readme_sweep,
                 f"{experiment_path}?experiment_name=runner") as url:
        experiment = get_json(url, experiment_path, experiment_name="runner")["experiment"]
        parent_id = json.loads((sweep_folder(readme_sweep) / RUN_FILE).read_text())["run_id"]
        parent = run_json(url, parent_id)
        children = post_json(url, "/api/2.0/mlflow/runs/search", {
            "experiment_ids": [experiment["experiment_id"]],
            "filter": f"tags.mlflow.parentRunId = '{parent_id}'",  # what the UI nests runs by
        })["runs"]
        histories = {child["info"]["run_name"]: get_json(
            url, "/api/2.0/mlflow/metrics/get-history", run_id=child["info"]["run_id"],
            metric_key="val_accuracy")["metrics"] for child in children}
    assert parent["info"]["experiment_id"] == experiment["experiment_id"]
    assert parent["info"]["status"] == "FINISHED"
    assert "model.learning_rate=0.01,0.003" in as_dict(parent["data"]["tags"])["overrides"]
    by_name = {child["info"]["run_name"]: child for child in children}
    assert sorted(by_name) == [job.name for job in jobs(readme_sweep)]
    for job in jobs(readme_sweep):
        child, metrics = by_name[job.name], read_metrics(job)
        assert child["info"]["status"] == "FINISHED"
        learning_rate = as_dict(child["data"]["params"])["model.learning_rate"]
        assert f"model.learning_rate={learning_rate}" in job.name.split(",")
        final = as_dict(child["data"]["metrics"])["final/val_accuracy"]
        assert final == pytest.approx(metrics["val_accuracy"])
        assert sorted(point["step"] for point in histories[job.name]) == [0, 1]  # per epoch


# --- tensorboard --logdir --------------------------------------------------------------------

def tensorboard_runs(url: str) -> set[str]:
    return set(get_json(url, "/data/runs"))


@contextmanager
def tensorboard(logdir: str, cwd: Path, runs: set[str]) -> Iterator[str]:
    """`tensorboard --logdir LOGDIR`, once it has loaded these runs (it reads event files in the
    background, after it answers)."""
    with started("tensorboard", ["--logdir", logdir], cwd) as (process, output, url):
        wait_until(lambda: runs <= tensorboard_runs(url), process, output, f"runs {sorted(runs)}")
        yield url


def scalars(url: str, run: str, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one run's scalar."""
    points = get_json(url, "/data/plugin/scalars/scalars", run=run, tag=tag)
    return [(step, value) for _, step, value in points]


def test_tensorboard_on_outputs_serves_each_runs_epoch_scalars_and_hparams(readme_sweep):
    assert "outputs" in tensorboard_logdirs()["README.md"]  # README, What a run leaves behind
    outputs = readme_sweep / "outputs"
    folders = {job: f"{job.relative_to(outputs).as_posix()}/tensorboard" for job in jobs(readme_sweep)}
    expected = {f"{folder}{part}" for folder in folders.values() for part in ("", "/train", "/validation")}
    with tensorboard("outputs", readme_sweep, expected) as url:
        plugins = get_json(url, "/data/plugins_listing")
        curves = {(job, split): scalars(url, f"{folder}/{split}", "epoch_loss")
                  for job, folder in folders.items() for split in ("train", "validation")}
        experiment = post_json(url, "/data/plugin/hparams/experiment", {"experimentName": ""})
    assert plugins["scalars"]["enabled"] and plugins["hparams"]["enabled"]
    for job in folders:
        history = read_history(job)
        for split, column in (("train", "loss"), ("validation", "val_loss")):
            assert curves[job, split] == [(row["epoch"], pytest.approx(row[column])) for row in history]
    # README: model, dataset, batch_size, epochs, model.learning_rate, precision and every key its
    # overrides set, with its final metrics.
    keys = {"model", "dataset", "batch_size", "epochs", "model.learning_rate", "precision"}
    overridden = {item.split("=")[0] for job in folders for item in read_overrides(job)}
    assert {info["name"] for info in experiment["hparamInfos"]} == keys | overridden
    final = {info["name"]["tag"] for info in experiment["metricInfos"] if not info["name"]["group"]}
    assert final == set(HPARAM_METRICS)


def test_tensorboard_on_the_sweep_folder_lists_one_hparams_session_per_job(readme_sweep):
    assert PLACEHOLDER in tensorboard_logdirs()["docs/sweeps.md"]  # the sweep folder
    sessions_expected = {f"{job.name}/tensorboard" for job in jobs(readme_sweep)}
    with tensorboard(str(sweep_folder(readme_sweep)), readme_sweep, sessions_expected) as url:
        groups = post_json(url, "/data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 100,
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        })["sessionGroups"]
    sessions = {group["sessions"][0]["name"]: group for group in groups}
    assert [len(group["sessions"]) for group in groups] == [1, 1]
    assert set(sessions) == sessions_expected
    for job in jobs(readme_sweep):
        group, metrics = sessions[f"{job.name}/tensorboard"], read_metrics(job)
        swept = f"model.learning_rate={group['hparams']['model.learning_rate']}"
        assert swept in job.name.split(",")
        final = {value["name"]["tag"]: value["value"] for value in group["metricValues"]
                 if not value["name"]["group"]}
        assert final == {name: pytest.approx(metrics[name]) for name in HPARAM_METRICS}


@pytest.mark.slow  # a few profiled training steps
def test_the_profile_tab_on_a_profiling_folder_needs_tensorboards_profile_plugin(tmp_path):
    """docs/devices.md: `tensorboard --logdir` on the profiling folder, Profile tab. TensorBoard
    serves the trace of debug=profiling only through the tensorboard-plugin-profile package, which
    the requirements do not install: without it, its Profile tab is a note saying to install it."""
    from runner.device.debug import tf_debug_tools
    from tests.test_debug import debug_cfg, fit_a_small_model

    assert PLACEHOLDER in tensorboard_logdirs()["docs/devices.md"]  # debug.profiling.path
    path = tmp_path / "profiling"
    cfg = debug_cfg(["debug=profiling", f"debug.profiling.path={path}"], tmp_path)
    with tf_debug_tools(cfg, "cpu") as callbacks:
        fit_a_small_model(callbacks, steps=cfg.profiling.start_step + cfg.profiling.num_steps)
    assert list((path / "plugins" / "profile").rglob("*.xplane.pb"))  # where that plugin reads
    with serving("tensorboard", ["--logdir", str(path)], tmp_path, "/data/plugins_listing") as url:
        plugins = get_json(url, "/data/plugins_listing")
    assert util.find_spec("tensorboard_plugin_profile") is None and "profile" not in plugins
    assert plugins["profile_redirect"]["tab_name"] == "Profile"
    assert "tensorboard-plugin-profile" in (ROOT / "docs" / "devices.md").read_text()


# --- tfds build ------------------------------------------------------------------------------

def tfds_cli_module() -> Any:
    """The module the `tfds` console script runs, imported as the script imports it."""
    (script,) = [entry for entry in metadata.distribution("tensorflow-datasets").entry_points
                 if entry.group == "console_scripts" and entry.name == "tfds"]
    return importlib.import_module(script.value.split(":")[0])


@pytest.mark.skipif(not TFDS_CLI_NEEDS_BEAM, reason="this TFDS's `tfds` starts without Apache Beam")
@pytest.mark.skipif(TFDS_CLI_NEEDS_BEAM, reason="TFDS 4.9's `tfds` needs Apache Beam")
@pytest.mark.parametrize("name", sorted(tfds_build_commands()))
def test_readmes_tfds_build_command_parses_with_tfds_own_parser(name, tmp_path):
    arguments = [a.replace("DIR", str(tmp_path)) for a in tfds_build_commands()[name]]
    parsed = tfds_cli_module()._parse_flags(["tfds", *arguments])
    assert parsed.datasets == [name] and Path(parsed.data_dir) == tmp_path


def test_readmes_tfds_load_call_is_one_tfds_load_takes():
    """`tfds.load('NAME', data_dir='DIR')` (README and the runner's missing-folder message): the
    arguments bind to the installed TFDS's tfds.load, with download left at its default, True."""
    import inspect

    import tensorflow_datasets as tfds

    signature = inspect.signature(tfds.load)
    for name in tfds_load_calls():
        bound = signature.bind(name, data_dir="DIR")
        bound.apply_defaults()
        assert bound.arguments["download"] is True


def readme_version_overrides() -> set[str]:
    """The versions README tells a user to ask for with `dataset.version=X.Y.Z` (for a TFDS that
    builds a dataset at another version than its table's folder)."""
    return set(re.findall(r"`dataset\.version=(\d+\.\d+\.\d+)`", README))


@pytest.mark.parametrize("name", ["tf_flowers", "cats_vs_dogs"])
def test_tfds_builds_the_folder_readme_states(name, tmp_path):
    """The real builder's folder, metadata files and shard names (TFDS's own naming, as its
    download_and_prepare uses it), without downloading; and the project's TFDS fixture, which
    writes through the same code, leaves exactly README's files in README's folder."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import naming

    from tests.data_fixtures import tfds_offline, write_tfds_folder

    version, files = readme_layouts()[name]
    (shard_pattern,) = [f for f in files if "*" in f]
    metadata_files = sorted(f for f in files if "*" not in f)
    (tmp_path / "metadata").mkdir()
    with tfds_offline():  # the builder's info is read lazily: all of it in here
        builder = tfds.builder(name, data_dir=str(tmp_path / "real"))
        builder.info.write_to_directory(str(tmp_path / "metadata"))
        shards = naming.ShardedFileTemplate(
            data_dir=builder.data_path, dataset_name=builder.name, split="train",
            filetype_suffix=builder.info.file_format.file_suffix,
        ).sharded_filepaths(num_shards=2)
    # README's table folder, or the version README says to ask for where this TFDS builds another
    built = str(builder.version)
    assert built == version or built in readme_version_overrides(), (built, version)
    assert Path(builder.data_path) == tmp_path / "real" / name / built
    assert sorted(p.name for p in (tmp_path / "metadata").iterdir()) == metadata_files
    assert [fnmatch.fnmatch(Path(shard).name, shard_pattern) for shard in shards] == [True, True]

    fixture = write_tfds_folder(tmp_path / "fixture", name, version, ("a", "b"), per_class=2)
    assert fixture == tmp_path / "fixture" / name / version
    names = sorted(p.name for p in fixture.iterdir())
    assert [n for n in names if not fnmatch.fnmatch(n, shard_pattern)] == metadata_files, names
    assert any(fnmatch.fnmatch(n, shard_pattern) for n in names), names
