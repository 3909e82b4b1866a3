"""`key=value` command lines of the after-training tools (evaluate, predict, export).

Not Hydra: a tool works on an existing run directory and must not create a run folder of its own.
A key the tool knows is one of its options; any other key overrides the run's own config
(`dataset.data_dir=/new/place`, `batch_size=8`), checked against the keys that config has.
TensorFlow is imported only by the action, so `--help` and bad arguments answer at once.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from runner.config.keys import did_you_mean
from runner.errors import ConfigError

REQUIRED = None  # an option default meaning "must be given"


@dataclass(frozen=True)
class Tool:
    name: str  # the module: python -m runner.<name>
    usage: str  # printed by --help
    options: dict[str, str | None]  # the tool's own keys and their defaults
    flags: dict[str, tuple[str, str]] = field(default_factory=dict)  # "--json" -> ("format", "json")


@dataclass
class Arguments:
    options: dict[str, str]
    overrides: list[str]  # for the run's config


def parse_arguments(argv: Sequence[str], tool: Tool) -> Arguments:
    options = dict(tool.options)
    overrides = []
    for arg in argv:
        if arg in tool.flags:
            key, value = tool.flags[arg]
            options[key] = value
            continue
        key, sep, value = arg.partition("=")
        if not sep or not key or key.startswith("-"):
            raise ConfigError(
                f"{arg!r} is not an argument of runner.{tool.name}: arguments are key=value "
                f"(options: {', '.join(tool.options)}) or one of {', '.join(tool.flags) or 'no flags'}. "
                f"See python -m runner.{tool.name} --help."
            )
        if key in options:
            options[key] = value
        elif "." not in key and did_you_mean(key, list(options)):  # `wich=last`
            raise ConfigError(
                f"{arg!r}: {key} is not an option of runner.{tool.name}.{did_you_mean(key, list(options))} "
                f"Its options: {', '.join(options)}; see python -m runner.{tool.name} --help."
            )
        else:
            overrides.append(arg)  # checked against the run's config when it is loaded
    missing = [key for key, value in options.items() if value is REQUIRED]
    if missing:
        raise ConfigError(
            f"runner.{tool.name} needs {' and '.join(f'{k}=...' for k in missing)}. "
            f"See python -m runner.{tool.name} --help."
        )
    return Arguments(options, overrides)


def run_tool(tool: Tool, action: Callable[[Arguments], None], argv: Sequence[str] | None = None) -> None:
    """Parse, run the action; a ConfigError becomes one paragraph on stderr and exit code 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(tool.usage.strip())
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
    try:
        action(parse_arguments(argv, tool))
    except ConfigError as error:
        print(f"runner.{tool.name}: error: {error}", file=sys.stderr)
        sys.exit(2)


def parse_int(key: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise ConfigError(f"{key}={value!r} must be a positive integer, e.g. {key}=3.")
    return number
