"""The Ascend ModelZoo scripts: flags -> overrides as pure Python, then the real scripts on tiny data,
their console log parsed the way the originals' test/*.sh read it (grep a line, take a field).

The originals: Ascend/ModelZoo-TensorFlow, TensorFlow2/built-in/keras_sample/cv/
bit_ID2496_for_TensorFlow2.X and learnable_resizer_ID2518_for_TensorFlow2.X (docs/ascend.md).
"""
from __future__ import annotations

import io
import json
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from runner.ascend.modelzoo import SLOW_STEP_SECONDS, ResizerLines, epoch_line
from runner.ascend.scripts import (
    FLAGS,
    FULL,
    PERFORMANCE,
    PERFORMANCE_DYNAMIC,
    PERFORMANCE_STATIC,
    RECIPES,
    closing_figures,
    set_aside,
    translate,
    why_it_failed,
)
from runner.errors import ConfigError
from tests.bit_fixtures import write_bit_savedmodel
from tests.conftest import FAKE_NPU_DIR, ON_ASCEND_STACK, compose_config, runner_env
from tests.data_fixtures import write_tfds_folder

pytestmark = pytest.mark.ascend_stack  # the scripts are for Ascend users: both stacks run them

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "scripts" / "ascend"
BIT, RESIZER = "bit", "learnable_resizer"
NETWORK = {BIT: "bit_ID2496_for_TensorFlow2.X", RESIZER: "learnable_resizer_ID2518_for_TensorFlow2.X"}
# (epochs, static shapes, CaseName suffix) of each original script, read from its test/*.sh;
# None: the recipe's own epochs (15 for BiT, 5 for the resizer), which the full scripts pass.
ORIGINALS = {
    (BIT, FULL): (15, True, "acc"),
    (BIT, PERFORMANCE_STATIC): (5, True, "perf"),
    (BIT, PERFORMANCE_DYNAMIC): (1, False, "dynamic_perf"),
    (RESIZER, FULL): (5, True, "acc"),
    (RESIZER, PERFORMANCE_STATIC): (3, True, "perf"),
    (RESIZER, PERFORMANCE_DYNAMIC): (1, False, "perf"),
    (RESIZER, PERFORMANCE): (2, False, "perf"),
}
LOG_KEYS = ["Network", "RankSize", "BatchSize", "DeviceType", "CaseName", "ActualFPS", "TrainingTime",
            "TrainAccuracy", "ActualLoss", "E2ETrainingTime"]


def parsed(overrides: list[str]) -> dict[str, object]:
    """key -> value as Hydra itself parses the override strings (quoting included)."""
    return {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(overrides)}


