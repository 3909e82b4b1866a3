"""What README.md and docs/*.md state that a machine can check: every repository file they name
exists, every `python -m runner ...` command they show composes, and the quickstart they
describe is the default config. (Measured figures are marked with their date in the docs.)"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

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
