"""The performance figures README.md and docs/*.md quote are the ones bench/results.md records.

bench/results.md is the record: `python -m bench` (and `python -m bench.stacks`) runs, in dated
sections of `| Section | Recipe | Measurement | Value | Unit | Note |` rows. The docs copy some of
those rows and quote figures derived from them (rounded values, ratios of two rows, ranges of the
per-round ratios a note lists). Checked here, as text (no TensorFlow); a doc may reword around them freely:
1. a bench row copied into a doc is, verbatim, a row of the results.md section of the same date;
2. each figure quoted from the bench is listed in QUOTES (doc, the doc's text around it, the rows
   it comes from and how it is derived), and the derivation gives the figure the doc writes;
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Union

import pytest

from bench.report import Row, markdown_table

pytestmark = pytest.mark.ascend_stack  # text only: fast on both stacks

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.md"
DOCS = ["README.md", *sorted(f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md"))]
HEADER_LINE, RULE_LINE = markdown_table([]).splitlines()  # how `python -m bench` starts a table
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
NUMBER = r"\d+(?:\.\d+)?"


def flat(text: str) -> str:
    """Whitespace as one space: the docs wrap their sentences anywhere."""
    return " ".join(text.split())


# --- bench/results.md, read back -------------------------------------------------------------

Key = tuple[str, str, str]  # (the date of the results.md section, recipe, measurement)


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


@functools.cache
def recorded_rows() -> dict[Key, Row]:
    rows: dict[Key, Row] = {}
    for date, line in dated_bench_rows(RESULTS.read_text()):
        row = read_row(line)
        key = (date, row.recipe, row.measurement)
        assert key not in rows, f"bench/results.md: two rows {key}, a quote could not say which"
        rows[key] = row
    return rows


def recorded(key: Key) -> Row:
    assert key in recorded_rows(), f"bench/results.md has no row {key}"
    return recorded_rows()[key]


# --- How a quoted figure is derived from the rows ---------------------------------------------

@dataclass(frozen=True)
class Value:
    """The row's value."""
    row: Key

    def of(self) -> Decimal:
        return Decimal(repr(recorded(self.row).value))


@dataclass(frozen=True)
class Noted:
    """The number the row's note writes after `label` (`off 21.2`, `steady img/s 65.3`)."""
    row: Key
    label: str

    def of(self) -> Decimal:
        found = re.search(rf"(?<!\w){re.escape(self.label)} ({NUMBER})", recorded(self.row).note)
        assert found, f"the note of {self.row} writes no number after {self.label!r}"
        return Decimal(found.group(1))


@dataclass(frozen=True)
class Listed:
    """One of the per-round (per-turn) values a row's note lists at its end: by position, or the
    "min" or "max" of them."""
    row: Key
    pick: int | str

    def of(self) -> Decimal:
        found = re.search(rf"((?:{NUMBER}, )+{NUMBER})$", recorded(self.row).note)
        assert found, f"the note of {self.row} ends in no list of values"
        values = [Decimal(value) for value in found.group(1).split(", ")]
        if isinstance(self.pick, str):
            return {"min": min, "max": max}[self.pick](values)
        return values[self.pick]


@dataclass(frozen=True)
class Ratio:
    numerator: Derivation
    denominator: Derivation

    def of(self) -> Decimal:
        return self.numerator.of() / self.denominator.of()


@dataclass(frozen=True)
class Difference:
    minuend: Derivation
    subtrahend: Derivation

    def of(self) -> Decimal:
        return self.minuend.of() - self.subtrahend.of()


@dataclass(frozen=True)
class Slower:
    """How much slower a ratio is than 1, in %: 100 x (1 - ratio)."""
    ratio: Derivation

    def of(self) -> Decimal:
        return 100 * (1 - self.ratio.of())


Derivation = Union[Value, Noted, Listed, Ratio, Difference, Slower]