def docs_script_table() -> dict[tuple[str, str], tuple[int, bool, str]]:
    """docs/ascend.md's table of scripts: (recipe, script) -> (epochs, static shapes, CaseName end)."""
    rows, recipe = {}, None
    for line in (SCRIPTS_DIR.parent.parent / "docs" / "ascend.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 5 or not cells[1].endswith(".sh`"):
            continue
        recipe = cells[0].split("`")[1] if cells[0] else recipe  # blank: the row above's recipe
        epochs = int(cells[2].split()[0])
        rows[(recipe, cells[1].strip("`")[: -len(".sh")])] = (
            epochs, cells[3] == "static", cells[4].strip("`").lstrip("_"),
        )
    return rows


def test_the_docs_table_of_scripts_is_the_originals():
    assert docs_script_table() == ORIGINALS


FLAG = re.compile(r"`(--\w+)")
OVERRIDE = re.compile(r"`([\w.]+)=([^`]*)`")
DEFAULT = re.compile(r"\(default `<recipe>/([\w/.]+)`\)")


def docs_flag_table() -> list[tuple[list[str], str]]:
    """docs/ascend.md's table of flags: (the flags a row names, its override cell)."""
    text = (SCRIPTS_DIR.parent.parent / "docs" / "ascend.md").read_text()
    table = text.split("## Flags", 1)[1].split("\n\n")[1]
    rows = [line.strip().strip("|").split(" | ") for line in table.splitlines()[2:]]
    return [(FLAG.findall(flags), override) for flags, override in rows]


def sample_argv(flags: list[str]) -> list[str]:
    """A value of each flag's kind: booleans on, paths, numbers; --data_path always given."""
    samples = {bool: "True", int: "3", str: "/x"}
    values = {"--precision_mode": "allow_fp32_to_fp16", "--device": "cpu"}
    argv = [f"{flag}={values.get(flag, samples[FLAGS[flag][1]])}" for flag in flags]
    return argv if {"--data_path", "--data_dir"} & set(flags) else ["--data_path=/d", *argv]


def test_the_docs_table_of_flags_names_every_flag_once():
    named = [flag for flags, _ in docs_flag_table() for flag in flags]
    assert sorted(named) == sorted(FLAGS)
    readme = (SCRIPTS_DIR.parent.parent / "README.md").read_text()
    # The README paragraphs about the scripts name only flags they take.
    about_scripts = " ".join(p for p in readme.split("\n\n") if "scripts/ascend/" in p and "`--" in p)
    assert FLAG.findall(about_scripts) and set(FLAG.findall(about_scripts)) <= set(FLAGS)


@pytest.mark.parametrize(("flags", "override"), docs_flag_table(),
                         ids=[flags[0] for flags, _ in docs_flag_table()])
def test_each_flag_becomes_the_override_the_docs_table_names(flags, override, tmp_path):
    """Every `key=value` of the row's override cell is in the translation (the value too unless
    it is a placeholder: `...`, `<mode>`, `true|false`); a `(default <recipe>/...)` is the
    path the override takes when only the switch is given."""
    recipe_dir = tmp_path / RESIZER  # the recipe with every flag (--auto_tune)
    translation = translate(recipe_dir / "test", FULL, sample_argv(flags))
    values = parsed([o for o in translation.overrides if not o.startswith("hydra.run")])
    documented = OVERRIDE.findall(override)
    for key, value in documented:
        assert key in values, f"{flags}: {key} not in {translation.overrides}"
        if value in ("true\\|false",):
            assert values[key] is True, (key, values[key])
        elif "..." not in value and "<" not in value:
            assert values[key] == parsed([f"{key}={value}"])[key], (key, values[key])
    for default in DEFAULT.findall(override):
        switch_only = ["--data_path=/d", *(a for a in sample_argv(flags) if a.endswith("=True"))]
        defaults = parsed(translate(recipe_dir / "test", FULL, switch_only).overrides)
        assert str(recipe_dir / default) in defaults.values(), (default, defaults)
    if "--output_dir" in flags:  # not an override: the run folder itself
        assert translation.run_dir == Path("/x")
    else:
        assert documented, f"{flags}: the row names no override"


def test_every_original_script_has_its_translation():
    assert {(recipe, script) for recipe, r in RECIPES.items() for script in r.scripts} == set(ORIGINALS)


def test_each_script_is_one_line_handing_its_folder_name_and_flags_to_the_launcher():
    """docs/ascend.md: `scripts/ascend/<recipe>/test/*.sh`, each one line handing its folder, its
    name and its flags to runner/ascend/scripts.py through scripts/ascend/launch.sh."""
    assert {(sh.parent.parent.name, sh.stem) for sh in SCRIPTS_DIR.glob("*/test/*.sh")} == set(ORIGINALS)
    for recipe, script in ORIGINALS:
        lines = (SCRIPTS_DIR / recipe / "test" / f"{script}.sh").read_text().splitlines()
        assert [line for line in lines if not line.startswith("#")] == [
            f'exec "$(dirname "$0")/../../launch.sh" "$(dirname "$0")" {script} "$@"']


@pytest.mark.parametrize(("recipe", "script"), list(ORIGINALS))
def test_each_script_composes_its_recipe(recipe, script, tmp_path, monkeypatch):
    from runner.device.strategy import static_shape

    monkeypatch.setenv("ASCEND_DEVICE_ID", "3")
    test_dir = tmp_path / recipe / "test"
    translation = translate(test_dir, script, ["--data_path=/home/data", "--device=cpu"])
    assert translation.run_dir == test_dir / "output" / "3"
    assert translation.log_file == test_dir / "output" / "3" / "train_3.log"
    runner_overrides = [o for o in translation.overrides if not o.startswith("hydra")]
    cfg = compose_config(runner_overrides, tmp_path / "run")
    epochs, static, case = ORIGINALS[(recipe, script)]
    assert (cfg.epochs, cfg.static_shape, cfg.case_kind) == (epochs, static, case)
    assert cfg.dataset.data_dir == "/home/data" and cfg.device.type == "cpu"
    if recipe == BIT:  # docs/ascend.md: BiT's model.handle follows --data_path, <data_dir>/ttst
        assert cfg.model.handle == "/home/data/ttst"
    assert cfg.precision.mode == "allow_mix_precision"  # the ModelZoo scripts' default
    assert cfg.modelzoo == recipe and cfg.batch_size == 64
    assert cfg.log_steps == {BIT: 1, RESIZER: 145}[recipe]  # the train.py defaults
    # docs/ascend.md: BiT trains 10 steps per epoch; the resizer makes one pass over its split
    assert cfg.steps_per_epoch == {BIT: 10, RESIZER: None}[recipe]
    # drop_remainder batches, on every device (here the CPU)
    assert static_shape(cfg.static_shape, cfg.device.type) is static
    assert "hydra/job_logging=modelzoo" in translation.overrides


def test_without_ascend_device_id_the_run_goes_to_output_0(tmp_path, monkeypatch):
    """docs/ascend.md: ASCEND_DEVICE_ID unset means `0`, npu_device's own default:
    `test/output/0/train_0.log` (the originals: `test/output/` and `train_.log`)."""
    monkeypatch.delenv("ASCEND_DEVICE_ID", raising=False)
    test_dir = tmp_path / BIT / "test"
    translation = translate(test_dir, FULL, ["--data_path=/d"])
    assert translation.log_file == test_dir / "output" / "0" / "train_0.log"


def test_both_spellings_translate_alike(tmp_path):
    bit_style = ["--data_dir=/d", "--epochs=7", "--eval_static=True", "--batch_size=32"]
    resizer_style = ["--data_path=/d", "--epoch=7", "--static=True", "--batch_size=32"]
    test_dir = tmp_path / RESIZER / "test"
    one, two = (translate(test_dir, PERFORMANCE, argv) for argv in (bit_style, resizer_style))
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
    values = parsed(translate(tmp_path / RESIZER / "test", FULL, argv).overrides)
    assert values["debug"] == ["overflow", "dump", "profiling", "mixlist", "fusion_off", "auto_tune"]
    assert values["debug.overflow.path"] == "/o" and values["debug.profiling.path"] == "/p"
    # Both dumps on: one dump_path, the overflow's (the originals set it last); every tensor.
    assert values["debug.dump.path"] == "/o" and values["debug.dump.mode"] == "all"
    assert values["debug.dump.step"] == "0|5|10-20"
    assert values["debug.mixlist.file"] == "ops_info.json"
    assert values["debug.fusion_off.file"] == "fusion_switch.cfg"
    assert values["precision"] == "force_fp16" and values["log_steps"] == 5


def test_dump_options_on_the_npu_are_the_originals(tmp_path):
    from runner.device.npu import npu_options

    recipe_dir = tmp_path / BIT
    argv = ["--data_path=/d", "--data_dump_flag=True", "--over_dump=True", "--data_dump_step=10"]
    translation = translate(recipe_dir / "test", FULL, argv)
    cfg = compose_config([o for o in translation.overrides if not o.startswith("hydra")], tmp_path)
    assert npu_options(cfg.precision.mode, cfg.debug, cfg.device, None)["dump_config"] == {
        "enable_dump": True, "dump_path": str(recipe_dir / "output" / "overflow_dump"),
        "dump_step": "10", "dump_mode": "all",
        "enable_dump_debug": True, "dump_debug_mode": "all",
    }


def test_default_debug_paths_are_the_originals(tmp_path):
    recipe_dir = tmp_path / BIT
    argv = ["--data_path=/d", "--data_dump_flag=True", "--profiling=True", "--use_mixlist=True",
            "--fusion_off_flag=True"]
    translation = translate(recipe_dir / "test", FULL, argv)
    values = parsed(translation.overrides)
    assert values["debug.mixlist.file"] == str(recipe_dir / "configs" / "ops_info.json")
    assert values["debug.fusion_off.file"] == str(recipe_dir / "configs" / "fusion_switch.cfg")
    assert values["debug.dump.path"] == str(recipe_dir / "output" / "data_dump")
    assert values["debug.profiling.path"] == str(recipe_dir / "output" / "profiling")
    output = recipe_dir / "output"
    assert translation.debug_folders == [output / "data_dump", output / "profiling"]


def test_debug_switches_set_to_false_add_nothing(tmp_path):
    argv = ["--data_path=/d", "--over_dump=False", "--over_dump_path=/o", "--profiling=False"]
    translation = translate(tmp_path / BIT / "test", FULL, argv)
    assert not [o for o in translation.overrides if o.startswith("debug")]
    assert translation.debug_folders == []


@pytest.mark.parametrize(("flag", "on"), [
    ("--profiling=True", True), ("--profiling=TRUE", True), ("--profiling=false", False),
    ("--profiling=1", True), ("--profiling=0", False), ("--profiling", True),
])
def test_boolean_flags_take_true_false_in_any_case_1_0_or_nothing(flag, on, tmp_path):
    """docs/ascend.md: "Boolean flags take True/False (any case, or 1/0; a bare --profiling
    means True)"."""
    values = parsed(translate(tmp_path / BIT / "test", FULL, ["--data_path=/d", flag]).overrides)
    assert (values.get("debug") == ["profiling"]) is on


def test_a_key_value_argument_is_passed_on_after_the_translated_ones(tmp_path):
    """docs/ascend.md: `key=value` goes to the runner as it is, after the translated overrides."""
    argv = ["model.learning_rate=0.01", "--data_path=/d", "--epochs=3"]
    overrides = translate(tmp_path / RESIZER / "test", FULL, argv).overrides
    assert overrides[-1] == "model.learning_rate=0.01" and "epochs=3" in overrides


@pytest.mark.parametrize(("recipe", "layout"), [(BIT, "tf_flowers/3.0.1/ and ttst/"),
                                                (RESIZER, "cats_vs_dogs/4.0.0/")])
def test_without_data_path_the_error_names_the_folder_layout(recipe, layout, tmp_path):
    """docs/ascend.md: no `--data_path` gives the folder layout it needs (the originals:
    `[Error] para "data_path " must be config`)."""
    with pytest.raises(ConfigError, match=re.escape(layout)):
        translate(tmp_path / recipe / "test", FULL, ["--epochs=3"])


@pytest.mark.parametrize(("recipe", "script"), list(ORIGINALS))
def test_case_name_log_holds_the_figures_in_each_scripts_order(recipe, script, tmp_path):
    """docs/ascend.md: `<CaseName>.log` holds the figures in the script's order, the dynamic-shape
    scripts with E2ETrainingTime fourth; the resizer's dynamic script too (its original recorded
    an NPU failure instead)."""
    translation = translate(tmp_path / recipe / "test", script, ["--data_path=/d"])
    metrics = {"CaseName": "case", "RankSize": 1, "BatchSize": 64, "ActualFPS": 123.45,
               "TrainingTime": 0.5, "TrainAccuracy": 0.9, "ActualLoss": 0.25}
    figures = closing_figures(metrics, translation, e2e_seconds=7)
    keys = list(LOG_KEYS)
    if script == PERFORMANCE_DYNAMIC:
        keys.insert(3, keys.pop())
    assert list(figures) == keys and all(figures.values())
    assert (figures["ActualFPS"], figures["E2ETrainingTime"]) == ("123.45", "7")


def test_a_resizer_run_shorter_than_log_steps_gets_one_time_history_line():
    """docs/ascend.md: a resizer run shorter than `log_steps` prints one TimeHistory line for the
    whole run (the original printed none: an empty ActualFPS and an awk error)."""
    out = io.StringIO()
    console = ResizerLines(batch_size=2, log_steps=145, epochs=1, out=out)
    console.epoch_begin(0)
    for step in range(3):
        console.batch_begin(step)
        console.batch_end(step, loss=0.7)
    console.epoch_end(0, {"loss": 0.69, "accuracy": 0.5, "val_loss": 0.69, "val_accuracy": 0.5})
    console.train_end()
    (line,) = lines_with(out.getvalue(), "TimeHistory")
    assert line.endswith(" examples/second between steps 0 and 3")
    assert console.figures("perf")["ActualFPS"] == float(line.split()[3])


def test_the_epoch_line_is_keras_2_6s_verbose_2_line(capsys):
    """docs/ascend.md: the runner prints Keras 2.6's `verbose=2` epoch line itself on both stacks;
    tf-keras 2.21's own line would add ` - 5s/epoch - 500ms/step`. Here Keras' own line from a
    small fit, against the runner's (seconds aside: the two clocks differ)."""
    from runner.keras2 import keras

    model = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = np.zeros((4, 3), np.float32), np.zeros(4, np.int32)
    history = model.fit(x, y, validation_data=(x, y), batch_size=2, epochs=1, verbose=2)
    keras_line = capsys.readouterr().out.strip().splitlines()[-1]
    runner_line = epoch_line(2, 0.0, {key: values[-1] for key, values in history.history.items()})
    without_seconds = re.compile(r"^(\d+/\d+) - \d+s")
    keras_line, runner_line = (without_seconds.sub(r"\1 - Ns", line) for line in (keras_line, runner_line))
    if ON_ASCEND_STACK:
        assert keras_line == runner_line
    else:
        assert re.fullmatch(re.escape(runner_line) + r" - \d+m?s/epoch - \d+m?s/step", keras_line)


@pytest.mark.parametrize(
    ("recipe", "argv", "named"),
    [
        (BIT, ["--data_path=/d", "--auto_tune=True"], "--auto_tune"),  # the resizer's flag only
        (RESIZER, ["--data_path=/d", "--lr=0.1", "stray"], "--lr, stray"),
        (BIT, ["--data_path=/d", "--over_dump=maybe"], "--over_dump=maybe"),
        (BIT, ["--data_path=/d", "--epochs=0"], "--epochs=0"),
        (BIT, ["--epochs=3"], "--data_path"),
        (BIT, ["--data_path=/d", "--device=tpu"], "--device=tpu"),
    ],
)
def test_bad_flags_are_named(recipe, argv, named, tmp_path):
    with pytest.raises(ConfigError, match=named.replace("|", r"\|")):
        translate(tmp_path / recipe / "test", FULL, argv)


def test_an_earlier_run_is_moved_aside_not_deleted(tmp_path):
    """docs/ascend.md: `output/<id>` renamed to `output/<id>.<date-time>`; the originals'
    `rm -rf test/output/*` removed every device's."""
    run_dir, other_device = tmp_path / "output" / "0", tmp_path / "output" / "1"
    run_dir.mkdir(parents=True)
    other_device.mkdir()
    (run_dir / "metrics.json").write_text("{}")
    moved = set_aside(run_dir)
    assert (moved / "metrics.json").is_file() and not run_dir.exists()
    assert moved.parent == run_dir.parent and re.fullmatch(r"0\.\d{8}-\d{6}", moved.name)
    assert other_device.is_dir()
    assert set_aside(run_dir) is None


# ---- the real scripts -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scripts_copy(tmp_path_factory) -> Path:
    """scripts/ascend copied: a run writes into <recipe>/test/output/ beside its script, as the
    originals do, and the working tree must stay clean."""
    target = tmp_path_factory.mktemp("scripts") / "ascend"
    shutil.copytree(SCRIPTS_DIR, target)
    return target


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Both seeds' data layouts in one folder: tf_flowers + ttst/ (BiT), cats_vs_dogs (resizer)."""
    root = tmp_path_factory.mktemp("ascend_data")
    write_tfds_folder(root, "tf_flowers", "3.0.1", per_class=4, size=32)
    write_bit_savedmodel(root / "ttst", feature_dim=8)
    write_tfds_folder(root, "cats_vs_dogs", "4.0.0", ("cat", "dog"), per_class=10, size=32)
    return root


def script_env(device_id: str) -> dict[str, str]:
    env = {**runner_env(), "PYTHON": sys.executable, "ASCEND_DEVICE_ID": device_id}
    if ON_ASCEND_STACK:  # the scripts' own device, through the fake npu_device
        env["PYTHONPATH"] = f"{FAKE_NPU_DIR}:{env['PYTHONPATH']}"
    return env


def start_script(scripts: Path, recipe: str, script: str, *args: str, device_id: str = "1",
                 cwd: Path | None = None) -> subprocess.Popen:
    """`bash <script>.sh args` from its test folder, as the originals' READMEs say, or from cwd."""
    test_dir = scripts / recipe / "test"
    path = f"{script}.sh" if cwd is None else str(test_dir / f"{script}.sh")
    return subprocess.Popen(
        ["bash", path, *args], cwd=cwd or test_dir, env=script_env(device_id),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


DEVICE = "npu" if ON_ASCEND_STACK else "cpu"
STEPS_PER_EPOCH = 3
# Three steps per epoch at 32 px and batch 2. BiT's recipe runs the tiny TF-Hub-style SavedModel in
# <data>/ttst; the resizer's script runs its own network, the learnable resizer in front of
# DenseNet-121, at DenseNet's smallest input (32 px). On the Ascend stack the scripts keep their
# default --device=npu (the fake npu_device).
TINY = [*([] if ON_ASCEND_STACK else ["--device=cpu"]), "--batch_size=2", "dataset.image_size=40",
        "model.crop_size=32", f"steps_per_epoch={STEPS_PER_EPOCH}"]
# name -> (recipe, script, ASCEND_DEVICE_ID: each run its own output/<id>/, extra arguments)
RUNS = {
    "bit_static": (BIT, PERFORMANCE_STATIC, "1", "--epochs=2"),  # its imgs/s needs a 2nd epoch
    "bit_dynamic": (BIT, PERFORMANCE_DYNAMIC, "2"),  # 1 epoch, as the original
    # The recipe's SGD 0.01 at batch 2 can turn the loss NaN within these 6 steps (a failed run):
    # this test reads the log's lines, not the training, so a step that stays finite.
    "resizer": (RESIZER, PERFORMANCE, "3", "--log_steps=2", "model.target_size=32", "model.crop_size=null",
                "model.learning_rate=0.001"),
}
EPOCHS = {"bit_static": 2, "bit_dynamic": 1, "resizer": 2}  # --epochs=2, and the scripts' own


@pytest.fixture(scope="module")
def script_runs(scripts_copy, data_dir) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """The three scripts whose logs differ in format, run side by side (stdout, stderr, run folder)."""
    started = {name: start_script(scripts_copy, recipe, script, f"--data_path={data_dir}", *TINY,
                                  *extra, device_id=device_id)
               for name, (recipe, script, device_id, *extra) in RUNS.items()}
    runs = {}
    for name, process in started.items():
        out, err = process.communicate(timeout=600)
        done = subprocess.CompletedProcess(process.args, process.returncode, out, err)
        runs[name] = (done, scripts_copy / RUNS[name][0] / "test" / "output" / RUNS[name][2])
    return runs


def console_log(run_dir: Path) -> Path:
    return run_dir / f"train_{run_dir.name}.log"


def lines_with(log: str, word: str) -> list[str]:
    """grep word."""
    return [line for line in log.splitlines() if word in line]


def bit_figures(log: str, batch_size: int) -> dict[str, str]:
    """What BiT's full and static scripts read: the last `,time:` line's 4th field after its
    colon, the `imgs/s` line's 2nd field, the last `val_accuracy` line's last field, and the 6th
    field of the Keras epoch lines (`- loss:`)."""
    (throughput,) = lines_with(log, "imgs/s")
    losses = [line.split()[5] for line in lines_with(log, "- loss:")]
    return {
        "TrainingTime": lines_with(log, ",time:")[-1].split()[3].split(":")[1],
        "ActualFPS": throughput.split()[1],
        "TrainAccuracy": lines_with(log, "val_accuracy")[-1].split()[-1],
        "ActualLoss": losses[-1], "losses": losses,
    }


def bit_dynamic_figures(log: str, batch_size: int) -> dict[str, str]:
    """What BiT's dynamic script reads: the mean of the `step:` lines' times but the first
    (4th colon-separated field; awk prints the mean with 6 significant digits), batch / that,
    and the step lines' losses but the first (3rd field)."""
    steps = lines_with(log, "step:")[1:]
    seconds = statistics.mean(float(line.split(":")[3]) for line in steps)
    losses = [line.split()[2] for line in steps]
    return {
        "TrainingTime": f"{seconds:.6g}", "ActualFPS": f"{batch_size / float(f'{seconds:.6g}'):.2f}",
        "TrainAccuracy": lines_with(log, "val_accuracy")[-1].split()[-1],
        "ActualLoss": losses[-1], "losses": losses,
    }


def resizer_figures(log: str, batch_size: int) -> dict[str, str]:
    """What the resizer's scripts read: the last `TimeHistory` line's 4th field, batch * 1000
    over it, and the 9th and 6th fields of the `val_loss` (epoch) lines."""
    fps = lines_with(log, "TimeHistory")[-1].split()[3]
    epochs = lines_with(log, "val_loss")
    losses = [line.split()[5] for line in epochs]
    return {
        "ActualFPS": fps, "TrainingTime": f"{batch_size * 1000 / float(fps):.2f}",
        "TrainAccuracy": epochs[-1].split()[8], "ActualLoss": losses[-1], "losses": losses,
    }


PARSERS = {"bit_static": bit_figures, "bit_dynamic": bit_dynamic_figures, "resizer": resizer_figures}
CASES = {"bit_static": "perf", "bit_dynamic": "dynamic_perf", "resizer": "perf"}


@pytest.mark.parametrize("name", list(RUNS))
def test_a_script_leaves_the_originals_files_and_closing_lines(name, script_runs):
    result, run_dir = script_runs[name]
    assert result.returncode == 0, result.stderr[-3000:] + console_log(run_dir).read_text()[-3000:]
    case = f"{NETWORK[RUNS[name][0]]}_bs2_1p_{CASES[name]}"
    expected = {f"train_{run_dir.name}.log", f"train_{case}_loss.txt", f"{case}.log"}
    assert expected <= {p.name for p in run_dir.iterdir()}
    figures = dict(line.split(" = ", 1) for line in (run_dir / f"{case}.log").read_text().splitlines())
    keys = list(LOG_KEYS)
    if name == "bit_dynamic":  # its script writes E2ETrainingTime 4th
        keys.insert(3, keys.pop())
    assert list(figures) == keys and figures["CaseName"] == case
    assert (figures["Network"], figures["RankSize"]) == (NETWORK[RUNS[name][0]], "1")
    assert figures["BatchSize"] == "2"  # the batch the run used (the resizer's originals: 64)
    assert figures["DeviceType"] == platform.machine()  # the originals' `uname -m`
    closing = result.stdout.splitlines()[-4:]
    assert closing == [
        f"Final Training Duration sec : {figures['E2ETrainingTime']}",
        "------------------ Final result ------------------",
        f"Final Performance images/sec : {figures['ActualFPS']}",
        f"Final Train Accuracy : {figures['TrainAccuracy']}",
    ]
    # ... and the runner's own run folder in the same place
    assert {"metrics.json", "train.log", "history.csv"} <= {p.name for p in run_dir.iterdir()}
    assert (run_dir / "checkpoints" / "best_weights.h5").is_file()


@pytest.mark.parametrize("name", list(RUNS))
def test_a_script_prints_the_runner_command_that_repeats_its_run(name, script_runs):
    """docs/ascend.md: "Before training, the script prints the `python -m runner` command it
    runs" (so the run can be repeated without the script): the printed overrides are the run's."""
    result, run_dir = script_runs[name]
    (printed,) = [line for line in result.stdout.splitlines() if line.startswith("python -m runner ")]
    assert result.stdout.index(printed) < result.stdout.index("Final Training Duration")
    words = shlex.split(printed)  # python -m runner <overrides> > <train_<id>.log> 2>&1
    redirect = words.index(">")
    assert words[redirect:] == [">", str(console_log(run_dir)), "2>&1"]
    overrides = words[3:redirect]
    assert f"hydra.run.dir={run_dir}" in overrides and f"device={DEVICE}" in overrides
    recorded = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))
    assert [o for o in overrides if not o.startswith("hydra")] == recorded


