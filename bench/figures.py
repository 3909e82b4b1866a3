"""The figures the docs show, derived from bench/results.md: docs/performance.md's table of them,
and the named figures any doc may quote.

    python -m bench.figures            # print the table
    python -m bench.figures --write    # put it into docs/performance.md, between its two markers

bench/results.md is the record: dated sections (the date in the heading) of the rows `python -m
bench` writes. A figure is one row's value, a number its note writes, or a ratio, difference or
percentage of those, rounded to a number of decimal places; FIGURES names each one. The table
is made of them, and a doc that quotes one in its prose writes the figure's name in an HTML
comment right after the number (and its unit), which renders as nothing:

    resizer: `mixed_bfloat16` trains at 0.15x<!-- figure: precision.resizer.mixed_bfloat16 --> float32

tests/test_doc_figures.py checks that the table in the doc is this module's and that each quoted
number is the one its figure gives. Text only: nothing here imports TensorFlow.
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Union

from bench.report import Row, markdown_table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.md"
PERFORMANCE = ROOT / "docs" / "performance.md"
HEADER_LINE, RULE_LINE = markdown_table([]).splitlines()  # how `python -m bench` starts a table
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
NUMBER = r"\d+(?:\.\d+)?"

if TYPE_CHECKING:  # (the results.md section's date, recipe, measurement); Python 3.7 has no tuple[...]
    Key = tuple[str, str, str]


# --- bench/results.md, read back -------------------------------------------------------------

def dated_bench_rows(text: str) -> list[tuple[str | None, str]]:
    """(date, line) for each row of each bench table in a markdown text; the date is the first one
    the nearest heading above names (None: that heading names none)."""
    date, in_table, rows = None, False, []
    for line in text.splitlines():
        if line.startswith("#"):
            found = DATE.search(line)
            date = found.group(0) if found else None
        if line == HEADER_LINE or (in_table and line == RULE_LINE):
            in_table = True
            continue
        in_table = in_table and line.startswith("|")
        if in_table:
            rows.append((date, line))
    return rows


def read_row(line: str) -> Row:
    """A table line as bench.report writes it, back into its Row."""
    section, recipe, measurement, value, unit, note = (cell.strip() for cell in line.strip("|").split("|"))
    row = Row(section, recipe, measurement, None if value == "n/a" else float(value), unit, note)
    if markdown_table([row]).splitlines()[-1] != line:
        raise ValueError(f"not a row as `python -m bench` writes it: {line}")
    return row


def recorded_rows(text: str) -> dict[Key, Row]:
    """Every bench row of a results text by (date, recipe, measurement); one row per key."""
    rows: dict[Key, Row] = {}
    for date, line in dated_bench_rows(text):
        row = read_row(line)
        key = (date, row.recipe, row.measurement)
        if key in rows:
            raise ValueError(f"two rows {key}: a figure could not say which")
        rows[key] = row
    return rows


@lru_cache(maxsize=None)  # noqa: UP033  (Python 3.7 has no functools.cache)
def results_rows() -> dict[Key, Row]:
    return recorded_rows(RESULTS.read_text())


def recorded(key: Key, rows: dict[Key, Row] | None = None) -> Row:
    rows = results_rows() if rows is None else rows
    if key not in rows:
        raise KeyError(f"bench/results.md has no row {key}")
    return rows[key]


# --- How a figure is derived from the rows ---------------------------------------------------

@dataclass(frozen=True)
class Value:
    """The row's value."""
    row: Key

    def of(self, rows=None) -> Decimal:
        return Decimal(repr(recorded(self.row, rows).value))


@dataclass(frozen=True)
class Noted:
    """The number the row's note writes after `label` (`off 21.2`, `steady img/s 65.3`)."""
    row: Key
    label: str

    def of(self, rows=None) -> Decimal:
        note = recorded(self.row, rows).note
        found = re.search(rf"(?<!\w){re.escape(self.label)} ({NUMBER})", note)
        if not found:
            raise ValueError(f"the note of {self.row} writes no number after {self.label!r}")
        return Decimal(found.group(1))


