"""`python -m bench` runs and writes its table: a smoke run, never a timing assertion.

The BiT recipe at --quick sizes (a one-conv SavedModel backbone, tiny JPEGs) keeps this under a
minute; the DenseNet-based resizer recipe takes minutes to build and trace on a CPU, so it is
exercised by `python -m bench --quick` by hand, not here.
"""

import pytest

from bench.__main__ import main
from bench.sections import break_even_steps


def test_quick_bench_writes_its_table(tmp_path):
    out = tmp_path / "results.md"
    written = main([
        "--quick", "--recipe", "bit", "--sections", "throughput", "pipeline", "precision",
        "--out", str(out), "--work-dir", str(tmp_path / "work"),
    ])
    assert written == out
    text = out.read_text()
    assert "| Section | Recipe | Measurement | Value | Unit | Note |" in text
    assert "Load average" in text and "TensorFlow 2." in text
    for measurement in ("pipeline, 1st pass (decodes)", "pipeline, cached pass", "model consumes",
                        "1st pass / model", "runner / plain"):
        assert f"| {measurement} |" in text, measurement
    assert "| utilisation of FP32 peak |" in text
    assert "failed:" not in text  # every variant the size asks for ran


def test_break_even_counts_the_steps_that_pay_for_a_compile():
    # 60 s more before the first step, 3.0 -> 2.0 s per step: paid back after 60 steps
    assert break_even_steps(60.0, step_off=3.0, step_on=2.0) == pytest.approx(60.0)
    assert break_even_steps(60.0, step_off=2.0, step_on=2.5) is None  # slower per step: never
    assert break_even_steps(-1.0, step_off=3.0, step_on=2.0) == 0.0  # no extra cost: at once
