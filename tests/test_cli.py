"""`python -m runner` as a user runs it: real subprocesses, real exit codes, fast config commands."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from runner.errors import ConfigError
from tests.conftest import CONF_DIR, ON_ASCEND_STACK, compose_config, runner_env


def run_runner(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "runner", *args],
        capture_output=True, text=True, env=runner_env(), timeout=timeout,
    )


def imports_tensorflow(result: subprocess.CompletedProcess) -> bool:
    return any(line.rstrip().endswith("| tensorflow") for line in result.stderr.splitlines())


def test_a_real_run_writes_its_run_directory(tmp_path, toy_bit_run):
    run_dir = tmp_path / "run"
    result = run_runner(*toy_bit_run, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 2
    overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert "steps_per_epoch=3" in overrides
    assert (run_dir / ".hydra" / "hydra.yaml").is_file()
    # docs/devices.md: device=cpu is TensorFlow's default strategy; the CPU trains in float32 and
    # metrics.json records the policy.
    env = json.loads((run_dir / "env.json").read_text())
    assert env["device"]["strategy"] == "_DefaultDistributionStrategy"
    assert metrics["precision_policy"] == "float32"
    # docs/sweeps.md: the run held run.lock until its end (its pid and host stay in the file).
    from runner.record.lock import lock_holder, read_holder

    assert lock_holder(run_dir) is None
    assert read_holder(run_dir).host == socket.gethostname()


def test_cfg_job_and_help_do_not_import_tensorflow():
    job = run_runner("--cfg", "job", "model=densenet", timeout=60)
    assert job.returncode == 0 and "learnable_resizer: false" in job.stdout
    assert not imports_tensorflow(job)
    help_ = run_runner("--help", timeout=60)
    assert help_.returncode == 0 and "model: densenet, resizer_densenet" in help_.stdout.replace(
        "bit, ", ""
    )
    assert not imports_tensorflow(help_)


def test_bad_value_exits_non_zero_with_one_paragraph_and_no_tensorflow(tmp_path):
    result = run_runner("batch_size=0", f"hydra.run.dir={tmp_path / 'run'}", timeout=60)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "| " not in line]  # not importtime
    assert "Traceback" not in result.stderr
    assert any("batch_size=0 must be a positive integer" in line for line in errors)
    assert len(errors) <= 3
    assert not imports_tensorflow(result)
    assert not (tmp_path / "run").exists()  # no run folder for a mistake: nothing ran


def test_a_config_mistake_keeps_a_resumed_folder_as_it_was(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "status.json").write_text('{"status": "interrupted"}')
    result = run_runner("batch_size=0", f"hydra.run.dir={run_dir}", timeout=60)
    assert result.returncode == 2
    assert [p.name for p in run_dir.iterdir()] == ["status.json"]
    assert (run_dir / "status.json").read_text() == '{"status": "interrupted"}'


def test_missing_dataset_folder_names_the_folder_and_the_fix(tmp_path):
    missing = tmp_path / "nope"
    result = run_runner(
        "dataset=tf_flowers", f"dataset.data_dir={missing}", f"hydra.run.dir={tmp_path / 'run'}",
        timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(missing) in result.stderr and "tfds build tf_flowers" in result.stderr


def config_error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """stderr without -X importtime's lines."""
    return [line for line in result.stderr.splitlines() if "| " not in line]


def test_unknown_group_option_lists_the_choices(tmp_path):
    result = run_runner("device=tpu", f"hydra.run.dir={tmp_path / 'run'}", timeout=60)
    assert result.returncode == 2
    assert "tpu" in result.stderr and "cpu gpu npu" in result.stderr
    assert not imports_tensorflow(result)