@pytest.mark.parametrize("name", list(RUNS))
def test_the_log_read_as_the_originals_read_it_gives_the_runs_figures(name, script_runs):
    result, run_dir = script_runs[name]
    log = console_log(run_dir).read_text()
    read = PARSERS[name](log, batch_size=2)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    case = metrics["CaseName"]
    written = dict(line.split(" = ", 1) for line in (run_dir / f"{case}.log").read_text().splitlines())
    for figure in ("ActualFPS", "TrainingTime", "TrainAccuracy", "ActualLoss"):
        assert written[figure] == read[figure], figure  # the same text
        assert metrics[figure] == pytest.approx(float(read[figure]), rel=1e-9), figure
    assert (run_dir / f"train_{case}_loss.txt").read_text().splitlines() == read["losses"]  # one a line
    # the runner's own INFO lines stay in train.log (its warnings reach the console too)
    assert not [line for line in log.splitlines() if "[runner" in line and "][INFO]" in line]
    assert "epoch: 1 step: 2 ,loss:" in (run_dir / "train.log").read_text()
    # E2ETrainingTime: the script's whole seconds around the process; metrics.json's the run's own
    assert metrics["E2ETrainingTime"] == metrics["wall_seconds"] < int(written["E2ETrainingTime"]) + 1


