"""`python -m bench` runs and writes its table on both stacks: smoke runs, no timing assertion.

The BiT recipe at --quick sizes (a one-conv SavedModel backbone, tiny JPEGs) keeps this under a
minute; the DenseNet-based resizer recipe takes minutes to build and trace on a CPU, so it is
exercised by `python -m bench --quick` by hand, not here.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench import plain_keras
from bench.__main__ import main
from bench.fixtures import write_bit_savedmodel
from bench.rates import fresh_session
from bench.sections import Bench, break_even_steps, xla_skipped
from bench.sizes import FULL, QUICK
from bench.stacks import compare, turn_order
from runner.keras2 import TF_VERSION, keras

pytestmark = pytest.mark.ascend_stack  # the bench runs on both stacks: CI checks it on both


@pytest.mark.slow
def test_quick_bench_writes_its_table(tmp_path):
    out, rows_json = tmp_path / "results.md", tmp_path / "rows.json"
    written = main([
        "--quick", "--recipe", "bit", "--sections", "throughput", "pipeline", "precision",
        "--out", str(out), "--json", str(rows_json), "--work-dir", str(tmp_path / "work"),
    ])
    assert written == out
    text = out.read_text()
    assert "| Section | Recipe | Measurement | Value | Unit | Note |" in text
    assert "Load average" in text and "TensorFlow 2." in text
    assert f"runner: Keras {keras.__version__}" in text and keras.__version__.startswith("2.")
    assert f"plain script: Keras {plain_keras.keras.__version__}" in text
    for measurement in ("pipeline, 1st pass (decodes)", "pipeline, cached pass", "model consumes",
                        "1st pass / model", "runner / plain"):
        assert f"| {measurement} |" in text, measurement
    assert "| utilisation of FP32 peak |" in text
    assert "failed:" not in text  # every variant the size asks for ran, mixed policies included
    assert "| float32 + XLA | n/a | img/s | skipped: " in text  # a reason, not a crash

    rows = {row["measurement"]: row for row in json.loads(rows_json.read_text())["rows"]}
    ratio = rows["runner / plain"]
    assert ratio["value"] > 0 and len(ratio["rounds"]) == 1  # --quick: one measured round
    assert ratio["value"] == pytest.approx(
        rows["runner train(cfg)"]["value"] / rows["plain keras-io script"]["value"]
    )


def test_bench_savedmodel_loads_as_a_tf_hub_layer_and_as_the_plain_scripts_backbone(tmp_path):
    import tensorflow_hub as hub

    path = write_bit_savedmodel(tmp_path / "backbone", "tiny")
    images = np.zeros((2, 32, 32, 3), np.float32)
    runner_side = hub.KerasLayer(str(path), trainable=True)  # as models/bit.py loads it
    assert runner_side(images).shape == (2, 16)
    assert len(runner_side.trainable_weights) == 2  # the conv's kernel and bias: fine-tunable

    plain_side = plain_keras.frozen_savedmodel_layer(str(path))
    wrapper = plain_keras.layers.TFSMLayer if plain_keras.KERAS_3 else hub.KerasLayer
    assert isinstance(plain_side, wrapper)
    assert tuple(plain_side(images).shape) == (2, 16)
    assert not plain_side.trainable_weights  # keras-io trains the head only


def test_fresh_session_sets_the_policy_of_the_runners_keras_and_float32_for_the_plain_one():
    try:
        fresh_session("mixed_float16")
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
        if plain_keras.keras.Model is not keras.Model:  # the default stack: Keras 3's own policy
            assert plain_keras.keras.mixed_precision.global_policy().name == "float32"
        fresh_session()
        assert keras.mixed_precision.global_policy().name == "float32"
    finally:
        fresh_session()
    assert (plain_keras.keras.Model is keras.Model) == (TF_VERSION < (2, 16))  # one Keras on TF 2.6


def test_xla_rows_are_skipped_with_a_reason_where_they_cannot_run(tmp_path, capsys):
    assert "--full" in xla_skipped(Bench(QUICK, tmp_path))
    reason = xla_skipped(Bench(FULL, tmp_path))
    if TF_VERSION >= (2, 8):
        assert reason is None
    else:  # the Ascend stack: Model.compile has no jit_compile
        assert "jit_compile" in reason and "TensorFlow 2.8" in reason
    assert "[bench] XLA skipped:" in capsys.readouterr().out  # printed, not only in the table


def test_stacks_pool_rounds_per_stack_and_compare_img_s_turn_by_turn():
    def document(tensorflow, runner_rounds, plain_rounds):
        ratios = [r / p for r, p in zip(runner_rounds, plain_rounds)]
        rows = [
            {"section": "1 throughput", "recipe": "bit", "measurement": name, "unit": unit,
             "value": float(np.median(values)), "note": "", "rounds": values}
            for name, unit, values in (("runner train(cfg)", "img/s", runner_rounds),
                                       ("plain keras-io script", "img/s", plain_rounds),
                                       ("runner / plain", "ratio", ratios))
        ]
        rows.append({"section": "2 pipeline", "recipe": "bit", "measurement": "x", "unit": "ratio",
                     "value": None, "note": "skipped", "rounds": []})
        return {"stack": {"tensorflow": tensorflow}, "rows": rows}

    documents = [  # documents[turn][stack]
        [document("2.21.0", [10, 12], [10, 10]), document("2.6.5", [20, 20], [10, 10])],
        [document("2.21.0", [14, 14], [7, 7]), document("2.6.5", [21, 21], [14, 14])],
    ]
    rows = {row.measurement: row for row in compare(documents)}
    assert rows["TF 2.21.0: runner train(cfg)"].value == pytest.approx(13)  # 10 12 14 14 pooled
    assert rows["TF 2.21.0: runner / plain"].value == pytest.approx(1.6)  # 1.0 1.2 2.0 2.0
    assert rows["TF 2.6.5: runner / plain"].value == pytest.approx(1.75)  # 2.0 2.0 1.5 1.5
    # per turn, adjacent processes: 20/11 and 21/14
    assert rows["runner train(cfg): TF 2.6.5 / TF 2.21.0"].value == pytest.approx((20 / 11 + 1.5) / 2)
    assert "runner / plain: TF 2.6.5 / TF 2.21.0" not in rows  # ratios of ratios: not img/s
    assert not any("x" == row.measurement.split(": ")[-1] for row in rows.values())  # unmeasured
    assert turn_order(2, 0) == [0, 1] and turn_order(2, 1) == [1, 0]


def test_break_even_counts_the_steps_that_pay_for_a_compile():
    # 60 s more before the first step, 3.0 -> 2.0 s per step: paid back after 60 steps
    assert break_even_steps(60.0, step_off=3.0, step_on=2.0) == pytest.approx(60.0)
    assert break_even_steps(60.0, step_off=2.0, step_on=2.5) is None  # slower per step: never
    assert break_even_steps(-1.0, step_off=3.0, step_on=2.0) == 0.0  # no extra cost: at once
