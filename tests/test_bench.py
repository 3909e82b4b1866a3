"""`python -m bench` runs and writes its table on both stacks: smoke runs, no timing assertion.

The BiT recipe at --quick sizes (a one-conv SavedModel backbone, tiny JPEGs) keeps this under a
minute; the DenseNet-based resizer recipe takes minutes to build and trace on a CPU, so it is
exercised by `python -m bench --quick` by hand, not here.
"""
from __future__ import annotations

import json
import re
import subprocess
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from bench import plain_keras
from bench.__main__ import DEFAULT_OUT, main
from bench.fixed_costs import cost_rows, log_parts
from bench.fixtures import digits_in_memory, write_bit_savedmodel
from bench.flops import FP32_FLOP_PER_CYCLE_AVX2_FMA, TRAIN_FLOPS_PER_FORWARD
from bench.rates import fresh_session, model_step_rate, runner_model
from bench.sections import (
    SWITCHES,
    VARIANTS,
    Bench,
    break_even_steps,
    switches_to_run,
    variant_rows,
    xla_rows,
    xla_skipped,
)
from bench.sizes import DEFAULT, FULL, QUICK
from bench.stacks import compare, turn_order
from bench.startup import first_step_logged
from runner.keras2 import TF_VERSION, keras
from runner.versions import installed_tensorflow
from tests.conftest import ON_ASCEND_STACK, compose_config, runner_env

pytestmark = pytest.mark.ascend_stack  # the bench runs on both stacks: CI checks it on both
ROOT = Path(__file__).resolve().parent.parent


# The sections test_quick_bench_writes_its_table runs (CI's smoke run, docs/performance.md).
QUICK_SECTIONS = ("throughput", "pipeline", "precision")
STEADY_STEPS = 3  # --steady-steps: one more than --quick's own 2