# Keras 2.6's verbose=2 epoch line, as the runner prints it: `3/3 - 0s - loss: 1.6094 - ...`
EPOCH_LINE = re.compile(r"(\d+)/\1 - \d+s - loss: \S+ - accuracy: \S+ - val_loss: \S+ - val_accuracy: \S+")


def epochs_of(log: str) -> list[list[str]]:
    """The log's lines cut after each epoch line: the lines of each epoch, its epoch line last."""
    epochs, lines = [], []
    for line in log.splitlines():
        lines.append(line)
        if EPOCH_LINE.fullmatch(line):
            epochs.append(lines)
            lines = []
    return epochs


@pytest.mark.parametrize("name", list(RUNS))
def test_the_log_holds_the_originals_lines(name, script_runs):
    """docs/ascend.md, "The log lines and the figures": `Epoch 2/5` lines (more than one epoch),
    then Keras 2.6's epoch lines, each recipe's own lines as its table describes them."""
    _, run_dir = script_runs[name]
    log, epochs = console_log(run_dir).read_text(), EPOCHS[name]
    epoch_lines = lines_with(log, "val_loss")
    assert len(epochs_of(log)) == epochs == len(epoch_lines)
    assert all(line.startswith(f"{STEPS_PER_EPOCH}/{STEPS_PER_EPOCH} - ") for line in epoch_lines)
    headers = [line for line in log.splitlines() if line.startswith("Epoch ")]
    assert headers == ([f"Epoch {e}/{epochs}" for e in range(1, epochs + 1)] if epochs > 1 else [])
    if RUNS[name][0] == BIT:
        assert_bit_lines(log, epochs)
    else:
        assert_resizer_lines(log, log_steps=2)


