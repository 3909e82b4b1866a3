"""The benchmark's rows, as a console table and as bench/results.md."""
from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

from runner.versions import installed_tensorflow


@dataclass(frozen=True)
class Row:
    section: str
    recipe: str
    measurement: str
    value: float | None  # None: not measured (the note says why)
    unit: str
    note: str = ""
    rounds: tuple[float, ...] = ()  # the per-round values behind a median (JSON only)


HEADER = ("Section", "Recipe", "Measurement", "Value", "Unit", "Note")


def format_value(value: float | None) -> str:
    """Three significant digits, whole numbers from 100 on; n/a for a value not measured."""
    return "n/a" if value is None else f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def _cells(row: Row) -> tuple[str, ...]:
    value = format_value(row.value)
    note = " ".join(row.note.replace("|", "/").split())  # one markdown cell
    return (row.section, row.recipe, row.measurement, value, row.unit, note)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def keras_versions() -> str:
    """The runner's Keras (runner.keras2: always Keras 2) and the plain script's (Keras 3 on
    TensorFlow 2.21, tf.keras 2.6 on TensorFlow 2.6)."""
    from bench import plain_keras
    from runner.keras2 import keras

    def named(module) -> str:  # TensorFlow 2.6's tf.keras is the module keras.api._v2.keras
        name = "tf.keras" if module.__name__.startswith("keras.api.") else module.__name__
        return f"Keras {module.__version__} ({name})"

    return f"runner: {named(keras)}, plain script: {named(plain_keras.keras)}"


def machine_lines(load_average: str) -> list[str]:
    from bench.flops import cpu_model_name, usable_cores

    return [
        f"- CPU: {cpu_model_name()}, {usable_cores()} cores usable",
        f"- TensorFlow {installed_tensorflow()[1]}, Python {platform.python_version()}; "
        f"{keras_versions()}",
        f"- Load average when the run started (`uptime`): {load_average}",
    ]


def write_results(path: Path, rows: list[Row], size_name: str, command: str, load_average: str) -> None:
    text = "\n".join([
        "# Benchmark results",
        "",
        f"`{command}` ({size_name} sizes). Images/s are steady-state medians; ratios are taken",
        "per round between measurements run side by side in one process.",
        "",
        *machine_lines(load_average),
        "",
        markdown_table(rows),
        "",
    ])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_json(path: Path, rows: list[Row], size_name: str, load_average: str) -> None:
    """The rows and which stack measured them, for `python -m bench.stacks`."""
    stack = {"tensorflow": installed_tensorflow()[1], "python": platform.python_version(),
             "keras": keras_versions()}
    document = {"size": size_name, "stack": stack, "load_average": load_average,
                "rows": [asdict(row) for row in rows]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1))
