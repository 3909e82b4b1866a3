"""The Ascend ModelZoo scripts' command lines and outputs on top of the runner.

`cd scripts/ascend/<recipe>/test && bash <script>.sh --data_path=... [flags]` -> `python -m
runner.ascend <that test folder> <script> [flags]` -> Hydra overrides -> `python -m runner` with
its console (stdout and stderr) in `test/output/$ASCEND_DEVICE_ID/train_$ASCEND_DEVICE_ID.log`,
in the original train.py's line formats (runner/ascend/modelzoo.py) -> the originals' closing lines
and `<CaseName>.log`, from the run's metrics.json. Both recipes' scripts share this module;
what still differs from the originals, and why: docs/ascend.md.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.ascend.modelzoo import DYNAMIC_PERF, FIGURE_TEXT, NETWORKS
from runner.errors import ConfigError
from runner.record.run_folder import read_metrics

FULL = "train_full_1p"
PERFORMANCE_STATIC = "train_performance_1p_static_eval"
PERFORMANCE_DYNAMIC = "train_performance_1p_dynamic_eval"
PERFORMANCE = "train_performance_1p"  # the resizer's only


@dataclass(frozen=True)
class Script:
    epochs: int | None  # None: the recipe's own (the full scripts)
    static: bool  # drop_remainder, the originals' --eval_static / --static
    case: str  # CaseName's suffix
    e2e_early: bool = False  # the dynamic scripts write E2ETrainingTime 4th in <CaseName>.log


@dataclass(frozen=True)
class Recipe:
    experiment: str  # conf/experiment/<name>.yaml: the seed, exactly
    log_steps: int  # the original train.py's default: its scripts do not pass --log_steps
    has_auto_tune: bool  # only the resizer's script takes --auto_tune
    scripts: dict[str, Script]


RECIPES = {
    "bit": Recipe("bit_flowers", log_steps=1, has_auto_tune=False, scripts={
        FULL: Script(None, True, "acc"),
        PERFORMANCE_STATIC: Script(5, True, "perf"),
        PERFORMANCE_DYNAMIC: Script(1, False, DYNAMIC_PERF, e2e_early=True),
    }),
    "learnable_resizer": Recipe("resizer_cats_vs_dogs", log_steps=145, has_auto_tune=True, scripts={
        FULL: Script(None, True, "acc"),
        PERFORMANCE_STATIC: Script(3, True, "perf"),
        PERFORMANCE_DYNAMIC: Script(1, False, "perf", e2e_early=True),
        PERFORMANCE: Script(2, False, "perf"),
    }),
}
DEFAULT_PRECISION = "allow_mix_precision"  # the ModelZoo scripts' precision_mode default
# The debug tools' folders the originals make under the recipe folder (their ${cur_path}/output),
# and the files they read from it (${cur_path}/configs).
DEBUG_FOLDERS = {"over_dump_path": "overflow_dump", "data_dump_path": "data_dump",
                 "profiling_dump_path": "profiling"}
DEBUG_FILES = {"mixlist_file": "ops_info.json", "fusion_off_file": "fusion_switch.cfg"}
LOG_KEYS = ("Network", "RankSize", "BatchSize", "DeviceType", "CaseName", "ActualFPS",
            "TrainingTime", "TrainAccuracy", "ActualLoss", "E2ETrainingTime")
SEPARATOR = "------------------ Final result ------------------"

# flag -> (setting, kind). Both spellings of the two scripts map to one setting.
FLAGS = {
    "--data_path": ("data_path", str), "--data_dir": ("data_path", str),
    "--epochs": ("epochs", int), "--epoch": ("epochs", int),
    "--eval_static": ("static", bool), "--static": ("static", bool),
    "--batch_size": ("batch_size", int),
    "--log_steps": ("log_steps", int),
    "--precision_mode": ("precision_mode", str),
    "--over_dump": ("over_dump", bool), "--over_dump_path": ("over_dump_path", str),
    "--data_dump_flag": ("data_dump_flag", bool), "--data_dump_step": ("data_dump_step", str),
    "--data_dump_path": ("data_dump_path", str),
    "--profiling": ("profiling", bool), "--profiling_dump_path": ("profiling_dump_path", str),
    "--use_mixlist": ("use_mixlist", bool), "--mixlist_file": ("mixlist_file", str),
    "--fusion_off_flag": ("fusion_off_flag", bool), "--fusion_off_file": ("fusion_off_file", str),
    "--auto_tune": ("auto_tune", bool),
    # Not in the originals: run off the NPU (tests, a GPU box) and choose the output folder.
    "--device": ("device", str),
    "--output_dir": ("output_dir", str),
}
# debug option <- (the flag setting that turns it on, {setting carrying a value: its key}).
DEBUG_TOOLS = {
    "overflow": ("over_dump", {"over_dump_path": "path"}),
    "dump": ("data_dump_flag", {"data_dump_path": "path", "data_dump_step": "step"}),
    "profiling": ("profiling", {"profiling_dump_path": "path"}),
    "mixlist": ("use_mixlist", {"mixlist_file": "file"}),
    "fusion_off": ("fusion_off_flag", {"fusion_off_file": "file"}),
    "auto_tune": ("auto_tune", {}),
}
DEVICES = ("cpu", "gpu", "npu")
TRUE_WORDS, FALSE_WORDS = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}
SAFE_VALUE_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./+:@%")


@dataclass
class Translation:
    overrides: list[str]  # for `python -m runner`
    run_dir: Path  # test/output/<ASCEND_DEVICE_ID>, or --output_dir
    log_file: Path  # train_<ASCEND_DEVICE_ID>.log in run_dir: the run's whole console
    debug_folders: list[Path]
    script: Script
    recipe: str


def known_flags(recipe: Recipe) -> dict[str, tuple[str, type]]:
    return {f: spec for f, spec in FLAGS.items() if recipe.has_auto_tune or f != "--auto_tune"}


def parse_flag_value(flag: str, value: str | None, kind: type) -> Any:
    """`--flag=value` as the scripts take it; a bare boolean flag means True."""
    if kind is bool:
        word = "true" if value is None else value.strip().lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            raise ConfigError(f"{flag}={value} must be True or False, e.g. {flag}=True.")
        return word in TRUE_WORDS
    if value is None or value == "":
        raise ConfigError(f"{flag} needs a value: {flag}=VALUE.")
    if kind is int:
        if not value.isdigit() or int(value) <= 0:
            raise ConfigError(f"{flag}={value} must be a positive integer.")
        return int(value)
    return value


def parse_flags(argv: list[str], recipe: Recipe) -> tuple[dict[str, Any], list[str]]:
    """(settings by name, extra Hydra overrides); every unknown flag is named at once."""
    flags = known_flags(recipe)
    settings, extra, unknown = {}, [], []
    for arg in argv:
        if not arg.startswith("-"):
            # key=value: a runner override passed on as it is (e.g. dataset.image_size=64)
            (extra if "=" in arg else unknown).append(arg)
            continue
        flag, sep, value = arg.partition("=")
        if flag not in flags:
            unknown.append(flag)
            continue
        name, kind = flags[flag]
        settings[name] = parse_flag_value(flag, value if sep else None, kind)
    if unknown:
        raise ConfigError(
            f"unknown flag(s) {', '.join(unknown)}. The flags are {', '.join(flags)}; "
            "anything else must be a runner override key=value. See --help."
        )
    return settings, extra


def hydra_value(value: Any) -> str:
    """A value as a Hydra override writes it: quoted unless it is plainly safe (paths, numbers)."""
    text = str(value)
    if text and set(text) <= SAFE_VALUE_CHARACTERS:
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def debug_settings(settings: dict[str, Any], recipe_dir: Path) -> dict[str, Any]:
    """The originals' debug paths: <recipe>/output/{overflow_dump,data_dump,profiling} and
    <recipe>/configs/{ops_info.json,fusion_switch.cfg} unless a flag says otherwise; a data dump
    goes where the overflow dump goes when both are on (the originals set one dump_path,
    overflow's last). The dump keeps every tensor (dump_mode all: debug_overrides)."""
    paths = {key: str(recipe_dir / "output" / folder) for key, folder in DEBUG_FOLDERS.items()}
    paths.update({key: str(recipe_dir / "configs" / name) for key, name in DEBUG_FILES.items()})
    settings = {**paths, **settings}
    if settings.get("over_dump") and settings.get("data_dump_flag"):
        settings["data_dump_path"] = settings["over_dump_path"]
    return settings


def debug_overrides(settings: dict[str, Any]) -> list[str]:
    """debug=[a,b] plus debug.<a>.<key>=value for each tool a flag turned on."""
    tools = [name for name, (switch, _) in DEBUG_TOOLS.items() if settings.get(switch)]
    if not tools:
        return []
    overrides = [f"debug=[{','.join(tools)}]"]
    for name in tools:
        for setting, key in DEBUG_TOOLS[name][1].items():
            if setting in settings:
                overrides.append(f"debug.{name}.{key}={hydra_value(settings[setting])}")
    if "dump" in tools:
        overrides.append("debug.dump.mode=all")
    return overrides


def device_id() -> str:
    return os.environ.get("ASCEND_DEVICE_ID", "0")


def debug_folders(settings: dict[str, Any]) -> list[Path]:
    """The folders of the debug tools the flags turned on (the originals mkdir -p them)."""
    return [Path(settings[setting]) for switch, paths in DEBUG_TOOLS.values() if settings.get(switch)
            for setting in paths if setting in DEBUG_FOLDERS]


def translate(test_dir: Path, script_name: str, argv: list[str]) -> Translation:
    """A ModelZoo script's command line -> the runner's overrides, run folder and log file."""
    recipe_name = test_dir.resolve().parent.name
    recipe = RECIPES[recipe_name]
    script = recipe.scripts[script_name]
    settings, extra = parse_flags(argv, recipe)
    if "data_path" not in settings:
        raise ConfigError(f"{script_name}.sh needs --data_path=DIR (or --data_dir=DIR): {_data_hint(recipe)}")
    device = settings.get("device", "npu")
    if device not in DEVICES:
        raise ConfigError(f"--device={device} is not one of {', '.join(DEVICES)}.")
    settings = debug_settings(settings, test_dir.resolve().parent)
    epochs = settings.get("epochs", script.epochs)
    run_dir = Path(settings.get("output_dir") or test_dir / "output" / device_id()).expanduser().resolve()
    overrides = [
        f"experiment={recipe.experiment}",
        f"dataset.data_dir={hydra_value(Path(settings['data_path']).expanduser().resolve())}",
        f"device={device}",
        f"precision={settings.get('precision_mode', DEFAULT_PRECISION)}",
        f"static_shape={str(settings.get('static', script.static)).lower()}",
        *([f"epochs={epochs}"] if epochs is not None else []),
        f"log_steps={settings.get('log_steps', recipe.log_steps)}",
        *([f"batch_size={settings['batch_size']}"] if "batch_size" in settings else []),
        f"modelzoo={recipe_name}",
        f"case_kind={script.case}",
        *debug_overrides(settings),
        "hydra/job_logging=modelzoo",
        f"hydra.run.dir={hydra_value(run_dir)}",
        *extra,
    ]
    log_file = run_dir / f"train_{device_id()}.log"
    return Translation(overrides, run_dir, log_file, debug_folders(settings), script, recipe_name)


def _data_hint(recipe: Recipe) -> str:
    if recipe.experiment == "bit_flowers":
        return "the folder holding tf_flowers/3.0.1/ and ttst/ (the extracted BiT SavedModel)."
    return "the folder holding cats_vs_dogs/4.0.0/."


def set_aside(run_dir: Path) -> Path | None:
    """Move an earlier run out of the way (the originals delete test/output/*)."""
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(run_dir.stat().st_mtime))
    target = run_dir.with_name(f"{run_dir.name}.{stamp}")
    run_dir.rename(target)
    return target