STEP_LINE = re.compile(r"step:(\d+) ,loss: \d+\.\d{6} ,time:(\d+\.\d{6})")


def assert_bit_lines(log: str, epochs: int) -> None:
    """`params:  {...}` ('verbose': 0, the originals' 2), `step:N ,loss: X ,time:T` every step
    (log_steps=1, N from 0 in each epoch), `epoch_duration:  S` after each epoch line, and at the
    end `imgs/s: F`: batch / the mean over epochs 2.. (a single epoch: that one) of each epoch's
    mean step time, steps of 10 s or more left out."""
    (params,) = lines_with(log, "params:")
    assert params.startswith("params:  {") and "'verbose': 0" in params
    step_times = []
    for epoch_lines in epochs_of(log):
        steps = [STEP_LINE.fullmatch(line) for line in epoch_lines if line.startswith("step:")]
        assert [int(step.group(1)) for step in steps] == list(range(STEPS_PER_EPOCH))
        step_times.append([float(step.group(2)) for step in steps])
    durations = [i for i, line in enumerate(log.splitlines()) if line.startswith("epoch_duration:  ")]
    epoch_lines = [i for i, line in enumerate(log.splitlines()) if EPOCH_LINE.fullmatch(line)]
    assert durations == [i + 1 for i in epoch_lines]
    assert log.splitlines()[-1].startswith("imgs/s: ")
    kept = [[t for t in times if t < SLOW_STEP_SECONDS] for times in step_times]
    means = [statistics.mean(times) for times in (kept[1:] if epochs > 1 else kept)]
    (throughput,) = lines_with(log, "imgs/s")
    # printed with 2 decimals, from step times printed with 6
    assert float(throughput.split()[1]) == pytest.approx(2 / statistics.mean(means), rel=1e-3, abs=0.005)