def written(value: Decimal, decimals: int) -> str:
    """The value rounded to `decimals` places (-2: to hundreds), half to even as Python's round(),
    written as the docs write it (`0.20`, `21.0`, `300`)."""
    return f"{value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN):f}"


# --- The quoted figures ------------------------------------------------------------------------

Figure = tuple[Derivation, int]  # how a figure is derived, and to how many decimal places


@dataclass(frozen=True)
class Quote:
    doc: str  # the file, from the repository root
    text: str  # the doc's words around the figures (wrapping as one space), each figure a {}
    figures: tuple[Figure, ...]  # one for each {}


def quote(doc: str, text: str, *figures: Figure) -> Quote:
    return Quote(doc, text, figures)


STACKS = "2026-11-26"  # python -m bench.stacks: the runner on Keras 2, both stacks, shared machine
FULL = "2026-11-23"  # python -m bench --full (two sections): the runner on Keras 3, TF 2.21
RECIPES = ("resizer", "bit")


def stacks(recipe: str, measurement: str) -> Key:
    return (STACKS, recipe, measurement)


def full(recipe: str, measurement: str) -> Key:
    return (FULL, recipe, measurement)


def ratio_with_its_rounds(key: Key, decimals: int = 2) -> list[Figure]:
    """`1.09x (rounds 1.16, 0.94, 1.09)`: the value, then the three values its note lists."""
    return [(Value(key), decimals), *((Listed(key, i), decimals) for i in range(3))]


def ratio_with_its_range(key: Key, decimals: int = 2) -> list[Figure]:
    """`1.03x (rounds 0.89-1.24)`: the value, then the lowest and highest its note lists."""
    return [(Value(key), decimals), (Listed(key, "min"), decimals), (Listed(key, "max"), decimals)]


PERFORMANCE, DEVICES = "docs/performance.md", "docs/devices.md"
ON_EACH_STACK = {  # runner / plain, measured side by side on each stack
    (stack, recipe): stacks(recipe, f"TF {tf}: runner / plain")
    for stack, tf in (("default", "2.21.0"), ("ascend", "2.6.5")) for recipe in RECIPES
}
ACROSS_STACKS = {  # TF 2.6.5 / TF 2.21 throughput, per turn of adjacent processes
    (side, recipe): stacks(recipe, f"{measured}: TF 2.6.5 / TF 2.21.0")
    for side, measured in (("runner", "runner train(cfg)"), ("plain", "plain keras-io script"))
    for recipe in RECIPES
}
RUNNER_IMAGES = {(recipe, tf): stacks(recipe, f"TF {tf}: runner train(cfg)")
                 for recipe in RECIPES for tf in ("2.21.0", "2.6.5")}
RUNNER_PLAIN = {recipe: full(recipe, "runner / plain") for recipe in RECIPES}
HEADROOM = {recipe: full(recipe, "1st pass / model") for recipe in RECIPES}
FLOAT32 = {recipe: full(recipe, "float32") for recipe in RECIPES}
UTILISATION = {recipe: full(recipe, "utilisation of FP32 peak") for recipe in RECIPES}
XLA_AB = full("resizer", "XLA on / off")
XLA_FIRST_STEP = full("resizer", "first step, XLA on - off")
JIT_WHOLE_RUN = full("resizer", "jit_compile=true: speed-up")
INTRA_OP = full("resizer", "threads.intra_op=1: speed-up")
INTER_OP = full("resizer", "threads.inter_op=1: speed-up")
CFG_JOB = full("-", "python -m runner --cfg job")
FIRST_STEP = full("resizer", "python -m runner -> first step done")


def over_float32(recipe: str, variant: str) -> Derivation:
    return Ratio(Value(full(recipe, variant)), Value(FLOAT32[recipe]))


def float32_over(variant: str) -> Derivation:
    """How many times slower than float32 a variant of the resizer runs."""
    return Ratio(Value(FLOAT32["resizer"]), Value(full("resizer", variant)))