def test_an_unknown_option_in_a_group_list_lists_the_groups_options():
    """`debug=[dump,profilng]`: Hydra names the file it could not load, and no options."""
    from hydra.errors import ConfigCompositionException

    from runner.__main__ import hydra_error_message

    with pytest.raises(ConfigCompositionException) as caught:
        compose_config(["debug=[dump,profilng]"])
    message = hydra_error_message(caught.value)
    options = sorted(p.stem for p in (Path(CONF_DIR) / "debug").glob("*.yaml"))
    assert all(option in message for option in options)
    assert "profiling?" in message  # the close match


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("device=tpu", "Could not find 'device/tpu'"),  # unknown group option
        ("batch_sise=32", "batch_sise is not a key of the config. Did you mean batch_size?"),
        ("model.learning_rat=0.1", "Did you mean model.learning_rate?"),  # unknown key in a group
        ("batch_size=abc", "'abc' of type 'str' could not be converted to Integer"),  # wrong type
        ("model.learning_rate=abc", "model.learning_rate=abc Value 'abc' of type 'str' could not be "
                                    "converted to Float"),  # wrong type in a group
        ("device.type=tpu", "expected one of [cpu, gpu, npu]"),  # bad enum value
    ],
)
def test_every_hydra_config_mistake_exits_2_with_one_paragraph(tmp_path, override, named):
    """README: a config mistake is one paragraph on stderr and exit code 2, before TensorFlow
    (Hydra's own path exits 1 with its search path when the runner does not catch it)."""
    result = run_runner(override, f"hydra.run.dir={tmp_path / 'run'}", timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = config_error_lines(result)
    assert len(errors) == 1 and named in errors[0], errors
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
    assert "To append to your config use +" not in errors[0]  # Hydra's advice: the key is ignored
    assert not imports_tensorflow(result)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("override", "named"),
    [("+model.learning_rat=0.1", "Did you mean model.learning_rate?"), ("+foo=1", "adds the key foo")],
)
def test_a_key_added_with_plus_that_no_config_has_exits_2(tmp_path, override, named):
    """`+key=value` would add a key the runner never reads: refused before TensorFlow, naming the
    key and the close one, so that a misspelt key is not silently ignored."""
    result = run_runner(override, f"hydra.run.dir={tmp_path / 'run'}", timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert any(named in line and "without the +" in line for line in result.stderr.splitlines())
    assert not imports_tensorflow(result)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_sweep_with_a_wrong_type_exits_2_before_any_job(tmp_path):
    result = run_runner("-m", "batch_size=16,abc", f"hydra.sweep.dir={tmp_path / 'sweep'}", timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(config_error_lines(result)) == 1
    assert not imports_tensorflow(result)
    assert not [p for p in (tmp_path / "sweep").glob("*") if p.is_dir()]  # no job folder


def test_a_run_whose_loss_becomes_nan_exits_1_and_records_failed(tmp_path, toy_bit_run):
    run_dir = tmp_path / "run"
    result = run_runner(*toy_bit_run, "model.learning_rate=1e40", f"hydra.run.dir={run_dir}")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and status["error"] == "TrainingDiverged"
    # docs/sweeps.md: the message names the learning rate and the batch size.
    assert "TerminateOnNaN" in status["reason"] and "model.learning_rate" in status["reason"]
    assert "batch_size (now 16)" in status["reason"]
    assert not (run_dir / "metrics.json").exists()


def test_help_maps_every_ascend_flag_to_its_override_without_tensorflow():
    help_ = run_runner("--help", timeout=60)
    assert help_.returncode == 0 and not imports_tensorflow(help_)
    flags = (
        "precision_mode", "over_dump", "over_dump_path", "data_dump_flag", "data_dump_step",
        "data_dump_path", "profiling", "profiling_dump_path", "use_mixlist", "mixlist_file",
        "fusion_off_flag", "fusion_off_file", "auto_tune", "data_dir", "data_path", "batch_size",
        "epochs", "epoch", "eval_static", "static", "log_steps",
    )
    for flag in flags:
        assert f"--{flag}" in help_.stdout, flag
    assert "debug: auto_tune, dump, fusion_off, mixlist, none, overflow, profiling" in help_.stdout


@pytest.mark.parametrize(("overrides", "environment", "named"), [
    (["device.multi_worker=true"], {}, "needs TF_CONFIG"),
    (["device.multi_worker=true"], {"TF_CONFIG": "{not json"}, "TF_CONFIG='{not json' is not a valid"),
    (["device=npu", "device.num_devices=8"], {"RANK_SIZE": "8"}, "RANK_ID, RANK_TABLE_FILE are not set"),
])
def test_a_missing_or_bad_worker_variable_stops_before_tensorflow(tmp_path, overrides, environment, named):
    """docs/devices.md: missing or inconsistent RANK_*/TF_CONFIG variables stop the run before
    TensorFlow starts, naming the variable and the fix."""
    env = {key: value for key, value in runner_env().items()
           if key not in ("TF_CONFIG", "RANK_SIZE", "RANK_ID", "RANK_TABLE_FILE")}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "runner", *overrides,
         f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, env={**env, **environment}, timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert named in result.stderr and not imports_tensorflow(result)


def test_npu_without_its_adapter_exits_non_zero_and_writes_no_metrics(tmp_path):
    result = run_runner("device=npu", f"hydra.run.dir={tmp_path / 'run'}", timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    # The default stack stops at the config check, the Ascend stack when npu_device is not found.
    expected = "ships with CANN's TensorFlow adapter" if ON_ASCEND_STACK else "requirements-ascend-host.lock"
    assert expected in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_the_command_reads_its_configs_from_any_working_folder(tmp_path):
    """The `runner` command (pip install -e .) starts wherever the user is, not only in the clone."""
    result = subprocess.run(
        [sys.executable, "-m", "runner", "--cfg", "job", "model=bit"], capture_output=True, text=True,
        env=runner_env(), cwd=tmp_path, timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "name: bit" in result.stdout


def test_the_project_builds_with_a_runner_command_and_its_packages(tmp_path):
    """pyproject.toml: `pip install -e .` gives a `runner` command running runner.__main__.run, with
    the runner, models and data packages (built here as a wheel, offline)."""
    import zipfile

    from runner.versions import installed_version

    setuptools_major = int(installed_version("setuptools").split(".")[0])
    if setuptools_major < 64:
        pytest.skip(f"setuptools {setuptools_major} predates PEP 660 (pip's build takes a newer one)")
    root, source = Path(__file__).resolve().parent.parent, tmp_path / "clone"
    for folder in ("runner", "models", "data", "hydra_plugins"):  # a copy: setuptools builds in the tree
        shutil.copytree(root / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(root / "pyproject.toml", source)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
         str(tmp_path), str(source)], capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    with zipfile.ZipFile(next(tmp_path.glob("runner-*.whl"))) as wheel:
        names = wheel.namelist()
        entry_points = next(wheel.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "runner = runner.__main__:run" in entry_points
    assert {"runner/__main__.py", "runner/train.py", "models/bit.py", "data/pipeline.py",
            "hydra_plugins/device_pool_launcher/launcher.py"} <= set(names)
    from runner.__main__ import run

    assert callable(run)


def test_a_misspelt_tool_option_is_named_and_run_config_keys_pass_through():
    from runner.evaluate import TOOL
    from runner.tools.cli import parse_arguments

    with pytest.raises(ConfigError) as caught:
        parse_arguments(["run=/r", "wich=last"], TOOL)
    assert "which" in str(caught.value).replace("wich", "")
    args = parse_arguments(["run=/r", "which=last", "batch_size=16", "seed=3", "dataset.path=/d"], TOOL)
    assert args.options["which"] == "last"
    assert list(args.overrides) == ["batch_size=16", "seed=3", "dataset.path=/d"]
