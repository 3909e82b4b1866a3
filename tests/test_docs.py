"""What README.md and docs/*.md state that a machine can check: every repository file they name
exists, every `python -m runner ...` command they show composes, every command of the other tools
(`python -m runner.evaluate/predict/export/summarize`, `python -m bench[.stacks/.figures]`) parses with
that tool's own parser, and the defaults they state are the composed config's. (Measured figures
are marked with their date in the docs.)"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from runner.versions import installed_version
from tests.conftest import compose_config

pytestmark = pytest.mark.ascend_stack  # configs and text only: fast on both stacks

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP_FOLDERS = "runner|models|data|bench|conf|tests|scripts|docs"
# A file (with its extension, maybe a glob) or a folder (with its slash), not prose like "data/model".
FILE_NAME = re.compile(rf"(?<![\w/.$<-])((?:{TOP_FOLDERS})/(?:[\w./*-]*\.\w+|[\w./-]*/))")
INLINE_COMMAND = re.compile(r"`(python -m runner(?:\s[^`]*)?)`")
# What a command line may hold that the compose API does not take: Hydra's own flags and keys
# (the launcher, the sweep folder) and `resume=`, which is expanded before Hydra sees it.
NOT_COMPOSED = re.compile(r"^(-m|--multirun|--cfg|job|--help|hydra[./]|resume=)")


def doc_text() -> str:
    return "\n".join(path.read_text() for path in DOCS)


def named_files() -> list[str]:
    return sorted({name.rstrip(".") for name in FILE_NAME.findall(doc_text())})


def runner_commands() -> list[str]:
    """Commands in code blocks (one per line, comment cut) and inline ones (one per span)."""
    commands = []
    for line in doc_text().replace("\\\n", " ").splitlines():  # continued lines joined
        if line.strip().startswith("python -m runner "):
            commands.append(line.strip().split("  #")[0].split(" # ")[0])
    commands += [" ".join(match.split()) for match in INLINE_COMMAND.findall(doc_text())]
    return sorted({c for c in commands if "..." not in c and "<" not in c})


def first_job(arguments: list[str]) -> list[str]:
    """A sweep's first job: `batch_size=32,64` -> `batch_size=32`."""
    overrides = OverridesParser.create().parse_overrides(arguments)
    return [
        f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override()
        else o.input_line
        for o in overrides
    ]


@pytest.mark.parametrize("name", named_files())
def test_every_file_the_docs_name_exists(name):
    matches = list(ROOT.glob(name)) if "*" in name else [ROOT / name]
    assert matches and all(path.exists() for path in matches), name


@pytest.mark.parametrize("command", runner_commands())
def test_every_runner_command_in_the_docs_composes(command):
    arguments = [a for a in shlex.split(command)[3:] if not NOT_COMPOSED.match(a)]
    compose_config(first_job(arguments))


def test_the_quickstart_the_readme_describes_is_the_default_config():
    """README: resizer + DenseNet-121 on digits upscaled to 64x64, resized to 32x32; 5 epochs,
    batch 64, SGD 0.01, label smoothing 0.1."""
    cfg = compose_config([])
    assert (cfg.model.name, cfg.dataset.name, cfg.dataset.image_size) == ("resizer_densenet", "digits", 64)
    assert cfg.model.target_size is None  # null: half the input, 32
    assert (cfg.epochs, cfg.batch_size, cfg.model.optimizer, cfg.model.learning_rate) == (5, 64, "sgd", 0.01)
    assert cfg.model.label_smoothing == 0.1


# --- The other tools: python -m runner.<tool> and python -m bench[.stacks] -------------------
TOOL_COMMAND = re.compile(r"^python -m (runner\.\w+|bench(?:\.\w+)?)(?:\s|$)")
INLINE_TOOL_COMMAND = re.compile(r"`(python -m (?:runner\.\w+|bench(?:\.\w+)?)(?:\s[^`]*)?)`")