def step_seconds(recipe: str) -> Derivation:
    """Seconds per float32 step: the batch over img/s (section 3)."""
    return Ratio(Noted(FLOAT32[recipe], "batch"), Value(FLOAT32[recipe]))


def cache_gain(recipe: str) -> Derivation:
    cached, decoding = "pipeline, cached pass", "pipeline, 1st pass (decodes)"
    return Ratio(Value(full(recipe, cached)), Value(full(recipe, decoding)))


def noted_img_s(switch: str) -> Derivation:
    return Noted(full("resizer", f"{switch}: wall"), "img/s")


XLA_OFF_STEP = Ratio(Noted(XLA_AB, "batch"), Noted(XLA_AB, "off"))  # seconds per step without XLA
XLA_ON_STEP = Ratio(XLA_OFF_STEP, Value(XLA_AB))  # with XLA: faster by the paired rounds' ratio
XLA_BREAK_EVEN = Ratio(Value(XLA_FIRST_STEP), Difference(XLA_OFF_STEP, XLA_ON_STEP))  # steps
BIT_RUNNER_ROUNDS = stacks("bit", "TF 2.21.0: runner train(cfg)")  # results.md's widest spread

QUOTES = [
    # docs/devices.md, Precision
    quote(DEVICES, "{} img/s under `mixed_bfloat16` and {} img/s under `mixed_float16` against {} img/s "
          "in float32 ({}x and {}x slower",
          (Value(full("resizer", "mixed_bfloat16")), 2), (Value(full("resizer", "mixed_float16")), 2),
          (Value(FLOAT32["resizer"]), 1),
          (float32_over("mixed_bfloat16"), 1), (float32_over("mixed_float16"), 1)),
    # docs/performance.md, both stacks (2026-11-26)
    quote(PERFORMANCE, "so single rounds' img/s move by up to {}x",
          (Ratio(Listed(BIT_RUNNER_ROUNDS, "max"), Listed(BIT_RUNNER_ROUNDS, "min")), 0)),
    quote(PERFORMANCE, "plain Keras 3 | {}x (rounds {}-{}) | {}x ({}-{}) |",
          *ratio_with_its_range(ON_EACH_STACK["default", "resizer"]),
          *ratio_with_its_range(ON_EACH_STACK["default", "bit"])),
    quote(PERFORMANCE, "tf.keras 2.6 on both sides | {}x ({}-{}) | {}x ({}-{}) |",
          *ratio_with_its_range(ON_EACH_STACK["ascend", "resizer"]),
          *ratio_with_its_range(ON_EACH_STACK["ascend", "bit"])),
    quote(PERFORMANCE, "| runner img/s, TF 2.21 / TF 2.6.5 | {} / {} | {} / {} |",
          *((Value(key), 1) for key in RUNNER_IMAGES.values())),
    quote(PERFORMANCE, "| runner, TF 2.6.5 / TF 2.21 (per turn) | {}x ({}, {}, {}) | {}x ({}, {}, {}) |",
          *ratio_with_its_rounds(ACROSS_STACKS["runner", "resizer"]),
          *ratio_with_its_rounds(ACROSS_STACKS["runner", "bit"])),
    quote(PERFORMANCE, "| plain script, TF 2.6.5 (tf.keras 2.6) / TF 2.21 (Keras 3) | {}x ({}, {}, {}) "
          "| {}x ({}, {}, {}) |", *ratio_with_its_rounds(ACROSS_STACKS["plain", "resizer"]),
          *ratio_with_its_rounds(ACROSS_STACKS["plain", "bit"])),
    quote(PERFORMANCE, "as the Keras 3 runner did on 2026-11-23 ({}x, {}x at the full sizes",
          *((Value(RUNNER_PLAIN[recipe]), 2) for recipe in RECIPES)),
    quote(PERFORMANCE, "runs the runner about {}% (resizer) to {}% (BiT) slower than TF 2.21",
          *((Slower(Value(ACROSS_STACKS["runner", recipe])), 0) for recipe in RECIPES)),
    quote(PERFORMANCE, "given the spread ({}-{} per turn) what holds is \"not faster, likely 5-{}% slower\"",
          (Listed(ACROSS_STACKS["runner", "bit"], "min"), 2),
          (Listed(ACROSS_STACKS["runner", "resizer"], "max"), 2),
          (Slower(Value(ACROSS_STACKS["runner", "bit"])), 0)),
    # docs/performance.md, after the 2026-11-23 tables
    quote(PERFORMANCE, "the medians of each side's img/s (off {}, on {}: not faster); from the paired "
          "rounds' median ratio ({}) it is {} s / ({} s - {} s per step) = about {} steps",
          (Noted(XLA_AB, "off"), 1), (Noted(XLA_AB, "on"), 1), (Value(XLA_AB), 2), (Value(XLA_FIRST_STEP), 0),
          (XLA_OFF_STEP, 2), (XLA_ON_STEP, 2), (XLA_BREAK_EVEN, -2)),
    quote(PERFORMANCE, "never earns it back, as section 6 shows: {}x.", (Value(JIT_WHOLE_RUN), 2)),
    # docs/performance.md, What is the default, and why
    quote(PERFORMANCE, "the cached pass delivers {}x (resizer) and {}x (BiT) the decoding pass",
          *((cache_gain(recipe), 1) for recipe in RECIPES)),
    quote(PERFORMANCE, "the decoding pass alone delivers {}x (resizer, 300 px) and {}x (BiT, 224 px crop)",
          *((Value(HEADROOM[recipe]), 0) for recipe in RECIPES)),
    quote(PERFORMANCE, "resizer: `mixed_bfloat16` {}x and `mixed_float16` {}x float32 (no bf16/fp16 "
          "hardware). BiT's {}-{}x is noise",
          (over_float32("resizer", "mixed_bfloat16"), 2), (over_float32("resizer", "mixed_float16"), 2),
          (over_float32("bit", "mixed_float16"), 2), (over_float32("bit", "mixed_bfloat16"), 2)),
    quote(PERFORMANCE, "resizer: {}x per step in paired rounds ({}-{}), but {} s more before the first "
          "step; over whole quickstart runs {}x (XLA's DenseNet at 32 px steps at {} img/s against {}). "
          "BiT with a SavedModel backbone: {}x.",
          *ratio_with_its_range(XLA_AB), (Value(XLA_FIRST_STEP), 0), (Value(JIT_WHOLE_RUN), 2),
          (noted_img_s("jit_compile=true"), 0), (noted_img_s("defaults"), 0),
          (over_float32("bit", "float32 + XLA"), 2)),
    quote(PERFORMANCE, "| {}x (resizer) and {}x (BiT, within noise) in single runs: at {}-{} s per step "
          "(batch {})", *((over_float32(recipe, "float32, steps_per_execution=4"), 2) for recipe in RECIPES),
          *((step_seconds(recipe), 1) for recipe in RECIPES), (Noted(FLOAT32["resizer"], "batch"), 0)),
    quote(PERFORMANCE, "whole runs: `intra_op=1` {}x, `inter_op=1` {}x the defaults' wall time",
          (Value(INTRA_OP), 2), (Value(INTER_OP), 2)),
    quote(PERFORMANCE, "{}x on the resizer recipe (rounds {}, {}, {}) and {}x on BiT ({}, {}, {}).",
          *ratio_with_its_rounds(RUNNER_PLAIN["resizer"]), *ratio_with_its_rounds(RUNNER_PLAIN["bit"])),
    quote(PERFORMANCE, "Model FLOP/s reach {}% (resizer) and {}% (BiT",
          *((Value(UTILISATION[recipe]), 0) for recipe in RECIPES)),
    quote(PERFORMANCE, "`--cfg job` took {} s (no TensorFlow import;", (Value(CFG_JOB), 2)),
    quote(PERFORMANCE, "the quickstart took about {} s ({} s), of which {} s was `import tensorflow`",
          (Value(FIRST_STEP), 0), (Value(FIRST_STEP), 1),
          (Value(full("-", "python -c 'import tensorflow'")), 1)),
]

