"""The performance figures README.md and docs/*.md show are the ones bench/results.md records.

bench/results.md is the record: `python -m bench` (and `python -m bench.stacks`) runs, in dated
sections of `| Section | Recipe | Measurement | Value | Unit | Note |` rows. bench/figures.py
names the figures derived from those rows (a value, a number a note writes, a ratio of two rows,
the range of the per-round values a note lists) and writes docs/performance.md's table of them.
A doc that quotes a figure in its prose writes the figure's name right after the number, in an
HTML comment (`0.15x<!-- figure: precision.resizer.mixed_bfloat16 -->`). Checked here, as text (no
TensorFlow), so a doc may reword around its figures freely:
1. bench/results.md reads back as `python -m bench` writes its rows, one row per (date, recipe,
   measurement), and every named figure is derived from rows it holds;
2. the table between docs/performance.md's markers is the one `python -m bench.figures` writes;
3. each number a doc marks with a figure's name is that figure, rounded as the figure says;
4. a bench row copied into a doc is, verbatim, a row of the results.md section of the same date.
"""
from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from bench import figures
from bench.figures import (
    FIGURES,
    RESULTS,
    dated_bench_rows,
    figures_table,
    misquoted,
    quoted_figures,
    read_row,
    recorded_rows,
    table_in,
    with_table,
    written,
)

pytestmark = pytest.mark.ascend_stack  # text only: fast on both stacks

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", *sorted(f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md"))]
PERFORMANCE = "docs/performance.md"


def doc(name: str) -> str:
    return (ROOT / name).read_text()


# --- 1. The record ----------------------------------------------------------------------------

def test_results_md_reads_back_as_the_bench_wrote_it():
    """Every row parses and round-trips through bench.report, one per (date, recipe, measurement),
    the dated sections the figures come from among them."""
    rows = recorded_rows(RESULTS.read_text())
    assert len(rows) > 50 and all(date for date, _, _ in rows)
    assert {key[0] for figure in FIGURES.values() for key in keys_of(figure.derivation)} <= {
        date for date, _, _ in rows}


def keys_of(derivation) -> list:
    """The rows a derivation reads."""
    if hasattr(derivation, "row"):
        return [derivation.row]
    return [key for part in vars(derivation).values() for key in keys_of(part)]


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_figure_is_derived_from_recorded_rows(name):
    text = FIGURES[name].written()
    assert re.fullmatch(r"-?\d+(\.\d+)?", text), text


def test_two_rows_of_one_key_are_refused():
    """A figure names its row by date, recipe and measurement: a second row of the same key
    would leave it ambiguous."""
    text = RESULTS.read_text()
    date, line = next((date, line) for date, line in dated_bench_rows(text) if date)
    with pytest.raises(ValueError, match="two rows"):
        recorded_rows(text.replace(line, f"{line}\n{line}", 1))


# --- 2. The table in docs/performance.md ------------------------------------------------------

def stale_table_lines(text: str) -> list:
    """The lines of a doc's figures table that are not the generated table's, and the generated
    lines it lacks."""
    shown, generated = table_in(text).splitlines(), figures_table().splitlines()
    stale = [line for line in shown if line not in generated]
    stale += [line for line in generated if line not in shown]
    reordered = shown != generated and sorted(shown) == sorted(generated)
    return stale + (["(the rows in another order)"] if reordered else [])


def test_the_figures_table_in_performance_md_is_the_generated_one():
    assert stale_table_lines(doc(PERFORMANCE)) == [], (
        "docs/performance.md's figures table is not bench/results.md's: `python -m bench.figures --write`")


def test_a_changed_figure_in_the_table_is_caught():
    text = doc(PERFORMANCE)
    cell = re.search(r"\| (\d+\.\d+)x", table_in(text)).group(0)  # the table's first figure
    changed = text.replace(cell, cell.replace("x", "1x"), 1)
    assert len(stale_table_lines(changed)) == 2  # the doc's line, and the line it should be


def test_two_swapped_rows_of_the_table_are_caught():
    text = doc(PERFORMANCE)
    lines = table_in(text).splitlines()
    swapped = text.replace(f"{lines[2]}\n{lines[3]}", f"{lines[3]}\n{lines[2]}", 1)
    assert swapped != text and stale_table_lines(swapped) == ["(the rows in another order)"]