def tool_commands() -> list[str]:
    """`python -m runner.evaluate ...`, `python -m bench ...`: code-block lines and inline spans
    (placeholders such as RUN_DIR are values; a command with `...` or `<...>` is a sketch, skipped)."""
    commands = []
    for line in doc_text().replace("\\\n", " ").splitlines():
        if TOOL_COMMAND.match(line.strip()):
            commands.append(line.strip().split("  #")[0].split(" # ")[0].strip())
    commands += [" ".join(match.split()) for match in INLINE_TOOL_COMMAND.findall(doc_text())]
    return sorted({c for c in commands if "..." not in c and "<" not in c})


def unbracket(argument: str) -> str:
    """`[split=train[85%:]]` (an optional argument in a usage line) -> `split=train[85%:]`."""
    return argument[1:-1] if argument.startswith("[") and argument.endswith("]") else argument


def test_the_docs_show_every_tool():
    shown = {shlex.split(c)[2] for c in tool_commands()}
    assert shown >= {"runner.evaluate", "runner.predict", "runner.export", "runner.summarize",
                     "bench", "bench.stacks"}, shown


def config_has(override: str) -> bool:
    """An after-training tool's `key=value` that is not its own option overrides the run's config:
    the key must exist there (for the default dataset or a TFDS one)."""
    for dataset in ("digits", "tf_flowers"):
        try:
            compose_config([f"dataset={dataset}", override])
            return True
        except Exception:  # noqa: BLE001 - Hydra's error for a key the config lacks
            continue
    return False


def check_tool_command(command: str) -> None:
    """Raises (or exits) unless the command's arguments are ones its tool takes, parsed by the
    tool's own parser (none of these imports TensorFlow); an after-training tool's config
    overrides must be keys of the run's config. A bare command is a mention of the tool."""
    import importlib

    tool, arguments = shlex.split(command)[2], [unbracket(a) for a in shlex.split(command)[3:]]
    if tool in ("runner.evaluate", "runner.predict", "runner.export"):
        from runner.tools.cli import parse_arguments

        spec = importlib.import_module(tool).TOOL
        if arguments:
            parsed = parse_arguments(arguments, spec)  # ConfigError: not key=value nor a flag; run= missing
            assert all(config_has(o) for o in parsed.overrides), parsed.overrides
    elif tool == "runner.summarize":
        from runner.record.sweep_summary import main

        with pytest.raises(SystemExit) as exit_:
            main(["--help"])  # its argparse: one positional, the sweep folder
        assert exit_.value.code == 0
        assert len(arguments) <= 1 and not any(a.startswith("-") for a in arguments), arguments
    elif tool == "bench":
        from bench.__main__ import parse_args

        parse_args(arguments)  # argparse: exit 2 on an unknown flag or a bad choice
    elif tool == "bench.stacks":
        from bench.__main__ import parse_args as bench_parse_args
        from bench.stacks import parse_args

        if arguments:
            _, bench_arguments = parse_args(arguments)  # what follows `--` goes to every bench
            bench_parse_args(bench_arguments)
    elif tool == "bench.figures":
        from bench.figures import parse_args

        parse_args(arguments)  # argparse: exit 2 on an unknown flag
    elif tool == "bench.timeline":
        from bench.timeline import main  # noqa: F401  (its arguments are python -m runner's)

        overrides = [a for a in arguments if "=" in a]  # `[runner overrides]` is a placeholder
        compose_config(first_job(overrides))
    else:
        raise AssertionError(f"{tool}: no check for this tool; add one to check_tool_command")


@pytest.mark.parametrize("command", tool_commands())
def test_every_tool_command_in_the_docs_parses(command):
    check_tool_command(command)