@pytest.mark.slow
def test_quick_bench_writes_its_table(tmp_path):
    out, rows_json, work = tmp_path / "results.md", tmp_path / "rows.json", tmp_path / "work"
    launched = datetime.now()
    written = main([
        "--quick", "--recipe", "bit", "--sections", *QUICK_SECTIONS, "--rounds", "2",
        "--steady-steps", str(STEADY_STEPS), "--out", str(out), "--json", str(rows_json),
        "--work-dir", str(work),
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
    assert_throughput_is_the_median_of_per_round_ratios(rows)
    assert_the_runner_ran_train_with_the_steps_asked(work)
    assert_pipeline_headroom_is_first_pass_over_model(rows)
    assert [label for label, *_ in VARIANTS] == [
        row["measurement"] for row in rows.values() if row["section"] == "3 precision/XLA"
    ]
    assert_flops_are_three_forwards_against_the_fma_peak(rows)
    # (5) start-up reads the first-step line of train.log: the runner's own line, parsed here
    stamps = [first_step_logged(log.read_text()) for log in work.glob("runner-bit-*/run/train.log")]
    assert stamps and all(stamp and launched <= stamp <= datetime.now() for stamp in stamps)


def assert_throughput_is_the_median_of_per_round_ratios(rows: dict) -> None:
    """docs/performance.md (1): alternating rounds, median of the per-round ratios (--rounds 2)."""
    runner, plain, ratio = (rows[name] for name in ("runner train(cfg)", "plain keras-io script",
                                                    "runner / plain"))
    assert len(ratio["rounds"]) == 2
    assert ratio["rounds"] == pytest.approx([r / p for r, p in zip(runner["rounds"], plain["rounds"])])
    assert ratio["value"] == pytest.approx(float(np.median(ratio["rounds"])))


def assert_the_runner_ran_train_with_the_steps_asked(work) -> None:
    """One runner run folder per round, each fitting the warm-up steps plus --steady-steps."""
    from omegaconf import OmegaConf

    from runner.fit.callbacks import WARMUP_STEPS

    configs = [OmegaConf.load(path) for path in work.glob("runner-bit-*/run/.hydra/config.yaml")]
    assert len(configs) == 2
    assert all(cfg.steps_per_epoch == WARMUP_STEPS + STEADY_STEPS for cfg in configs)


def assert_pipeline_headroom_is_first_pass_over_model(rows: dict) -> None:
    """docs/performance.md (2): the pipeline's images/s against the model's (target: at least 3x)."""
    headroom = rows["1st pass / model"]
    decode, model = rows["pipeline, 1st pass (decodes)"]["value"], rows["model consumes"]["value"]
    assert headroom["value"] == pytest.approx(decode / model)
    assert headroom["note"].startswith("ok" if headroom["value"] >= 3 else "BELOW 3x")


def assert_flops_are_three_forwards_against_the_fma_peak(rows: dict) -> None:
    """docs/performance.md (4): 3 x the forward FLOPs times img/s, against cores x 32 FLOP/cycle
    (two AVX2 FMA pipes: 2 x 8 float32 lanes x 2 FLOP) x clock."""
    assert (TRAIN_FLOPS_PER_FORWARD, FP32_FLOP_PER_CYCLE_AVX2_FMA) == (3, 2 * 8 * 2)
    forward, achieved = rows["forward GFLOP per image"]["value"], rows["achieved training GFLOP/s"]["value"]
    assert achieved == pytest.approx(3 * forward * rows["float32"]["value"])
    utilisation = rows["utilisation of FP32 peak"]
    if utilisation["note"] == "no clock":  # /proc/cpuinfo without `cpu MHz` (e.g. many ARM hosts)
        assert utilisation["value"] is None
        return
    # the peak as the note prints it, whole GFLOP/s (the clock itself moves between readings)
    peak = re.fullmatch(r"peak (\d+) GFLOP/s = cores x 32 FLOP/cycle x clock", utilisation["note"])
    assert peak, utilisation["note"]
    assert utilisation["value"] == pytest.approx(100 * achieved / int(peak.group(1)), rel=0.01)


def test_the_docs_quick_command_is_the_one_ci_runs(tmp_path):
    """docs/performance.md shows CI's smoke run as a command: `--quick`, the BiT recipe and the
    sections test_quick_bench_writes_its_table runs; --quick measures no XLA (its rows skipped)."""
    import shlex

    from bench.__main__ import parse_args
    from tests.test_docs import tool_commands

    quick = [parse_args(shlex.split(command)[3:]) for command in tool_commands()
             if command.startswith("python -m bench --quick")]
    assert [(args.recipe, args.sections) for args in quick] == [("bit", list(QUICK_SECTIONS))]
    assert "xla" not in QUICK_SECTIONS and not QUICK.xla
    assert xla_skipped(Bench(QUICK, tmp_path)).startswith("skipped: ")  # the note of the XLA rows


def test_bench_savedmodel_loads_as_a_tf_hub_layer_and_as_the_plain_scripts_backbone(tmp_path):
    """docs/performance.md: the SavedModel is exported with TF-Hub's interface (`__call__`,
    `variables`, `trainable_variables`); both sides load it, the plain script through
    `keras.layers.TFSMLayer` on Keras 3 (the default stack) and `hub.KerasLayer(path)` on tf.keras 2.6."""
    import tensorflow as tf
    import tensorflow_hub as hub

    path = write_bit_savedmodel(tmp_path / "backbone", "tiny")
    loaded = tf.saved_model.load(str(path))
    assert all(hasattr(loaded, name) for name in ("__call__", "variables", "trainable_variables"))
    images = np.zeros((2, 32, 32, 3), np.float32)
    runner_side = hub.KerasLayer(str(path), trainable=True)  # as models/bit.py loads it
    assert runner_side(images).shape == (2, 16)
    assert len(runner_side.trainable_weights) == 2  # the conv's kernel and bias: fine-tunable

    assert plain_keras.KERAS_3 == (TF_VERSION >= (2, 16))  # what a user of this TensorFlow writes
    plain_side = plain_keras.frozen_savedmodel_layer(str(path))
    wrapper = plain_keras.layers.TFSMLayer if plain_keras.KERAS_3 else hub.KerasLayer
    assert isinstance(plain_side, wrapper)
    assert tuple(plain_side(images).shape) == (2, 16)
    assert not plain_side.trainable_weights  # keras-io trains the head only
    if plain_keras.KERAS_3:  # "Keras 3 cannot hold `hub.KerasLayer`": why TFSMLayer
        with pytest.raises(ValueError, match="keras.Layer"):
            plain_keras.keras.Sequential([hub.KerasLayer(str(path))])


def weight_shapes(model) -> list[tuple[int, ...]]:
    return sorted(tuple(weight.shape) for weight in model.trainable_weights)


def test_the_plain_bit_script_trains_the_runners_network(tmp_path):
    """docs/performance.md: the plain script is "the same network": BiT's frozen backbone and
    a head of the same shape (the bench's runner side: model.trainable_backbone=false)."""
    bench = Bench(QUICK, tmp_path)
    classes = 5
    fresh_session()
    runner_side = runner_model(bench.compose(bench.bit_keys(trainable=False)), classes, False, 1)
    plain_side = plain_keras.bit_classifier(str(bench.bit_handle()), classes)
    assert weight_shapes(runner_side) == weight_shapes(plain_side) == [(classes,), (16, classes)]


def test_the_plain_resizer_script_trains_the_runners_network():
    """docs/performance.md: "the same network". The bench's runner side (the quickstart recipe at
    the size's side) and the plain script put the same learnable resizer, weight for weight, in
    front of `keras.applications.DenseNet121(weights=None)` at half the side. (The whole models,
    DenseNet included, were compared by hand on the default stack: 6,976,141 trainable weights
    each, 2026-11-26; building DenseNet-121 twice would cost this test 13 s.)"""
    from models.resizer import learnable_resizer
    from runner.fit.network import resizer_target_size

    side = QUICK.resizer_side
    model_cfg = compose_config(["dataset=digits", f"dataset.image_size={side}"]).model
    target = resizer_target_size(model_cfg, side)
    assert model_cfg.learnable_resizer and target == side // 2  # the plain script's target size
    inputs = keras.Input((side, side, 3))
    runner_side = keras.Model(inputs, learnable_resizer(
        inputs, target, model_cfg.filters, model_cfg.num_res_blocks, model_cfg.interpolation))
    assert weight_shapes(runner_side) == weight_shapes(plain_keras.learnable_resizer(target))


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
    """docs/performance.md: on the Ascend stack the XLA rows (section 3's `float32 + XLA`, the
    XLA A/B, the `jit_compile=true` switch) are skipped with the reason printed and in the table."""
    assert "--full" in xla_skipped(Bench(QUICK, tmp_path))
    reason = xla_skipped(Bench(FULL, tmp_path))
    if TF_VERSION >= (2, 8):
        assert reason is None
    else:  # the Ascend stack: Model.compile has no jit_compile
        assert "jit_compile" in reason and "TensorFlow 2.8" in reason
    assert "[bench] XLA skipped:" in capsys.readouterr().out  # printed, not only in the table
    # --full where it cannot run, else --quick: either skips before building anything
    bench = Bench(FULL if reason else QUICK, tmp_path)
    why = xla_skipped(bench)
    assert [(row.measurement, row.value, row.note) for row in xla_rows(bench, "resizer")] == [
        ("XLA on / off", None, why)]
    switches, skipped = switches_to_run(why)
    assert [label for label, _ in switches] == ["defaults", "threads.intra_op=1", "threads.inter_op=1"]
    assert [(row.measurement, row.note) for row in skipped] == [("jit_compile=true: speed-up", why)]
    assert switches_to_run(None) == ([(label, keys) for label, keys in SWITCHES], [])


@pytest.mark.skipif(not ON_ASCEND_STACK, reason="TF 2.21 runs bfloat16 Conv2D on a CPU: no variant "
                    "fails there (test_quick_bench_writes_its_table: every variant runs)")
def test_a_precision_variant_the_stack_cannot_run_is_a_row_with_the_error(capsys):
    """docs/performance.md: "A precision variant a stack cannot run is a row with the error, not a
    crash: TF 2.6 has no bfloat16 `Conv2D` on this CPU" ("Missing 0-th output from node
    .../Conv2D"). Section 3's loop over a small real convolutional model: its mixed_bfloat16 row
    is that error, and the variants after it still run."""
    images, labels = digits_in_memory(16)

    def measure(policy: str, jit: bool, steps_per_execution: int):
        fresh_session(policy)
        try:
            inputs = keras.Input((16, 16, 3))
            features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
            model = keras.Model(inputs, keras.layers.Dense(10, dtype="float32")(features))
            model.compile("sgd", "sparse_categorical_crossentropy", steps_per_execution=steps_per_execution)
            data = tf_batches(images[:8], labels[:8])
            return model_step_rate(model, data, 8, 2, steps_per_execution)
        finally:
            fresh_session()

    rows, rates = variant_rows("conv", "16 px, batch 8", measure, "skipped: no XLA here")
    notes = {row.measurement: row.note for row in rows}
    failed = {label for label, note in notes.items() if note.startswith("failed:")}
    assert failed == {"mixed_bfloat16"}, notes
    error = r"failed: InternalError: Missing 0-th output from node \S*Conv2D"
    assert re.match(error, notes["mixed_bfloat16"]), notes
    assert "[bench] conv mixed_bfloat16: failed:" in capsys.readouterr().out
    assert set(rates) == {label for label, *_ in VARIANTS} - failed - {"float32 + XLA"}
    assert notes["float32 + XLA"] == "skipped: no XLA here"


def tf_batches(images: np.ndarray, labels: np.ndarray):
    import tensorflow as tf

    return tf.data.Dataset.from_tensors((images, labels)).repeat()


def test_the_sizes_and_switches_the_docs_describe():
    """docs/performance.md: `python -m bench` is small sizes, 2 rounds, no XLA, and writes
    bench/results.md unless --out; (6) compares `python -m runner epochs=2` with the defaults,
    `jit_compile=true`, `threads.intra_op=1`, `threads.inter_op=1`."""
    assert (DEFAULT.rounds, DEFAULT.xla, FULL.xla) == (2, False, True)
    assert DEFAULT_OUT == ROOT / "bench" / "results.md"
    assert FULL.switch_run == ("epochs=2",)
    assert [label for label, _ in SWITCHES] == [
        "defaults", "jit_compile=true", "threads.intra_op=1", "threads.inter_op=1"]
    assert all(keys == ([] if label == "defaults" else [label]) for label, keys in SWITCHES)


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


def test_the_quickstart_takes_115_steps():
    """docs/performance.md: "the quickstart (115 steps, plus the evaluation step's own compile)
    never earns [XLA's compile] back": 5 epochs of one pass over digits' training split."""
    from runner.fit.datasets import count_examples, load_source

    cfg = compose_config([])
    assert cfg.steps_per_epoch is None  # one pass over the split per epoch
    examples = count_examples(load_source(cfg.dataset, cfg.seed).train)
    assert cfg.epochs * -(-examples // cfg.batch_size) == 115


def test_the_runners_shuffle_buffer_holds_every_split_the_bench_trains_on():
    """docs/performance.md: the runner trains from memory, like the plain script, through
    `pipeline.cache` and a shuffle buffer of 10,000 images (`data/pipeline.py`) that holds every
    split the bench trains on: digits (1,797 images) and the recipes' JPEG folders."""
    from sklearn.datasets import load_digits

    from data.pipeline import PipelineSpec

    buffer = PipelineSpec(image_size=1, batch_size=1, num_classes=1).shuffle_buffer
    assert buffer == 10_000
    assert buffer >= max(len(load_digits().target), *(s.pipeline_images for s in (QUICK, DEFAULT, FULL)))


def test_break_even_counts_the_steps_that_pay_for_a_compile():
    # 60 s more before the first step, 3.0 -> 2.0 s per step: paid back after 60 steps
    assert break_even_steps(60.0, step_off=3.0, step_on=2.0) == pytest.approx(60.0)
    assert break_even_steps(60.0, step_off=2.0, step_on=2.5) is None  # slower per step: never
    assert break_even_steps(-1.0, step_off=3.0, step_on=2.0) == 0.0  # no extra cost: at once


# Section 7's arithmetic on a train.log of known stamps: the parts are disjoint pieces of the wall.
FIXED_COST_LOG = """\
[2026-12-02 10:00:05,000][runner.train][I] speed switches in effect: jit_compile=False
[2026-12-02 10:00:08,000][runner.fit][I] first training step finished 3.00s after fit started
[2026-12-02 10:00:08,000][runner.fit][I] epoch: 1 step: 1 ,loss: 2.3 ,accuracy: 0.1 ,time: 2.5000
[2026-12-02 10:00:09,000][runner.fit][I] epoch: 1 step: 2 ,loss: 2.3 ,accuracy: 0.1 ,time: 1.0000
[2026-12-02 10:00:10,000][runner.fit][I] epoch 1/2 loss: 2.3 accuracy: 0.1 val_loss: 2.3 time: 5.0s
[2026-12-02 10:00:13,500][runner.fit][I] epoch: 2 step: 1 ,loss: 2.2 ,accuracy: 0.2 ,time: 0.5000
[2026-12-02 10:00:14,000][runner.fit][I] epoch: 2 step: 2 ,loss: 2.2 ,accuracy: 0.2 ,time: 0.5000
[2026-12-02 10:00:15,000][runner.fit][I] epoch 2/2 loss: 2.2 accuracy: 0.2 val_loss: 2.2 time: 2.0s
"""


def test_fixed_costs_split_the_wall_by_the_logs_stamps():
    launched, exited = datetime(2026, 12, 2, 10, 0, 0), datetime(2026, 12, 2, 10, 0, 17)
    parts = log_parts(FIXED_COST_LOG, launched, exited)
    assert parts == {"startup": 5.5, "first_step_after_fit": 3.0, "pause_median": 3.0, "pauses": 3.0,
                     "closing": 2.0}
    rows = {row.measurement: row for row in cost_rows("bit", "model=bit", [
        {"wall": 20.0, "steps": 10.0, **parts}, {"wall": 30.0, "steps": 10.0, **parts}], "TF 2.x")}
    ratio = rows["wall / step time, TF 2.x"]
    assert ratio.value == 2.5 and ratio.rounds == (2.0, 3.0) and ratio.note.endswith("2.00, 3.00")
    assert not any("bare" in name for name in rows)  # the floor is the quickstart's alone

    floors = [{"wall": 12.0, "steps": 10.0}, {"wall": 16.0, "steps": 10.0}, {"wall": 30.0, "steps": 20.0}]
    rows = {row.measurement: row for row in cost_rows("resizer", "", [{"wall": 20.0, "steps": 10.0, **parts}],
                                                      "TF 2.x", floors)}
    assert rows["bare Keras 2 script: wall, TF 2.x"].value == 16.0
    assert rows["bare Keras 2 script: wall / step time, TF 2.x"].rounds == (1.2, 1.6, 1.5)
    assert rows["bare Keras 2 script: wall / step time, TF 2.x"].value == 1.5


@pytest.mark.slow
def test_the_bare_keras_script_runs_the_steps_it_is_given():
    """The command bench/fixed_costs.py runs: epochs, batch size, steps per epoch, in that order."""
    from bench.fixed_costs import floor_command

    done = subprocess.run(floor_command(epochs=3, batch_size=4, steps_per_epoch=2), cwd=ROOT,
                          env=runner_env(), capture_output=True, text=True, check=True, timeout=600)
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert printed["steps"] == 6 and printed["step_seconds"] > 0


def test_the_bare_keras_script_trains_on_the_quickstarts_data(tmp_path):
    """bench/keras_floor.py is the floor under the quickstart only if it trains on the same
    examples: the same split, order and pixels of the validation images, the same batches."""
    from bench.keras_floor import digits_batches
    from runner.fit.datasets import build_splits, load_source

    cfg = compose_config([], tmp_path)
    splits = build_splits(cfg, load_source(cfg.dataset, cfg.seed), drop_remainder=False, shard=None)
    train, val = digits_batches(cfg.batch_size)
    assert train.element_spec[0].shape.as_list() == splits.train.element_spec[0].shape.as_list()
    assert sum(1 for _ in train) == -(-splits.train_examples // cfg.batch_size)
    (floor_images, floor_labels), (runner_images, runner_labels) = next(iter(val)), next(iter(splits.val))
    np.testing.assert_allclose(floor_images.numpy(), runner_images.numpy(), atol=1e-3)
    np.testing.assert_array_equal(floor_labels.numpy().argmax(-1), runner_labels.numpy().argmax(-1))


@pytest.mark.slow
def test_fixed_costs_section_measures_whole_runs(tmp_path):
    out, rows_json = tmp_path / "results.md", tmp_path / "rows.json"
    main(["--quick", "--recipe", "bit", "--sections", "fixed_costs", "--out", str(out),
          "--json", str(rows_json), "--work-dir", str(tmp_path / "work")])
    stack = f", TF {installed_tensorflow()[1]}"
    rows = {row["measurement"][: -len(stack)] if row["measurement"].endswith(stack) else row["measurement"]:
            row["value"] for row in json.loads(rows_json.read_text())["rows"]}
    assert f"| 8 fixed costs | bit | wall / step time{stack} |" in out.read_text()
    assert 0 < rows["pure step time"] < rows["wall, launch to exit"]
    fixed = sum(rows[k] for k in ("start-up: launch to first step", "pauses between epochs, all",
                                  "closing: last epoch to exit"))
    assert fixed + rows["pure step time"] <= rows["wall, launch to exit"]  # disjoint parts of it