def closing_figures(metrics: dict[str, Any], translation: Translation, e2e_seconds: int) -> dict[str, str]:
    """<CaseName>.log's key = value figures, in the script's order, each as the text the original
    script's awk took from its log (runner/ascend/modelzoo.py FIGURE_TEXT)."""
    text = FIGURE_TEXT[(translation.recipe, translation.script.case)]
    case = metrics["CaseName"]
    figures = {
        "Network": NETWORKS[translation.recipe],
        "RankSize": str(metrics["RankSize"]),
        "BatchSize": str(metrics["BatchSize"]),
        "DeviceType": platform.machine(),  # the originals' `uname -m`
        "CaseName": case,
        **{name: text[name](metrics[name]) for name in text},
        "E2ETrainingTime": str(e2e_seconds),  # the training process, in whole seconds
    }
    keys = list(LOG_KEYS)
    if translation.script.e2e_early:
        keys.remove("E2ETrainingTime")
        keys.insert(3, "E2ETrainingTime")
    return {key: figures[key] for key in keys}


def report(translation: Translation, e2e_seconds: int) -> dict[str, str]:
    """The originals' closing lines, and <CaseName>.log beside the training log."""
    metrics = read_metrics(translation.run_dir)
    figures = closing_figures(metrics, translation, e2e_seconds)
    lines = [f"{key} = {value}" for key, value in figures.items()]
    (translation.run_dir / f"{figures['CaseName']}.log").write_text("\n".join(lines) + "\n")
    print(SEPARATOR)
    print(f"Final Performance images/sec : {figures['ActualFPS']}")
    print(f"Final Train Accuracy : {figures['TrainAccuracy']}")
    return figures