def pattern(text: str) -> re.Pattern:
    """The doc's text with a number where each {} is."""
    return re.compile(f"({NUMBER})".join(re.escape(piece) for piece in flat(text).split("{}")))


def misquoted(entry: Quote, doc_text: str) -> list[str]:
    """What is wrong with the quote in this doc text: the text gone, or a figure its rows do not give."""
    found = list(pattern(entry.text).finditer(flat(doc_text)))
    if not found:
        return [f"{entry.doc} no longer says {entry.text!r}: update QUOTES with the doc"]
    wanted = [written(derivation.of(), digits) for derivation, digits in entry.figures]
    return [
        f"{entry.doc} quotes {got} where {derivation} gives {want} ({entry.text!r})"
        for match in found
        for got, want, (derivation, _) in zip(match.groups(), wanted, entry.figures)
        if got != want
    ]


# --- The tests ---------------------------------------------------------------------------------

def doc_bench_rows() -> list[tuple[str, str | None, str]]:
    return [(doc, date, line) for doc in DOCS for date, line in dated_bench_rows((ROOT / doc).read_text())]


def test_results_md_reads_back_as_the_bench_wrote_it():
    """Every row parses, and round-trips through bench.report, in its dated section (the ones the
    docs quote among them)."""
    dates = [date for date, _, _ in recorded_rows()]
    assert {FULL, STACKS} <= set(dates) and len(dates) > 50


