"""`python -m bench` runs and writes its table: a smoke run, never a timing assertion.

The BiT recipe at --quick sizes (a one-conv SavedModel backbone, tiny JPEGs) keeps this under a
minute; the DenseNet-based resizer recipe takes minutes to build and trace on a CPU, so it is
exercised by `python -m bench --quick` by hand, not here.
"""

from bench.__main__ import main
from bench.sections import bit_available


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
    if bit_available():
        assert "| utilisation of FP32 peak |" in text
    else:
        assert "models.bit is not in this tree yet" in text