def run_training(translation: Translation) -> tuple[int, int]:
    """`python -m runner` with stdout and stderr in the log file: (exit code, whole seconds)."""
    translation.run_dir.mkdir(parents=True, exist_ok=True)
    for folder in translation.debug_folders:
        folder.mkdir(parents=True, exist_ok=True)
    start = int(time.time())  # the originals' $(date +%s) before and after
    with open(translation.log_file, "w") as log:
        result = subprocess.run([sys.executable, "-m", "runner", *translation.overrides],
                                stdout=log, stderr=subprocess.STDOUT)
    return result.returncode, int(time.time()) - start


def why_it_failed(log_file: Path, tail: int = 5) -> list[str]:
    """The runner's own error lines of a failed run's log (its one-paragraph reasons), or the
    log's last lines when there are none (a crash)."""
    lines = [line.rstrip() for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "][ERROR]" in line or line.startswith("Error: ")]
    return errors[-tail:] or lines[-tail:]


def usage(recipe_name: str, script: str) -> str:
    flags = known_flags(RECIPES[recipe_name])
    return (
        f"cd scripts/ascend/{recipe_name}/test && bash {script}.sh --data_path=DIR [--flag=value ...] "
        "[runner overrides key=value ...]\n\n"
        f"Runs `python -m runner experiment={RECIPES[recipe_name].experiment}` with the flags "
        "translated to overrides (docs/ascend.md).\nFlags: " + ", ".join(flags) + "\n"
        "--device=cpu|gpu|npu (default npu), --output_dir=DIR (default test/output/$ASCEND_DEVICE_ID)."
    )