@dataclass(frozen=True)
class Listed:
    """One of the per-round (per-turn, per-run) values a row's note lists at its end: by position,
    or the "min" or "max" of them."""
    row: Key
    pick: int | str

    def of(self, rows=None) -> Decimal:
        found = re.search(rf"((?:{NUMBER}, )+{NUMBER})$", recorded(self.row, rows).note)
        if not found:
            raise ValueError(f"the note of {self.row} ends in no list of values")
        values = [Decimal(value) for value in found.group(1).split(", ")]
        if isinstance(self.pick, str):
            return {"min": min, "max": max}[self.pick](values)
        return values[self.pick]


@dataclass(frozen=True)
class Ratio:
    numerator: Derivation
    denominator: Derivation

    def of(self, rows=None) -> Decimal:
        return self.numerator.of(rows) / self.denominator.of(rows)


@dataclass(frozen=True)
class Difference:
    minuend: Derivation
    subtrahend: Derivation

    def of(self, rows=None) -> Decimal:
        return self.minuend.of(rows) - self.subtrahend.of(rows)


Derivation = Union[Value, Noted, Listed, Ratio, Difference]  # noqa: UP007  (read at run time)


@dataclass(frozen=True)
class Figure:
    derivation: Derivation
    decimals: int  # places after the point the docs write (-2: to hundreds)

    def written(self, rows=None) -> str:
        return written(self.derivation.of(rows), self.decimals)


def written(value: Decimal, decimals: int) -> str:
    """The value rounded to `decimals` places (-2: to hundreds), half to even as Python's round(),
    written as the docs write it (`0.20`, `21.0`, `300`)."""
    return f"{value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN):f}"


# --- The figures ---------------------------------------------------------------------------
# Each table row is (what, the resizer's cell, BiT's cell, how it was measured); a cell is text in
# which [name] stands for that figure, written. Names are made below, with the rows they use.

FIGURES: dict[str, Figure] = {}


def name(figure_name: str, derivation: Derivation, decimals: int) -> str:
    """Registers a figure; its placeholder for a cell."""
    if figure_name in FIGURES and FIGURES[figure_name] != Figure(derivation, decimals):
        raise ValueError(f"figure {figure_name} named twice")
    FIGURES[figure_name] = Figure(derivation, decimals)
    return f"[{figure_name}]"


def with_range(figure_name: str, key: Key, decimals: int = 2) -> str:
    """`1.03x (0.89-1.24)`: the row's value and the lowest and highest its note lists."""
    value = name(figure_name, Value(key), decimals)
    low, high = (name(f"{figure_name}.{pick}", Listed(key, pick), decimals) for pick in ("min", "max"))
    return f"{value}x ({low}-{high})"


def single(figure_name: str, key: Key, decimals: int) -> str:
    return name(figure_name, Value(key), decimals)


def over(figure_name: str, numerator: Key, denominator: Key, decimals: int = 2) -> str:
    return name(figure_name, Ratio(Value(numerator), Value(denominator)), decimals)


def per_stack(figure_name: str, recipe: str, measurement: str, decimals: int, unit: str = "") -> str:
    """`5.2 s / 5.4 s`: a fixed-cost row of TF 2.21, then TF 2.6.5's."""
    return " / ".join(
        single(f"{figure_name}.{stack}.{recipe}", (FIXED_COSTS, recipe, f"{measurement}, TF {tf}"), decimals)
        + unit for stack, tf in (("tf221", "2.21.0"), ("tf265", "2.6.5")))


NOW, STACKS, FIXED_COSTS, LAUNCHERS = "2026-12-04", "2026-11-26", "2026-12-02", "2026-12-02"
KERAS_3 = "2026-11-23"  # the runner on Keras 3, before the switch: quoted with its date only
RECIPES = ("resizer", "bit")
NONE = "-"

TABLE: list[tuple[str, str, str, str]] = []


def row(what: str, resizer: str, bit: str, how: str) -> None:
    TABLE.append((what, resizer, bit, how))


# 1. The runner against the plain keras-io script, side by side in one process.
for tf, stack, plain in (("2.21.0", "tf221", "the plain script on Keras 3"),
                         ("2.6.5", "tf265", "tf.keras 2.6 on both sides")):
    row(f"1. runner / plain script, img/s, TF {tf[:-2]} ({plain})",
        *(with_range(f"throughput.{stack}.{recipe}", (STACKS, recipe, f"TF {tf}: runner / plain"))
          for recipe in RECIPES),
        f"{STACKS}; batch 16, median of 6 rounds (their range)")