@pytest.mark.parametrize("command", [
    "python -m runner.evaluate run=R splits=val",  # not an option: an override the config lacks
    "python -m runner.predict run=R images=x --top_k=3",
    "python -m runner.export out=D",  # run= missing
    "python -m runner.summarize --all DIR",
    "python -m bench --sections throughputs",
    "python -m bench.stacks --python p --out o -- --quik",
    "python -m bench.figures --wirte",
    "python -m runner.plot run=R",
])
def test_the_tool_check_refuses_a_wrong_command(command):
    with pytest.raises((AssertionError, SystemExit, Exception)):
        check_tool_command(command)


# --- Defaults the docs state ------------------------------------------------------------------
RUN = Path("/RUN")  # stands in for the run folder in ${output_dir} paths
HUB_URL = "https://tfhub.dev/google/bit/m-r50x1/1"
STATED_DEFAULTS = [  # (overrides, key, value, where the docs say so)
    ([], "batch_size", 64, "README quick start"),
    ([], "epochs", 5, "README quick start"),
    ([], "seed", 42, "docs/sweeps.md Reproducibility"),
    ([], "steps_per_epoch", None, "README top-level keys"),
    ([], "static_shape", None, "README top-level keys"),
    ([], "optimized_metric", "val_accuracy", "README, docs/sweeps.md"),
    ([], "device.type", "cpu", "README group table, docs/devices.md"),
    ([], "precision.mode", "force_fp32", "README group table"),
    ([], "dataset.name", "digits", "README group table"),
    ([], "model.name", "resizer_densenet", "README group table"),
    ([], "model.target_size", None, "README: null, half the input"),
    ([], "jit_compile", None, "README Performance, docs/performance.md"),
    ([], "steps_per_execution", 1, "docs/performance.md"),
    ([], "threads.intra_op", None, "docs/performance.md"),
    ([], "threads.inter_op", None, "docs/performance.md"),
    ([], "pipeline.cache", None, "docs/performance.md"),
    ([], "pipeline.cache_budget_mb", 2048, "docs/performance.md"),
    ([], "modelzoo", None, "README top-level keys"),
    (["model=bit"], "model.handle", HUB_URL, "README BiT recipe"),
    (["model=bit"], "model.cache_dir", "~/.cache/runner/savedmodels", "README BiT recipe"),
    (["model=bit"], "steps_per_epoch", 10, "README rule for models"),
    (["model=bit"], "dataset.name", "tf_flowers", "README rule for models"),
    (["model=bit"], "model.trainable_backbone", True, "README: the whole network"),
    (["model=bit"], "model.schedule", "piecewise", "README BiT recipe"),
    (["model=bit"], "model.learning_rate", 0.003, "README: lr 0.003 x batch/512"),
    (["model=bit"], "model.lr_reference_batch", 512, "README: lr 0.003 x batch/512"),
    (["model=bit"], "model.lr_boundaries", [200, 300, 400], "README: x0.1 at steps 200/300/400"),
    (["model=bit"], "model.lr_decay", 0.1, "README: x0.1 at steps 200/300/400"),
    (["model=densenet"], "dataset.name", "digits", "README rule for models"),
    (["experiment=bit_flowers"], "model.trainable_backbone", False, "README: frozen backbone"),
    (["experiment=bit_flowers"], "epochs", 15, "docs/ascend.md scripts table"),
    (["experiment=bit_flowers"], "model.early_stopping_patience", 2, "docs/ascend.md: patience 2"),
    (["experiment=resizer_cats_vs_dogs"], "epochs", 5, "docs/ascend.md scripts table"),
    (["logger=mlflow"], "logger.mlflow.tracking_uri", "sqlite:///outputs/mlflow.db", "README tracking"),
    (["logger=mlflow"], "logger.mlflow.experiment_name", "runner", "README tracking"),
    (["logger=mlflow"], "logger.mlflow.log_weights", False, "README: weights with log_weights=true"),
    ([], "logger.tensorboard.hparams", True, "README: tensorboard, the default logger"),
    ([], "logger.mlflow", None, "README: tensorboard, the default logger"),
    (["device=npu"], "device.id", None, "docs/devices.md: null reads $ASCEND_DEVICE_ID"),
    (["debug=dump"], "debug.dump.path", f"{RUN}/dump", "docs/devices.md Debug tools"),
    (["debug=overflow"], "debug.overflow.path", f"{RUN}/overflow", "docs/devices.md Debug tools"),
    (["debug=profiling"], "debug.profiling.path", f"{RUN}/profiling", "docs/devices.md Debug tools"),
    (["debug=auto_tune"], "debug.auto_tune.aoe_mode", "2", "docs/devices.md Debug tools"),
    (["debug=auto_tune"], "debug.auto_tune.path", f"{RUN}/aoe", "docs/devices.md Debug tools"),
]