def test_a_changed_row_in_results_md_changes_the_table():
    """A new measurement changes the figures derived from it: the doc's table then fails the check
    above until it is regenerated."""
    text = RESULTS.read_text()
    key = keys_of(FIGURES["throughput.tf221.resizer"].derivation)[0]
    (line,) = [line for date, line in dated_bench_rows(text)
               if (date, read_row(line).recipe, read_row(line).measurement) == key]
    value = line.split(" | ")[3]
    changed = text.replace(line, line.replace(f" | {value} | ", f" | {float(value) * 2:.3g} | ", 1), 1)
    assert figures_table(recorded_rows(changed)) != figures_table()


def test_writing_the_table_replaces_only_the_table():
    text = doc(PERFORMANCE)
    assert with_table(text, figures_table()) == text.replace(table_in(text), figures_table())
    assert with_table(text, "| new |").count("| new |") == 1
    assert table_in(with_table(text, "| new |")) == "| new |"


# --- 3. Figures quoted in the docs' prose -----------------------------------------------------

@pytest.mark.parametrize("name", DOCS)
def test_a_quoted_figure_is_the_one_its_rows_give(name):
    assert misquoted(doc(name)) == []


def test_the_docs_mark_the_figures_they_quote():
    """The check above sees the quoted figures: the defaults' evidence in docs/performance.md and the
    precision figures of docs/devices.md."""
    marked = {name: quoted_figures(doc(name)) for name in DOCS}
    assert len(marked[PERFORMANCE]) >= 10 and marked["docs/devices.md"]
    assert all(number for quotes in marked.values() for _, number in quotes)


def test_a_changed_quoted_figure_is_caught():
    text = doc("docs/devices.md")
    marker = re.search(r"(\d+(?:\.\d+)?)([^\d<>|]{0,12}?)(<!-- figure: [\w.]+ -->)", text)
    changed = text.replace(marker.group(0), f"{marker.group(1)}1{marker.group(2)}{marker.group(3)}", 1)
    (wrong,) = misquoted(changed)
    assert "the doc says " + marker.group(1) + "1" in wrong


@pytest.mark.parametrize(("text", "wrong"), [
    ("about 5<!-- figure: no.such.figure -->", "no figure no.such.figure"),
    ("faster <!-- figure: {name} --> than", "no number right before its marker"),
    ("at 12 img/s and in the end a long sentence<!-- figure: {name} -->", "no number right before"),
])
def test_a_marker_without_its_figure_is_caught(text, wrong):
    (found,) = misquoted(text.format(name=sorted(FIGURES)[0]))
    assert wrong in found


def test_a_number_is_read_with_its_unit_between_it_and_the_marker():
    text = "at 23.1 img/s<!-- figure: a.b -->, 0.15x<!-- figure: c --> or 1.5 s<!-- figure: d -->"
    assert quoted_figures(text) == [("a.b", "23.1"), ("c", "0.15"), ("d", "1.5")]
    assert quoted_figures("(0.89-1.24<!-- figure: e -->)") == [("e", "1.24")]


@pytest.mark.parametrize(("value", "decimals", "text"), [
    ("0.935", 2, "0.94"), ("6.5", 0, "6"), ("296.8", -2, "300"), ("21", 1, "21.0"), ("0.2044", 2, "0.20"),
])
def test_figures_are_rounded_as_the_docs_write_them(value, decimals, text):
    assert written(Decimal(value), decimals) == text


# --- 4. Bench rows copied into a doc ----------------------------------------------------------

def unrecorded_rows(text: str) -> list:
    """The bench rows of a doc that are not rows of bench/results.md's section of their date."""
    recorded = set(dated_bench_rows(RESULTS.read_text()))
    return [(date, line) for date, line in dated_bench_rows(text) if (date, line) not in recorded]


@pytest.mark.parametrize("name", DOCS)
def test_a_bench_row_in_the_docs_is_recorded_under_its_date(name):
    assert unrecorded_rows(doc(name)) == []


def test_the_row_check_catches_a_changed_copy():
    date, line = next((date, line) for date, line in dated_bench_rows(RESULTS.read_text()) if date)
    copied = f"## {date}\n\n{figures.HEADER_LINE}\n{figures.RULE_LINE}\n{line}\n"
    assert dated_bench_rows(copied) == [(date, line)] and unrecorded_rows(copied) == []
    value = line.split(" | ")[3]
    changed = copied.replace(f" | {value} | ", f" | {value}1 | ", 1)
    assert unrecorded_rows(changed) and unrecorded_rows(copied.replace(date, "2000-01-01"))
