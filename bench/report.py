"""The benchmark's rows, as a console table and as bench/results.md."""
from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from bench.flops import cpu_model_name, usable_cores


@dataclass(frozen=True)
class Row:
    section: str
    recipe: str
    measurement: str
    value: float | None  # None: not measured (the note says why)
    unit: str
    note: str = ""


HEADER = ("Section", "Recipe", "Measurement", "Value", "Unit", "Note")


def _cells(row: Row) -> tuple[str, ...]:
    value = "n/a" if row.value is None else f"{row.value:.3g}" if abs(row.value) < 100 else f"{row.value:.0f}"
    note = " ".join(row.note.replace("|", "/").split())  # one markdown cell
    return (row.section, row.recipe, row.measurement, value, row.unit, note)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def machine_lines(load_average: str) -> list[str]:
    return [
        f"- CPU: {cpu_model_name()}, {usable_cores()} cores usable",
        f"- TensorFlow {metadata.version('tensorflow')}, Keras {metadata.version('keras')}, "
        f"Python {platform.python_version()}",
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
