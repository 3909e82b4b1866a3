"""The Ascend ModelZoo scripts: flags -> overrides as pure Python, then the real scripts on tiny data."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from runner.ascend import (
    FULL,
    PERFORMANCE_DYNAMIC,
    PERFORMANCE_STATIC,
    SCRIPTS,
    closing_figures,
    set_aside,
    translate,
)
from runner.errors import ConfigError
from tests.bit_fixtures import write_bit_savedmodel
from tests.conftest import compose_config, runner_env
from tests.data_fixtures import write_tfds_folder

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "scripts" / "ascend"
FIGURES = ("ActualFPS", "TrainingTime", "TrainAccuracy", "ActualLoss", "E2ETrainingTime",
           "CaseName", "BatchSize", "DeviceType")
# Runner overrides after the flags shrink each recipe to seconds on this CPU.
TINY = {
    "bit": ["dataset.image_size=40", "model.crop_size=32", "steps_per_epoch=3"],
    "learnable_resizer": ["dataset.image_size=64", "model.target_size=32", "steps_per_epoch=2"],
}


def parsed(overrides: list[str]) -> dict[str, object]:
    """key -> value as Hydra itself parses the override strings (quoting included)."""
    return {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(overrides)}


@pytest.mark.parametrize("recipe", ["bit", "learnable_resizer"])
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_each_script_composes_its_recipe(recipe, script, tmp_path, monkeypatch):
    monkeypatch.setenv("ASCEND_DEVICE_ID", "3")
    translation = translate(recipe, script, ["--data_path=/home/data", "--device=cpu"], cwd=tmp_path)
    assert translation.run_dir == tmp_path / "output" / "3"
    runner_overrides = [o for o in translation.overrides if not o.startswith("hydra.")]
    cfg = compose_config(runner_overrides, tmp_path / "run")
    assert cfg.dataset.data_dir == "/home/data" and cfg.device.type == "cpu"
    assert cfg.precision.mode == "allow_mix_precision"  # the ModelZoo scripts' default
    assert cfg.static_shape == {FULL: None, PERFORMANCE_STATIC: True, PERFORMANCE_DYNAMIC: False}[script]
    recipe_epochs = 15 if recipe == "bit" else 5
    assert cfg.epochs == (recipe_epochs if script == FULL else {"bit": 3, "learnable_resizer": 1}[recipe])


def test_both_spellings_translate_alike(tmp_path):
    bit_style = ["--data_dir=/d", "--epochs=7", "--eval_static=True", "--batch_size=32"]
    resizer_style = ["--data_path=/d", "--epoch=7", "--static=True", "--batch_size=32"]
    one, two = (translate("learnable_resizer", FULL, a, cwd=tmp_path) for a in (bit_style, resizer_style))
    assert one.overrides == two.overrides
    values = parsed(one.overrides)
    assert values["epochs"] == 7 and values["static_shape"] is True and values["batch_size"] == 32


def test_debug_flags_become_one_debug_list_and_its_keys(tmp_path):
    argv = [
        "--data_path=/d", "--precision_mode=force_fp16", "--log_steps=5",
        "--over_dump=True", "--over_dump_path=/o",
        "--data_dump_flag=True", "--data_dump_path=/dump dir", "--data_dump_step=0|5|10-20",
        "--profiling=True", "--profiling_dump_path=/p",
        "--use_mixlist=True", "--mixlist_file=ops_info.json",
        "--fusion_off_flag=True", "--fusion_off_file=fusion_switch.cfg", "--auto_tune=True",
    ]
    values = parsed(translate("learnable_resizer", FULL, argv, cwd=tmp_path).overrides)
    assert values["debug"] == ["overflow", "dump", "profiling", "mixlist", "fusion_off", "auto_tune"]
    assert values["debug.overflow.path"] == "/o" and values["debug.profiling.path"] == "/p"
    assert values["debug.dump.path"] == "/dump dir" and values["debug.dump.step"] == "0|5|10-20"
    assert values["debug.mixlist.file"] == "ops_info.json"
    assert values["debug.fusion_off.file"] == "fusion_switch.cfg"
    assert values["precision"] == "force_fp16" and values["log_steps"] == 5


def test_debug_switches_set_to_false_add_nothing(tmp_path):
    argv = ["--data_path=/d", "--over_dump=False", "--over_dump_path=/o", "--profiling=False"]
    overrides = translate("bit", FULL, argv, cwd=tmp_path).overrides
    assert not [o for o in overrides if o.startswith("debug")]


@pytest.mark.parametrize(
    ("recipe", "argv", "named"),
    [
        ("bit", ["--data_path=/d", "--auto_tune=True"], "--auto_tune"),  # the resizer's flag only
        ("learnable_resizer", ["--data_path=/d", "--lr=0.1", "stray"], "--lr, stray"),
        ("bit", ["--data_path=/d", "--over_dump=maybe"], "--over_dump=maybe"),
        ("bit", ["--data_path=/d", "--epochs=0"], "--epochs=0"),
        ("bit", ["--epochs=3"], "--data_path"),
        ("bit", ["--data_path=/d", "--device=tpu"], "--device=tpu"),
    ],
)
def test_bad_flags_are_named(recipe, argv, named, tmp_path):
    with pytest.raises(ConfigError, match=named.replace("|", r"\|")):
        translate(recipe, FULL, argv, cwd=tmp_path)


def test_figures_are_the_runs_own_named_after_the_script():
    metrics = {"ActualFPS": 320.0, "TrainingTime": 200.0, "TrainAccuracy": 0.9, "ActualLoss": 0.25,
               "E2ETrainingTime": 81.4, "DeviceType": "npu", "RankSize": 1, "BatchSize": 64}
    figures = closing_figures(metrics, "bit_ID2496_for_TensorFlow2.X", "perf")
    assert figures["TrainingTime"] == "200.00" and figures["E2ETrainingTime"] == "81"
    assert figures["CaseName"] == "bit_ID2496_for_TensorFlow2.X_bs64_1p_perf"
    assert figures["ActualFPS"] == "320.00" and figures["TrainAccuracy"] == "0.9000"
    assert figures["Device"] == "npu"


def test_an_earlier_run_is_moved_aside_not_deleted(tmp_path):
    run_dir = tmp_path / "output" / "0"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text("{}")
    moved = set_aside(run_dir)
    assert (moved / "metrics.json").is_file() and not run_dir.exists()
    assert set_aside(run_dir) is None


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Both seeds' data layouts in one folder: tf_flowers + ttst/ (BiT), cats_vs_dogs (resizer)."""
    root = tmp_path_factory.mktemp("ascend_data")
    write_tfds_folder(root, "tf_flowers", "3.0.1", per_class=4, size=32)
    write_bit_savedmodel(root / "ttst", feature_dim=8)
    write_tfds_folder(root, "cats_vs_dogs", "4.0.0", ("cat", "dog"), per_class=10, size=32)
    return root