@pytest.mark.parametrize(("overrides", "key", "value", "where"), STATED_DEFAULTS,
                         ids=[f"{' '.join(o) or 'default'}:{k}" for o, k, _, _ in STATED_DEFAULTS])
def test_the_defaults_the_docs_state_are_the_configs(overrides, key, value, where):
    from omegaconf import OmegaConf

    cfg = compose_config(overrides, output_dir=RUN)
    actual = OmegaConf.select(cfg, key, default="<missing>")
    actual = OmegaConf.to_container(actual) if OmegaConf.is_config(actual) else actual
    assert actual == value, f"{where}: {key} is {actual!r}"


def test_the_search_the_docs_describe_is_the_optuna_config():
    """docs/sweeps.md: learning rate log-uniform in [1e-4, 0.1], batch size 16/32/64, TPE seeded
    by `seed`, 20 trials (a search continued once holds 40), max_failure_rate 1.0."""
    from omegaconf import OmegaConf

    sweeper = OmegaConf.load(ROOT / "conf/hparams_search/optuna.yaml").hydra.sweeper
    assert sweeper.params["model.learning_rate"] == "tag(log, interval(1e-4, 1e-1))"
    assert sweeper.params.batch_size == "choice(16, 32, 64)"
    assert (sweeper.n_trials, sweeper.max_failure_rate) == (20, 1.0)
    assert OmegaConf.to_container(sweeper.sampler)["seed"] == "${seed}"


def test_the_after_training_defaults_the_docs_state():
    """docs/after_training.md and README: split=val, which=best, top_k=3, out=<run>/export/<which>
    (empty: the tool's own default), counts in the confusion matrix up to 20 classes."""
    from runner.evaluate import MAX_ANNOTATED_CLASSES
    from runner.evaluate import TOOL as EVALUATE
    from runner.export import TOOL as EXPORT
    from runner.predict import TOOL as PREDICT

    assert (EVALUATE.options["split"], EVALUATE.options["which"]) == ("val", "best")
    assert (PREDICT.options["top_k"], PREDICT.options["which"]) == ("3", "best")
    assert (EXPORT.options["out"], EXPORT.options["which"]) == ("", "best")
    assert "<run>/export/<which>" in EXPORT.usage
    assert MAX_ANNOTATED_CLASSES == 20


# --- Versions and constants the docs state ----------------------------------------------------
STATED_PINS = [  # (requirements file, the line that pins what the docs name)
    ("requirements.txt", "tensorflow==2.21.*"),  # README: TensorFlow 2.21 + tf-keras 2.21
    ("requirements.txt", "tf-keras==2.21.*"),
    ("requirements.txt", "tensorflow-datasets==4.9.10"),  # README: TFDS 4.9.10
    ("requirements-ascend.txt", "tensorflow-cpu==2.6.5"),  # README: the Ascend stack, TF 2.6.5
    ("requirements-ascend-host.txt", 'submitit==1.5.3; python_version >= "3.8"'),  # docs/sweeps.md
    ("requirements-ascend-host.txt", 'submitit==1.4.6; python_version < "3.8"'),
    ("requirements-mlflow.txt", 'mlflow==3.16.1; python_version >= "3.10"'),  # README: MLflow 3.16.1
    ("requirements-mlflow.txt", 'mlflow==2.12.2; python_version >= "3.8" and python_version < "3.10"'),
    ("requirements-mlflow.txt", 'mlflow==1.30.1; python_version < "3.8"'),
]


