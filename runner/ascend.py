"""The Ascend ModelZoo scripts' command lines on top of the runner.

`scripts/ascend/<recipe>/<script>.sh --data_path=... [flags]` -> `python -m runner.ascend <recipe>
<script> [flags]` -> Hydra overrides -> `python -m runner` -> the closing figures the ModelZoo
scripts print (ActualFPS, TrainingTime, TrainAccuracy, ActualLoss, E2ETrainingTime), read from
the run's metrics.json. Both recipes' scripts share this one translation.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import ConfigError

PERFORMANCE_STATIC = "train_performance_1p_static_eval"
PERFORMANCE_DYNAMIC = "train_performance_1p_dynamic_eval"
FULL = "train_full_1p"


@dataclass(frozen=True)
class Recipe:
    network: str  # the ModelZoo network name, the start of CaseName
    experiment: str  # conf/experiment/<name>.yaml: the seed, exactly
    perf_epochs: int  # the performance scripts' short run
    has_auto_tune: bool  # only the resizer's script takes --auto_tune


RECIPES = {
    "bit": Recipe("bit_ID2496_for_TensorFlow2.X", "bit_flowers", perf_epochs=3, has_auto_tune=False),
    "learnable_resizer": Recipe(
        "learnable_resizer_ID2518_for_TensorFlow2.X", "resizer_cats_vs_dogs", perf_epochs=1,
        has_auto_tune=True,
    ),
}
# script -> static_shape it fixes (None: the device decides, static on the NPU).
SCRIPTS = {FULL: None, PERFORMANCE_STATIC: True, PERFORMANCE_DYNAMIC: False}
DEFAULT_PRECISION = "allow_mix_precision"  # the ModelZoo scripts' precision_mode default

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
    run_dir: Path
    network: str  # CaseName = <network>_bs<batch>_1p_<case>
    case: str  # acc (the full script) or perf


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


def parse_flags(argv: list[str], recipe: Recipe, script: str) -> tuple[dict[str, Any], list[str]]:
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
    return overrides


def default_run_dir(cwd: Path | None = None) -> Path:
    """<cwd>/output/<ASCEND_DEVICE_ID or 0>, where the ModelZoo scripts put their run."""
    return (cwd or Path.cwd()) / "output" / os.environ.get("ASCEND_DEVICE_ID", "0")


def translate(recipe_name: str, script: str, argv: list[str], cwd: Path | None = None) -> Translation:
    """A ModelZoo script's command line -> the runner's overrides, run folder and CaseName."""
    recipe, static = RECIPES[recipe_name], SCRIPTS[script]
    settings, extra = parse_flags(argv, recipe, script)
    if "data_path" not in settings:
        raise ConfigError(f"{script}.sh needs --data_path=DIR (or --data_dir=DIR): {_data_hint(recipe)}")
    device = settings.get("device", "npu")
    if device not in DEVICES:
        raise ConfigError(f"--device={device} is not one of {', '.join(DEVICES)}.")
    static = settings.get("static", static)
    epochs = settings.get("epochs", recipe.perf_epochs if script != FULL else None)
    run_dir = Path(settings["output_dir"]).expanduser().resolve() if "output_dir" in settings else None
    run_dir = run_dir or default_run_dir(cwd)
    overrides = [
        f"experiment={recipe.experiment}",
        f"dataset.data_dir={hydra_value(Path(settings['data_path']).expanduser().resolve())}",
        f"device={device}",
        f"precision={settings.get('precision_mode', DEFAULT_PRECISION)}",
        *([f"static_shape={str(static).lower()}"] if static is not None else []),
        *([f"epochs={epochs}"] if epochs is not None else []),
        *(f"{key}={settings[key]}" for key in ("batch_size", "log_steps") if key in settings),
        *debug_overrides(settings),
        f"hydra.run.dir={hydra_value(run_dir)}",
        *extra,
    ]
    return Translation(overrides, run_dir, recipe.network, "acc" if script == FULL else "perf")


def _data_hint(recipe: Recipe) -> str:
    if recipe.experiment == "bit_flowers":
        return "the folder holding tf_flowers/3.0.1/ and ttst/ (the extracted BiT SavedModel)."
    return "the folder holding cats_vs_dogs/4.0.0/."


def set_aside(run_dir: Path) -> Path | None:
    """Move an earlier run out of the way (the originals delete output/$ASCEND_DEVICE_ID)."""
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(run_dir.stat().st_mtime))
    target = run_dir.with_name(f"{run_dir.name}.{stamp}")
    run_dir.rename(target)
    return target


def closing_figures(metrics: dict[str, Any], network: str, case: str) -> dict[str, str]:
    """The figures the ModelZoo scripts end with, as the run computed them in metrics.json
    (runner/report.py ascend_figures), named after the script's network."""
    return {
        "Network": network,
        "RankSize": str(metrics["RankSize"]),
        "BatchSize": str(metrics["BatchSize"]),
        "DeviceType": platform.machine(),  # the originals' `uname -m`
        "Device": str(metrics["DeviceType"]),
        "CaseName": f"{network}_bs{metrics['BatchSize']}_{metrics['RankSize']}p_{case}",
        "ActualFPS": f"{metrics['ActualFPS']:.2f}",
        "TrainingTime": f"{metrics['TrainingTime']:.2f}",  # milliseconds per step
        "TrainAccuracy": f"{metrics['TrainAccuracy']:.4f}",  # the final evaluation's accuracy
        "ActualLoss": f"{metrics['ActualLoss']:.4f}",  # the last epoch's mean training loss
        "E2ETrainingTime": f"{metrics['E2ETrainingTime']:.0f}",  # seconds
    }


def report(translation: Translation) -> dict[str, str]:
    """Print the closing figures and write them to <run_dir>/<CaseName>.log, as the originals do."""
    run_dir = translation.run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    figures = closing_figures(metrics, translation.network, translation.case)
    lines = [f"{key} = {value}" for key, value in figures.items()]
    (run_dir / f"{figures['CaseName']}.log").write_text("\n".join(lines) + "\n")
    print("------------------ Final result ------------------")
    print("\n".join(lines))
    return figures


def usage(recipe_name: str, script: str) -> str:
    flags = known_flags(RECIPES[recipe_name])
    return (
        f"bash {script}.sh --data_path=DIR [--flag=value ...] [runner overrides key=value ...]\n\n"
        f"Runs `python -m runner experiment={RECIPES[recipe_name].experiment}` with the flags "
        "translated to overrides (docs/after_training.md).\nFlags: " + ", ".join(flags) + "\n"
        "--device=cpu|gpu|npu (default npu), --output_dir=DIR (default ./output/$ASCEND_DEVICE_ID)."
    )


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in RECIPES or argv[1] not in SCRIPTS:
        print(f"usage: python -m runner.ascend {{{','.join(RECIPES)}}} {{{','.join(SCRIPTS)}}} [flags]",
              file=sys.stderr)
        return 2
    recipe_name, script, flags = argv[0], argv[1], argv[2:]
    if "-h" in flags or "--help" in flags:
        print(usage(recipe_name, script))
        return 0
    try:
        translation = translate(recipe_name, script, flags)
    except ConfigError as error:
        print(f"{recipe_name}/{script}.sh: error: {error}", file=sys.stderr)
        return 2
    moved = set_aside(translation.run_dir)
    if moved:
        print(f"an earlier run in {translation.run_dir} was moved to {moved}")
    print("python -m runner " + " ".join(translation.overrides), flush=True)
    result = subprocess.run([sys.executable, "-m", "runner", *translation.overrides])
    if result.returncode != 0:
        return result.returncode
    report(translation)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