row("1. runner img/s, TF 2.6.5 / TF 2.21",
    *(with_range(f"throughput.tf265_over_tf221.{recipe}",
                 (STACKS, recipe, "runner train(cfg): TF 2.6.5 / TF 2.21.0")) for recipe in RECIPES),
    f"{STACKS}; adjacent processes, median of 3 turns (their range)")

# 2. The input pipeline. 3. Precision, steps_per_execution, XLA. 4. FLOP/s.
row("2. pipeline: cached pass / decoding pass, img/s",
    *(over(f"pipeline.{recipe}.cache_gain", (NOW, recipe, "pipeline, cached pass"),
           (NOW, recipe, "pipeline, 1st pass (decodes)"), 1) + "x" for recipe in RECIPES),
    f"{NOW}; default sizes: 300x400 JPEGs resized to 150 px (resizer), to 160 px and cropped to 128 (BiT)")
row("2. pipeline: decoding pass / what the model consumes, img/s",
    *(single(f"pipeline.{recipe}.headroom", (NOW, recipe, "1st pass / model"), 0) + "x"
      for recipe in RECIPES),
    f"{NOW}; as above; the target is 3x")
for variant, label in (("mixed_bfloat16", "mixed_bfloat16"), ("mixed_float16", "mixed_float16"),
                       ("float32, steps_per_execution=4", "steps_per_execution")):
    row(f"3. {variant} / float32, img/s",
        *(over(f"precision.{recipe}.{label}", (NOW, recipe, variant), (NOW, recipe, "float32")) + "x"
          for recipe in RECIPES),
        f"{NOW}; resizer: 128 px, batch 32; BiT: 128 px crop, batch 16 (backbone trainable)")
row("3. XLA on / off, img/s per step (alternating rounds)",
    with_range("xla.resizer.per_step", (NOW, "resizer", "XLA on / off")), NONE,
    f"{NOW}; 128 px, batch 32, 2 rounds (their range)")
row("3. XLA: seconds more before the first step (its compile)",
    single("xla.resizer.first_step", (NOW, "resizer", "first step, XLA on - off"), 0) + " s", NONE,
    f"{NOW}; as above")
row("4. training FLOP/s, % of the CPU's FP32 peak",
    *(single(f"flops.{recipe}.utilisation", (NOW, recipe, "utilisation of FP32 peak"), 0) + "%"
      for recipe in RECIPES),
    f"{NOW}; float32, sizes as in 3")

# 5. Start-up. 6. Speed switches over whole runs. 7. Launchers.
STARTUP = (("cfg_job", "-", "python -m runner --cfg job"),
           ("import_tensorflow", "-", "python -c 'import tensorflow'"),
           ("first_step", "resizer", "python -m runner -> first step done"))
row("5. `python -m runner --cfg job` / `import tensorflow` / launch to the first step",
    " / ".join(single(f"startup.{what}", (NOW, recipe, measurement), 1) + " s"
               for what, recipe, measurement in STARTUP), NONE,
    f"{NOW}; the quickstart at batch 8")
for switch, label in (("jit_compile=true", "jit_compile"), ("threads.intra_op=1", "intra_op"),
                      ("threads.inter_op=1", "inter_op")):
    row(f"6. whole quickstart runs, wall time: defaults / `{switch}`",
        with_range(f"switches.{label}", (NOW, "resizer", f"{switch}: speed-up")), NONE,
        f"{NOW}; `python -m runner epochs=2`, launch to exit, 2 rounds (their range)")
for launcher, label in (("basic", "basic"), ("joblib n_jobs=2", "joblib")):
    row(f"7. a 4-job sweep, wall time: {launcher} / device_pool",
        with_range(f"launchers.pool_over_{label}",
                   (LAUNCHERS, "resizer", f"device_pool speed-up over {launcher}")),
        NONE, f"{LAUNCHERS}; quickstart jobs of 20 steps, 2 rounds (their range); shared machine")

# 8. Fixed costs of whole runs: the quickstart, and BiT's seed shape (15 epochs of 10 steps).
for tf, stack in (("2.21.0", "tf221"), ("2.6.5", "tf265")):
    row(f"8. wall / pure step time, TF {tf[:-2]}",
        *(with_range(f"fixed_costs.{stack}.{recipe}", (FIXED_COSTS, recipe, f"wall / step time, TF {tf}"))
          for recipe in RECIPES),
        f"{FIXED_COSTS}; launch to exit against optimizer steps x steady s/step, 2 runs (their range)")
