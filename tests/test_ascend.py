"""The Ascend ModelZoo scripts: flags -> overrides as pure Python, then the real scripts on tiny data,
their console log parsed the way the originals' test/*.sh read it (grep a line, take a field).

The originals: Ascend/ModelZoo-TensorFlow, TensorFlow2/built-in/keras_sample/cv/
bit_ID2496_for_TensorFlow2.X and learnable_resizer_ID2518_for_TensorFlow2.X (docs/ascend.md).
"""

import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from runner.ascend import (
    FLAGS,
    FULL,
    PERFORMANCE,
    PERFORMANCE_DYNAMIC,
    PERFORMANCE_STATIC,
    RECIPES,
    set_aside,
    translate,
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
    section = readme.split("## The Ascend scripts' flags", 1)[1].split("\n## ", 1)[0]
    assert FLAG.findall(section) and set(FLAG.findall(section)) <= set(FLAGS)


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


@pytest.mark.parametrize(("recipe", "script"), list(ORIGINALS))
def test_each_script_composes_its_recipe(recipe, script, tmp_path, monkeypatch):
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
    assert "hydra/job_logging=modelzoo" in translation.overrides


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
    from runner.npu import npu_options

    recipe_dir = tmp_path / BIT
    argv = ["--data_path=/d", "--data_dump_flag=True", "--over_dump=True", "--data_dump_step=10"]
    translation = translate(recipe_dir / "test", FULL, argv)
    cfg = compose_config([o for o in translation.overrides if not o.startswith("hydra")], tmp_path)
    assert npu_options(cfg)["dump_config"] == {
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
    run_dir = tmp_path / "output" / "0"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text("{}")
    moved = set_aside(run_dir)
    assert (moved / "metrics.json").is_file() and not run_dir.exists()
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


def start_script(scripts: Path, recipe: str, script: str, *args: str,
                 device_id: str = "1") -> subprocess.Popen:
    test_dir = scripts / recipe / "test"
    return subprocess.Popen(
        ["bash", f"{script}.sh", *args], cwd=test_dir, env=script_env(device_id),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


DEVICE = "npu" if ON_ASCEND_STACK else "cpu"
# Two steps per epoch at 32 px and batch 2. BiT's recipe runs the tiny TF-Hub-style SavedModel in
# <data>/ttst; the resizer's script runs it too (model=bit): its lines and figures are the script's,
# whatever the network, and DenseNet-121 would cost a minute here.
TINY = [f"--device={DEVICE}", "--batch_size=2", "dataset.image_size=40", "model.crop_size=32",
        "steps_per_epoch=3"]
# name -> (recipe, script, ASCEND_DEVICE_ID: each run its own output/<id>/, extra arguments)
RUNS = {
    "bit_static": (BIT, PERFORMANCE_STATIC, "1", "--epochs=2"),  # its imgs/s needs a 2nd epoch
    "bit_dynamic": (BIT, PERFORMANCE_DYNAMIC, "2"),  # 1 epoch, as the original
    "resizer": (RESIZER, PERFORMANCE, "3", "--log_steps=2", "model=bit"),
}


@pytest.fixture(scope="module")
def script_runs(scripts_copy, data_dir) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """The three scripts whose logs differ in format, run side by side (stdout, stderr, run folder)."""
    handle = f"model.handle={data_dir / 'ttst'}"
    started = {name: start_script(scripts_copy, recipe, script, f"--data_path={data_dir}", *TINY,
                                  *extra, *([handle] if recipe == RESIZER else []), device_id=device_id)
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
    seconds = statistics.fmean(float(line.split(":")[3]) for line in steps)
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
    closing = result.stdout.splitlines()[-4:]
    assert closing == [
        f"Final Training Duration sec : {figures['E2ETrainingTime']}",
        "------------------ Final result ------------------",
        f"Final Performance images/sec : {figures['ActualFPS']}",
        f"Final Train Accuracy : {figures['TrainAccuracy']}",
    ]


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
    assert (run_dir / f"train_{case}_loss.txt").read_text().split() == read["losses"]
    assert "[runner" not in log  # the runner's own INFO lines stay in train.log
    assert "epoch: 1 step: 2 ,loss:" in (run_dir / "train.log").read_text()


def test_a_failed_run_keeps_its_stderr_in_the_log_and_its_exit_code(scripts_copy, tmp_path):
    process = start_script(scripts_copy, BIT, FULL, f"--data_path={tmp_path / 'missing'}", "--device=cpu",
                           f"--output_dir={tmp_path / 'out'}")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2 and "training failed (exit code 2)" in err
    assert "tf_flowers" in (tmp_path / "out" / "train_1.log").read_text()  # the runner's stderr
    assert "Final Training Duration sec : " in out and "Final result" not in out


def test_a_script_names_an_unknown_flag_and_exits_2(scripts_copy):
    process = start_script(scripts_copy, RESIZER, FULL, "--data_path=/d", "--no_such_flag=1")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2 and "--no_such_flag" in err
    assert "Traceback" not in err and not (scripts_copy / RESIZER / "test" / "output" / "1").exists()


def test_help_lists_the_flags_and_exits_0(scripts_copy):
    process = start_script(scripts_copy, RESIZER, PERFORMANCE, "--help")
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0 and "--auto_tune" in out and "--data_path" in out