def _script_of(argv: list[str]) -> tuple[Path, str] | None:
    """(test folder, script name) when argv starts with a recipe's test folder and its script."""
    if len(argv) < 2:
        return None
    test_dir = Path(argv[0])
    recipe = RECIPES.get(test_dir.resolve().parent.name)
    return (test_dir, argv[1]) if recipe and argv[1] in recipe.scripts else None


def main(argv: list[str]) -> int:
    found = _script_of(argv)
    if found is None:
        print("usage: python -m runner.ascend scripts/ascend/{bit,learnable_resizer}/test <script> "
              "[flags]", file=sys.stderr)
        return 2
    (test_dir, script), flags = found, argv[2:]
    recipe_name = test_dir.resolve().parent.name
    if "-h" in flags or "--help" in flags:
        print(usage(recipe_name, script))
        return 0
    try:
        translation = translate(test_dir, script, flags)
    except ConfigError as error:
        print(f"{recipe_name}/test/{script}.sh: error: {error}", file=sys.stderr)
        return 2
    moved = set_aside(translation.run_dir)
    if moved:
        print(f"an earlier run in {translation.run_dir} was moved to {moved}")
    print(f"python -m runner {' '.join(translation.overrides)} > {translation.log_file} 2>&1", flush=True)
    code, seconds = run_training(translation)
    print(f"Final Training Duration sec : {seconds}")
    if code != 0:
        print(f"training failed (exit code {code}); its output: {translation.log_file}, ending:",
              file=sys.stderr)
        for line in why_it_failed(translation.log_file):
            print(f"  {line}", file=sys.stderr)
        return code
    report(translation, seconds)
    return 0