@pytest.mark.parametrize(("file", "pin"), STATED_PINS)
def test_the_versions_the_docs_name_are_pinned(file, pin):
    assert pin in (ROOT / file).read_text().splitlines(), f"{file} no longer pins {pin}"


def test_the_repository_cites_only_what_it_holds():
    """Code, docs and tests cite files of this repository or public sources: no design notes that
    live outside it (a reader of a clean checkout could not follow the reference)."""
    import subprocess

    outside = [name + ".md" for name in ("DESIGN", "NPU_DEVICE", "STYLE")] + ["../" + "shared/"]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    citing = [(name, ref) for name in tracked if (ROOT / name).is_file()
              for ref in outside if ref in (ROOT / name).read_text(errors="ignore")]
    assert not citing


# --- README's prose: folders, groups, keys, layout, the test subsets --------------------------
README = ROOT / "README.md"


def test_run_and_sweep_folders_are_named_as_the_readme_says():
    """README: `outputs/<YYYY-MM-DD>/<HH-MM-SS-ffffff>/` (microseconds); sweeps go to
    `outputs/multirun/<date>/<time>/<overrides>/`, e.g. `batch_size=32,epochs=5/`."""
    hydra = compose_config(["batch_size=32", "epochs=5"], with_hydra=True).hydra
    assert re.fullmatch(r"outputs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d-\d{6}", hydra.run.dir), hydra.run.dir
    assert re.fullmatch(r"outputs/multirun/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d-\d{6}", hydra.sweep.dir)
    assert hydra.sweep.subdir == "batch_size=32,epochs=5"


def group_table() -> dict[str, str]:
    """README's group table, wherever it is: group -> its options cell."""
    rows = re.findall(r"^\| `([\w/]+)` \| (.*?) \|", README.read_text(), re.M)
    rows = [(group, cell) for group, cell in rows if (ROOT / "conf" / group).is_dir() or "/" in group]
    assert len(rows) >= 9, rows
    return dict(rows)


def listed_options(cell: str) -> tuple[list[str], str | None]:
    """The options a cell names (its `key=value` examples aside) and the one marked (default)."""
    options = [name for name in re.findall(r"`([^`]+)`", cell) if "=" not in name]
    default = re.search(r"`(\w+)` \(default\)", cell)
    return options, default.group(1) if default else None


@pytest.mark.parametrize("group", ["dataset", "model", "device", "precision", "debug", "experiment",
                                   "hparams_search", "logger", "hydra/launcher"])
def test_the_group_table_lists_each_groups_options_and_default(group):
    """README's group table: the options of each group are the config's (conf/<group>/, Hydra's
    launcher plugins), the one marked (default) is the default, and its examples compose."""
    cell = group_table()[group]
    options, default = listed_options(cell)
    if group == "hydra/launcher":
        for option in options:  # the plugin is installed and its config composes
            if option.startswith("ray_") and installed_version("hydra-ray-launcher") is None:
                continue  # Python 3.7 has no Ray launcher plugin (tests/test_ray_launcher.py)
            assert compose_config([f"hydra/launcher={option}"], with_hydra=True).hydra.launcher._target_
    else:
        assert sorted(options) == sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
    assert compose_config([], with_hydra=True).hydra.runtime.choices.get(group) == default
    for example in [name for name in re.findall(r"`([^`]+)`", cell) if "=" in name]:
        compose_config([example])  # debug=[dump,profiling], logger=[tensorboard,mlflow]


def test_the_experiments_are_global_overlays():
    """README: experiment options are `@package _global_` overlays."""
    for path in (ROOT / "conf" / "experiment").glob("*.yaml"):
        assert path.read_text().startswith("# @package _global_\n"), path.name


# A span may set keys that exist only under another choice (model.backbone under model=bit).
CONTEXTS = ([], ["model=bit"], ["logger=mlflow"], ["dataset=image_folder"])