TIME_HISTORY = re.compile(
    r"TimeHistory: \d+\.\d\d seconds, \d+\.\d\d examples/second between steps (\d+) and (\d+)")


def assert_resizer_lines(log: str, log_steps: int) -> None:
    """`TimeHistory: S seconds, F examples/second between steps A and B` every log_steps steps,
    counted across epochs; none of BiT's lines."""
    windows = [TIME_HISTORY.fullmatch(line) for line in lines_with(log, "TimeHistory")]
    total = STEPS_PER_EPOCH * EPOCHS["resizer"]
    assert [(int(w.group(1)), int(w.group(2))) for w in windows] == [
        (step, step + log_steps) for step in range(0, total, log_steps)]
    assert not lines_with(log, "params:") and not lines_with(log, "imgs/s")


def test_a_failed_run_keeps_its_stderr_in_the_log_and_its_exit_code(scripts_copy, tmp_path):
    """docs/ascend.md: a failed run prints `Final Training Duration sec`, names the log on stderr,
    writes no `<CaseName>.log` and exits with the runner's exit code. Started from another working
    directory: the output still goes to <recipe>/test/output/$ASCEND_DEVICE_ID/ (the originals:
    $(pwd)/../test/output/)."""
    profiling = tmp_path / "profiling"
    process = start_script(scripts_copy, BIT, FULL, f"--data_path={tmp_path / 'missing'}", "--device=cpu",
                           "--profiling=True", f"--profiling_dump_path={profiling}",
                           device_id="4", cwd=tmp_path)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2 and "training failed (exit code 2)" in err
    assert profiling.is_dir()  # "the debug folders are made before training, as the originals do"
    log = scripts_copy / BIT / "test" / "output" / "4" / "train_4.log"
    assert f"its output: {log}" in err
    assert "tf_flowers" in log.read_text()  # the runner's stderr
    # no <CaseName>.log (nor the runner's train.log: a config mistake writes nothing of a run)
    assert {p.name for p in log.parent.glob("*.log")} == {log.name}
    assert f"  {why_it_failed(log)[-1]}" in err  # why, not only where
    assert "Final Training Duration sec : " in out and "Final result" not in out
    assert not list(tmp_path.glob("**/train_4.log"))  # nothing in the working directory