def run_script(recipe: str, script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**runner_env(), "PYTHON": sys.executable, "ASCEND_DEVICE_ID": "1"}
    return subprocess.run(
        ["bash", str(SCRIPTS_DIR / recipe / f"{script}.sh"), *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300,
    )


def figures_printed(stdout: str) -> dict[str, str]:
    closing = stdout.split("Final result")[-1]
    return dict(line.split(" = ", 1) for line in closing.splitlines() if " = " in line)


@pytest.mark.parametrize(
    ("recipe", "script"),
    [("bit", FULL), ("bit", PERFORMANCE_STATIC), ("bit", PERFORMANCE_DYNAMIC),
     ("learnable_resizer", PERFORMANCE_STATIC)],  # the resizer's DenseNet costs ~1 min a run here
)
def test_script_runs_on_tiny_data_and_prints_the_figures(recipe, script, data_dir, tmp_path):
    result = run_script(
        recipe, script, f"--data_path={data_dir}", "--device=cpu", "--batch_size=2", "--epoch=1",
        "--log_steps=1", *TINY[recipe], cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "output" / "1"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    figures = figures_printed(result.stdout)
    assert set(FIGURES) <= figures.keys()
    assert float(figures["ActualFPS"]) == pytest.approx(metrics["images_per_sec"], abs=0.01)
    assert float(figures["TrainingTime"]) == pytest.approx(metrics["TrainingTime"], abs=0.01)
    # ms per step of a batch of 2 (metrics.json rounds images_per_sec to 2 decimals)
    assert metrics["TrainingTime"] == pytest.approx(2000 / metrics["images_per_sec"], rel=0.05)
    assert float(figures["ActualLoss"]) == pytest.approx(metrics["train_loss"], abs=1e-4)
    assert figures["BatchSize"] == "2" and figures["CaseName"].endswith("_bs2_1p_" + (
        "acc" if script == FULL else "perf"))
    assert (run_dir / f"{figures['CaseName']}.log").read_text().count(" = ") == len(figures)


def test_a_script_names_an_unknown_flag_and_exits_2(tmp_path):
    result = run_script("learnable_resizer", FULL, "--data_path=/d", "--no_such_flag=1", cwd=tmp_path)
    assert result.returncode == 2 and "--no_such_flag" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "output").exists()