def test_the_keys_the_readme_names_are_the_configs():
    """Every `key` or `group.key` README names whose first part is a top-level key of the config
    is a key of the config (under the default choices, or model=bit / logger=mlflow /
    dataset=image_folder)."""
    from omegaconf import OmegaConf

    configs = [compose_config(context) for context in CONTEXTS]
    names = {name for name in re.findall(r"`([a-z_]+(?:\.[a-z_]+)*)`", README.read_text())
             if name.split(".")[0] in configs[0]}
    assert len(names) >= 20, names
    def has(cfg, name):  # a key, set or not (a data_dir may be ??? until given)
        parent, _, last = name.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        return OmegaConf.is_dict(node) and last in node.keys()

    missing = [name for name in names if not any(has(cfg, name) for cfg in configs)]
    assert not missing, missing


def inline_overrides() -> list[str]:
    """README's inline spans made only of overrides (`model=bit dataset=digits`), outside code
    blocks; a span with a placeholder (`<dir>`, `...`) or Hydra's own keys is left out."""
    prose = re.sub(r"```.*?```", "", README.read_text(), flags=re.S)
    spans = []
    for span in set(re.findall(r"`([^`\n]+)`", prose)):
        arguments = shlex.split(span) if "=" in span and not re.search(r"<|\.\.\.", span) else []
        if arguments and all(re.match(r"^[a-z][\w.+~/]*=\S+$", a) for a in arguments):
            spans.append(span)
    return sorted(s for s in spans if not any(NOT_COMPOSED.match(a) for a in shlex.split(s))
                  and s not in SHOWN_MISTAKES)


# Spans README shows as mistakes, and what the runner answers (tests/test_cli.py runs them).
SHOWN_MISTAKES = {"model.learning_rat=0.1": "Did you mean model.learning_rate?"}


def test_the_mistakes_the_readme_shows_are_refused_as_it_says():
    from hydra.errors import ConfigCompositionException

    for span in SHOWN_MISTAKES:
        assert span in README.read_text()
        with pytest.raises(ConfigCompositionException):
            compose_config([span])


@pytest.mark.parametrize("span", inline_overrides())
def test_every_override_the_readme_shows_inline_composes(span):
    errors = []
    for context in CONTEXTS:
        try:
            compose_config([*context, *first_job(shlex.split(span))])
            return
        except Exception as error:  # noqa: BLE001 - Hydra's error for a key or value it refuses
            errors.append(f"{context}: {error}")
    raise AssertionError("\n".join(errors))


@pytest.mark.parametrize("span", inline_overrides())
def test_every_model_and_data_the_readme_pairs_inline_fit_each_other(span):
    """Composing is not enough: `model=bit dataset=digits` composed, then failed the preflight's
    check that BiT's crop fits the images (crop_size=224, digits at 64 px)."""
    from runner.preflight import _check_model

    for context in CONTEXTS:
        try:
            cfg = compose_config([*context, *first_job(shlex.split(span))])
        except Exception:  # noqa: BLE001 - composes in another context (the test above)
            continue
        _check_model(cfg.model, cfg.dataset.image_size)
        return


def test_every_module_gets_keras_from_runner_keras2():
    """README's Layout: `keras2` is where every module gets Keras from (tf.keras on TF 2.6,
    tf-keras on TF 2.21): no other module of runner/, models/ or data/ imports Keras itself."""
    direct = re.compile(r"^\s*(import (keras|tf_keras)\b|from (keras|tf_keras)\b|from tensorflow import"
                        r" keras\b)|\btf\.keras\b", re.M)
    sources = [p for folder in ("runner", "models", "data") for p in (ROOT / folder).rglob("*.py")]
    offenders = [str(p.relative_to(ROOT)) for p in sources
                 if p.name != "keras2.py" and direct.search(p.read_text())]
    assert len(sources) > 30 and not offenders, offenders