@pytest.mark.parametrize(("doc", "date", "line"), doc_bench_rows(),
                         ids=lambda value: flat(str(value))[:60])
def test_a_bench_row_in_the_docs_is_recorded_under_its_date(doc, date, line):
    assert date, f"{doc}: a bench row under a heading that names no date: {line}"
    recorded_lines = [row for row_date, row in dated_bench_rows(RESULTS.read_text()) if row_date == date]
    assert line in recorded_lines, f"{doc}: not in bench/results.md's {date} section: {line}"


def test_the_row_check_sees_the_tables_performance_md_copies():
    """The rows test above is parametrized by what dated_bench_rows finds: it must find them."""
    assert {(doc, date) for doc, date, _ in doc_bench_rows()} == {(PERFORMANCE, FULL)}


@pytest.mark.parametrize("entry", QUOTES, ids=lambda entry: f"{entry.doc}:{flat(entry.text)[:50]}")
def test_a_quoted_figure_is_the_one_its_rows_give(entry):
    assert entry.text.count("{}") == len(entry.figures), "one derivation per {}"
    assert misquoted(entry, (ROOT / entry.doc).read_text()) == []


# --- The checks themselves can fail ------------------------------------------------------------

def test_a_changed_figure_is_reported():
    entry = QUOTES[0]
    text = (ROOT / entry.doc).read_text()
    found = pattern(entry.text).search(flat(text))
    first = found.group(1)
    changed = flat(text).replace(found.group(0), found.group(0).replace(first, first + "1", 1))
    assert misquoted(entry, changed) and "quotes" in misquoted(entry, changed)[0]


@pytest.mark.parametrize(("value", "decimals", "text"), [
    ("0.935", 2, "0.94"), ("6.5", 0, "6"), ("296.8", -2, "300"), ("21", 1, "21.0"), ("0.2044", 2, "0.20"),
])
def test_figures_are_rounded_as_the_docs_write_them(value, decimals, text):
    assert written(Decimal(value), decimals) == text