def test_a_script_names_an_unknown_flag_and_exits_2(scripts_copy):
    process = start_script(scripts_copy, RESIZER, FULL, "--data_path=/d", "--no_such_flag=1")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2 and "--no_such_flag" in err
    assert "Traceback" not in err and not (scripts_copy / RESIZER / "test" / "output" / "1").exists()


def test_help_lists_the_flags_and_exits_0(scripts_copy):
    process = start_script(scripts_copy, RESIZER, PERFORMANCE, "--help")
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0 and all(flag in out for flag in FLAGS)  # "lists the flags"


def test_a_failed_scripts_console_shows_why_not_only_where(tmp_path):
    """"see train_0.log" alone sent the user to a log of TensorFlow's banners."""

    log = tmp_path / "train_0.log"
    log.write_text(
        "I0000 cpu_feature_guard.cc: This TensorFlow binary is optimized\n"
        "[2026-12-05 03:00:00,000][runner.train][INFO] run /x: model=bit\n"
        "[2026-12-05 03:00:01,000][runner.record.run_folder][ERROR] run failed: dataset.data_dir='/d' "
        "does not exist.\n\n"
    )
    assert why_it_failed(log) == [log.read_text().splitlines()[2]]
    log.write_text("".join(f"line {i}\n" for i in range(20)) + "Segmentation fault\n")
    assert why_it_failed(log) == [*(f"line {i}" for i in range(16, 20)), "Segmentation fault"]