row("8. bare Keras 2 script: wall / pure step time, TF 2.21 / TF 2.6",
    per_stack("fixed_costs.floor", "resizer", "bare Keras 2 script: wall / step time", 2, "x"), NONE,
    f"{FIXED_COSTS}; the same training, nothing else (bench/keras_floor.py)")
for measurement, label, decimals in (("first step after fit starts", "first_step", 1),
                                     ("pause between epochs (median)", "pause", 2),
                                     ("closing: last epoch to exit", "closing", 2)):
    row(f"8. {measurement}, TF 2.21 / TF 2.6",
        *(per_stack(f"fixed_costs.{label}", recipe, measurement, decimals, " s") for recipe in RECIPES),
        f"{FIXED_COSTS}; median of 2 runs")

# Quoted with their date, outside the table: the Keras 3 runner's precision figures (docs/devices.md).
for variant in ("float32", "mixed_bfloat16", "mixed_float16"):
    name(f"keras3.precision.resizer.{variant}", Value((KERAS_3, "resizer", variant)),
         2 if "mixed" in variant else 1)
for variant in ("mixed_bfloat16", "mixed_float16"):
    name(f"keras3.precision.resizer.float32_over_{variant}",
         Ratio(Value((KERAS_3, "resizer", "float32")), Value((KERAS_3, "resizer", variant))), 1)


def figures_table(rows: dict[Key, Row] | None = None) -> str:
    """docs/performance.md's table, every figure derived from the rows (bench/results.md's)."""
    lines = ["| section: measured | resizer + DenseNet-121 | BiT R50x1 | when; how |", "|---|---|---|---|"]
    for cells in TABLE:
        filled = [re.sub(r"\[([\w.]+)\]", lambda found: FIGURES[found.group(1)].written(rows), cell)
                  for cell in cells]
        lines.append("| " + " | ".join(filled) + " |")
    return "\n".join(lines)


# --- The table in docs/performance.md, and quoted figures ------------------------------------

BEGIN = "<!-- figures: `python -m bench.figures --write` writes this table from bench/results.md -->"
END = "<!-- end of figures -->"
QUOTED = re.compile(rf"(?<![\d.])({NUMBER})[^\d<>|]{{0,12}}\Z")  # a number, its unit, then the marker
MARKER = re.compile(r"<!-- figure: ([\w.]+) -->")


def table_in(text: str) -> str:
    """The table between the doc's markers."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError("the doc holds no figures table between its two markers (or more than one)")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")


def with_table(text: str, table: str) -> str:
    before, rest = text.split(BEGIN, 1)
    return f"{before}{BEGIN}\n{table}\n{END}{rest.split(END, 1)[1]}"


def quoted_figures(text: str) -> list[tuple[str, str]]:
    """(name, the number written right before its marker) for each figure marker in a text; a
    marker with no number right before it (its unit between them at most) is ("name", "")."""
    found = []
    for marker in MARKER.finditer(text):
        quote = QUOTED.search(text, max(0, marker.start() - 40), marker.start())
        found.append((marker.group(1), quote.group(1) if quote else ""))
    return found


def misquoted(text: str, rows: dict[Key, Row] | None = None) -> list[str]:
    """What is wrong with the figures a doc quotes: an unknown name, no number, a wrong number."""
    wrong = []
    for figure_name, number in quoted_figures(text):
        if figure_name not in FIGURES:
            wrong.append(f"no figure {figure_name} (bench/figures.py names them)")
        elif not number:
            wrong.append(f"figure {figure_name}: no number right before its marker")
        elif number != FIGURES[figure_name].written(rows):
            wanted = FIGURES[figure_name].written(rows)
            wrong.append(f"figure {figure_name} is {wanted}, the doc says {number}")
    return wrong


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.figures", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true",
                        help="replace the table in docs/performance.md instead of printing it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.write:
        PERFORMANCE.write_text(with_table(PERFORMANCE.read_text(), figures_table()))
    else:
        print(figures_table())


if __name__ == "__main__":
    main()
