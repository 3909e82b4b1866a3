"""Sections 1-6 of the bench (docs/performance.md), one function each, returning table rows."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import plain_keras, startup
from bench.fixtures import (
    RECIPE_DATASETS,
    bit_backbone_network,
    decoded_tfds_images,
    digits_in_memory,
    write_bit_savedmodel,
    write_recipe_jpegs,
)
from bench.flops import TRAIN_FLOPS_PER_FORWARD, forward_flops_per_image, peak_gflops
from bench.rates import (
    QUIET,
    constant_batch,
    fresh_session,
    median,
    model_step_rate,
    new_run_dir,
    pipeline_pass_rates,
    plain_train_rate,
    runner_model,
    runner_train_rate,
)
from bench.report import Row
from bench.sizes import BenchSize
from runner.errors import ConfigError
from runner.fit.callbacks import WARMUP_STEPS, StepLogger
from runner.keras2 import compile_options
from tests.conftest import compose_config

PIPELINE_HEADROOM = 3.0  # the pipeline must deliver 3x what the model consumes


@dataclass(frozen=True)
class Bench:
    """What every section needs: the sizes and a work folder holding data and run folders."""

    size: BenchSize
    work_dir: Path

    @property
    def fit_keys(self) -> list[str]:
        steps = WARMUP_STEPS + self.size.steady_steps
        return [f"batch_size={self.size.batch_size}", "epochs=1", f"steps_per_epoch={steps}",
                f"log_steps={QUIET}"]

    def data_dir(self, recipe: str) -> Path:
        return write_recipe_jpegs(
            self.work_dir / "data", recipe, self.size.pipeline_images, self.size.jpeg_shape
        )

    def bit_handle(self) -> Path:
        return write_bit_savedmodel(self.work_dir / f"bit-{self.size.bit_backbone}", self.size.bit_backbone)

    def bit_keys(self, trainable: bool) -> list[str]:
        return [
            "model=bit", f"dataset.data_dir={self.data_dir('bit')}", f"model.handle={self.bit_handle()}",
            f"model.trainable_backbone={str(trainable).lower()}",
            f"dataset.image_size={self.size.bit_resize}", f"model.crop_size={self.size.bit_crop}",
        ]

    def compose(self, keys: list[str], run_name: str | None = None):
        """The composed config; run_name: train(cfg) will run it, in a new folder of that name."""
        return compose_config(keys, new_run_dir(self.work_dir, run_name) if run_name else None)


# 1. Runner against the plain keras-io script -------------------------------------------------

def throughput_rows(bench: Bench, recipe: str) -> list[Row]:
    """Alternating rounds of the runner's train(cfg) and the plain script; medians and ratio."""
    run_runner, run_plain = _resizer_pair(bench) if recipe == "resizer" else _bit_pair(bench)
    runner_rates, plain_rates = [], []
    for _ in range(bench.size.rounds):
        runner_rates.append(run_runner())
        plain_rates.append(run_plain())
    ratios = [r / p for r, p in zip(runner_rates, plain_rates)]
    rounds = f"median of {bench.size.rounds} alternating rounds, batch {bench.size.batch_size}"
    return [
        Row("1 throughput", recipe, "runner train(cfg)", median(runner_rates), "img/s", rounds,
            tuple(runner_rates)),
        Row("1 throughput", recipe, "plain keras-io script", median(plain_rates), "img/s", rounds,
            tuple(plain_rates)),
        Row("1 throughput", recipe, "runner / plain", median(ratios), "ratio", _per_round(ratios),
            tuple(ratios)),
    ]


def _per_round(ratios: list[float]) -> str:
    return "per-round ratios " + ", ".join(f"{r:.2f}" for r in ratios)


def _resizer_pair(bench: Bench):
    side, batch = bench.size.resizer_side, bench.size.batch_size
    images, labels = digits_in_memory(side)
    keys = ["dataset=digits", f"dataset.image_size={side}", *bench.fit_keys]
    steps = WARMUP_STEPS + bench.size.steady_steps

    def run_runner() -> float:
        return runner_train_rate(bench.compose(keys, "runner-resizer"))

    def run_plain() -> float:
        return plain_train_rate(
            lambda callbacks: plain_keras.train_resizer(
                images, labels, 10, side // 2, batch, steps, callbacks
            ),
            batch,
        )

    return run_runner, run_plain


def _bit_pair(bench: Bench):
    size = bench.size
    keys = [*bench.bit_keys(trainable=False), *bench.fit_keys]  # keras-io trains the head only
    images, labels = decoded_tfds_images(bench.data_dir("bit"), "bit")
    steps = WARMUP_STEPS + size.steady_steps

    def run_runner() -> float:
        return runner_train_rate(bench.compose(keys, "runner-bit"))

    def run_plain() -> float:
        return plain_train_rate(
            lambda callbacks: plain_keras.train_bit(
                images, labels, len(RECIPE_DATASETS["bit"][2]), str(bench.bit_handle()),
                size.bit_resize, size.bit_crop, size.batch_size, steps, callbacks,
            ),
            size.batch_size,
        )

    return run_runner, run_plain


# 2. The input pipeline against the model's step rate -----------------------------------------

def pipeline_rows(bench: Bench, recipe: str) -> list[Row]:
    size = bench.size
    if recipe == "resizer":
        keys = ["dataset=cats_vs_dogs", f"dataset.data_dir={bench.data_dir('resizer')}",
                f"dataset.image_size={size.recipe_resizer_side}"]
        what = f"decode {_jpeg(size)}, resize {size.recipe_resizer_side}"
    else:
        keys = bench.bit_keys(trainable=True)
        what = f"decode {_jpeg(size)}, flip, resize {size.bit_resize}, crop {size.bit_crop}"
    cfg = bench.compose([*keys, "dataset.train_split=train", "dataset.val_split='train[:10%]'",
                         f"batch_size={size.batch_size}", "pipeline.cache=true"])
    decode_rate, cached_rate = pipeline_pass_rates(cfg)
    model_rate, model_note = _consumption_rate(bench, recipe, cfg)
    headroom = decode_rate / model_rate
    verdict = "ok" if headroom >= PIPELINE_HEADROOM else f"BELOW {PIPELINE_HEADROOM:.0f}x"
    return [
        Row("2 pipeline", recipe, "pipeline, 1st pass (decodes)", decode_rate, "img/s", what),
        Row("2 pipeline", recipe, "pipeline, cached pass", cached_rate, "img/s", "pipeline.cache=true"),
        Row("2 pipeline", recipe, "model consumes", model_rate, "img/s", model_note),
        Row("2 pipeline", recipe, "1st pass / model", headroom, "ratio", f"{verdict} (target >= 3)"),
    ]


def _jpeg(size: BenchSize) -> str:
    height, width = size.jpeg_shape
    return f"{height}x{width} JPEG"


def _consumption_rate(bench: Bench, recipe: str, cfg) -> tuple[float, str]:
    """The recipe's training step rate at the pipeline's output size, from in-memory batches."""
    side = cfg.dataset.image_size if recipe == "resizer" else cfg.model.crop_size
    fresh_session()
    model = runner_model(cfg, len(RECIPE_DATASETS[recipe][2]), False, 1)
    data = constant_batch(cfg, side, len(RECIPE_DATASETS[recipe][2]))
    step_meter = model_step_rate(model, data, bench.size.batch_size, bench.size.steady_steps)
    return step_meter.images_per_sec, f"runner's model, {side} px input, float32"


# 3. Precision policies, XLA and steps_per_execution; 4. FLOP/s utilisation -------------------

def xla_skipped(bench: Bench) -> str | None:
    """Why this run measures no XLA, printed and put in the rows' notes; None: it does."""
    if not bench.size.xla:
        reason = "skipped: XLA compiles for minutes on a CPU, measured with --full only"
    else:
        try:
            compile_options(True)  # TensorFlow < 2.8 (the Ascend stack) has no jit_compile
            return None
        except ConfigError as error:
            reason = "skipped: " + str(error).split(". ")[0]
    print(f"[bench] XLA {reason}", flush=True)
    return reason


VARIANTS = (  # (label, dtype policy, jit_compile, steps_per_execution)
    ("float32", "float32", False, 1),
    ("float32 + XLA", "float32", True, 1),
    ("mixed_bfloat16", "mixed_bfloat16", False, 1),
    ("mixed_float16", "mixed_float16", False, 1),
    ("float32, steps_per_execution=4", "float32", False, 4),
)


def precision_and_flops_rows(bench: Bench, recipe: str) -> list[Row]:
    cfg, side = _variant_config(bench, recipe)

    def measure(policy: str, jit: bool, steps_per_execution: int) -> StepLogger:
        return _variant_meter(bench, recipe, cfg, side, policy, jit, steps_per_execution)

    rows, rates = variant_rows(recipe, f"{side} px, batch {cfg.batch_size}", measure, xla_skipped(bench))
    return rows + flops_rows(bench, recipe, cfg, side, rates["float32"])


def variant_rows(
    recipe: str, sizes: str, measure: Callable[[str, bool, int], StepLogger], no_xla: str | None,
) -> tuple[list[Row], dict[str, float]]:
    """One row per VARIANTS entry, measured by measure(policy, jit_compile, steps_per_execution),
    and the img/s of those that ran. XLA's row carries `no_xla` when set."""
    rates: dict[str, float] = {}
    rows = []
    for label, policy, jit, steps_per_execution in VARIANTS:
        if jit and no_xla:
            rows.append(Row("3 precision/XLA", recipe, label, None, "img/s", no_xla))
            continue
        try:
            rates[label] = measure(policy, jit, steps_per_execution).images_per_sec
        except Exception as error:  # a variant this model cannot run is a result, not a crash
            # e.g. TensorFlow 2.6 has no bfloat16 Conv2D for this CPU (the resizer's first conv)
            reason = f"failed: {type(error).__name__}: {_first_line(error)}"[:200]
            print(f"[bench] {recipe} {label}: {reason}", flush=True)
            rows.append(Row("3 precision/XLA", recipe, label, None, "img/s", reason))
            continue
        note = f"{rates[label] / rates['float32']:.2f}x float32, {sizes}"
        rows.append(Row("3 precision/XLA", recipe, label, rates[label], "img/s", note))
    return rows, rates


def _first_line(error: Exception) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), "")


def xla_rows(bench: Bench, recipe: str) -> list[Row]:
    """XLA off and on in alternating rounds: the evidence for the jit_compile default.

    Steady state alone flatters XLA: it compiles before its first step. The break-even is the
    number of steps after which the faster steps have paid for that extra first-step time.
    """
    no_xla = xla_skipped(bench)
    if no_xla:
        return [Row("3 XLA A/B", recipe, "XLA on / off", None, "ratio", no_xla)]
    cfg, side = _variant_config(bench, recipe)
    off, on = [], []
    for _ in range(bench.size.rounds):
        off.append(_variant_meter(bench, recipe, cfg, side, "float32", False, 1))
        on.append(_variant_meter(bench, recipe, cfg, side, "float32", True, 1))
    ratios = [x.images_per_sec / y.images_per_sec for x, y in zip(on, off)]
    rate_off, rate_on = (median([m.images_per_sec for m in ms]) for ms in (off, on))
    first_off, first_on = (median([m.first_step_seconds for m in ms]) for ms in (off, on))
    step_off = cfg.batch_size / rate_off  # per step, sped up by the paired rounds' median ratio
    break_even = break_even_steps(first_on - first_off, step_off, step_off / median(ratios))
    what = f"{side} px, batch {cfg.batch_size}"
    return [
        Row("3 XLA A/B", recipe, "XLA on / off", median(ratios), "ratio",
            f"{what}, img/s off {rate_off:.1f} on {rate_on:.1f}; {_per_round(ratios)}"),
        Row("3 XLA A/B", recipe, "first step, XLA on - off", first_on - first_off, "s",
            f"tracing + compiling: off {first_off:.1f} s, on {first_on:.1f} s"),
        Row("3 XLA A/B", recipe, "XLA break-even", break_even, "steps",
            "training steps before XLA's compile time is paid back"
            if break_even is not None else "XLA was not faster per step"),
    ]


def break_even_steps(extra_first_step: float, step_off: float, step_on: float) -> float | None:
    """Steps after which a switch that costs `extra_first_step` seconds up front and makes each
    step take step_on instead of step_off seconds has paid for itself; None: it never does."""
    saved_per_step = step_off - step_on
    return max(extra_first_step, 0.0) / saved_per_step if saved_per_step > 0 else None


def _variant_config(bench: Bench, recipe: str):
    if recipe == "resizer":
        side = bench.size.resizer_side
        return bench.compose([f"dataset.image_size={side}", *bench.fit_keys]), side
    return bench.compose([*bench.bit_keys(trainable=True), *bench.fit_keys]), bench.size.bit_crop


def _variant_meter(bench, recipe, cfg, side, policy, jit, steps_per_execution) -> StepLogger:
    fresh_session(policy)
    try:
        num_classes = len(RECIPE_DATASETS[recipe][2])
        model = runner_model(cfg, num_classes, jit, steps_per_execution)
        return model_step_rate(model, constant_batch(cfg, side, num_classes), cfg.batch_size,
                               bench.size.steady_steps, steps_per_execution)
    finally:
        fresh_session()


def flops_rows(bench: Bench, recipe: str, cfg, side: int, images_per_sec: float) -> list[Row]:
    """Training FLOP/s achieved at float32 against the CPU's FMA peak."""
    fresh_session()
    if recipe == "resizer":
        model = runner_model(cfg, 10, False, 1)
        counted = "runner's model"
    else:  # the profiler does not look inside the SavedModel's functions: count its network
        model, counted = bit_backbone_network(bench.size.bit_backbone), "backbone network (head ~0)"
    gflop_per_image = forward_flops_per_image(model, side) / 1e9
    achieved = TRAIN_FLOPS_PER_FORWARD * gflop_per_image * images_per_sec
    peak = peak_gflops()
    return [
        Row("4 FLOP/s", recipe, "forward GFLOP per image", gflop_per_image, "GFLOP",
            f"tf.compat.v1.profiler, {counted}, {side} px"),
        Row("4 FLOP/s", recipe, "achieved training GFLOP/s", achieved, "GFLOP/s",
            f"{TRAIN_FLOPS_PER_FORWARD} x forward x float32 img/s"),
        Row("4 FLOP/s", recipe, "utilisation of FP32 peak", 100 * achieved / peak if peak else None, "%",
            f"peak {peak:.0f} GFLOP/s = cores x 32 FLOP/cycle x clock" if peak else "no clock"),
    ]


# 5. Start-up ------------------------------------------------------------------------------

def startup_rows(bench: Bench) -> list[Row]:
    repeats = range(bench.size.startup_repeats)
    cfg_job = median([startup.cfg_job_seconds() for _ in repeats])
    import_tf = median([startup.import_tensorflow_seconds() for _ in repeats])
    keys = ["batch_size=8", "epochs=1", "steps_per_epoch=2"]
    first_step = median([
        startup.first_step_seconds(keys, new_run_dir(bench.work_dir, "first-step")) for _ in repeats
    ])
    return [
        Row("5 start-up", "-", "python -m runner --cfg job", cfg_job, "s", "target < 1 s"),
        Row("5 start-up", "-", "python -c 'import tensorflow'", import_tf, "s", "the floor below"),
        Row("5 start-up", "resizer", "python -m runner -> first step done", first_step, "s",
            "quickstart (digits, resizer_densenet), batch 8"),
    ]


# 6. Speed switches over whole runs -------------------------------------------------------

SWITCHES = (  # (label, overrides); thread pools are fixed once TensorFlow starts: one process each
    ("defaults", []),
    ("jit_compile=true", ["jit_compile=true"]),
    ("threads.intra_op=1", ["threads.intra_op=1"]),
    ("threads.inter_op=1", ["threads.inter_op=1"]),
)


def switches_to_run(no_xla: str | None) -> tuple[list[tuple[str, list[str]]], list[Row]]:
    """The switches this run measures, and the row saying why jit_compile=true is not one of them."""
    switches = [(label, keys) for label, keys in SWITCHES if not (no_xla and "jit" in label)]
    skipped = [Row("6 switches", "resizer", "jit_compile=true: speed-up", None, "ratio", no_xla)]
    return switches, skipped if no_xla else []


def switch_rows(bench: Bench) -> list[Row]:
    """Whole `python -m runner` quickstart runs per switch, alternating: wall time (XLA's compile
    and the evaluations included) and steady img/s, each against the defaults of its round."""
    switches, rows = switches_to_run(xla_skipped(bench))
    walls: dict[str, list[float]] = {label: [] for label, _ in switches}
    rates: dict[str, list[float]] = {label: [] for label, _ in switches}
    for _ in range(bench.size.rounds):
        for label, keys in switches:
            run_dir = new_run_dir(bench.work_dir, "switch")
            wall, rate = startup.whole_run([*bench.size.switch_run, *keys], run_dir)
            walls[label].append(wall)
            rates[label].append(rate)
    run = " ".join(bench.size.switch_run)
    for label, _ in switches:
        rows.append(Row("6 switches", "resizer", f"{label}: wall", median(walls[label]), "s",
                        f"python -m runner {run}, launch to exit; steady img/s {median(rates[label]):.1f}"))
        if label != "defaults":
            wall_ratios = [d / w for d, w in zip(walls["defaults"], walls[label])]
            rows.append(Row("6 switches", "resizer", f"{label}: speed-up", median(wall_ratios), "ratio",
                            f"defaults' wall / this wall; {_per_round(wall_ratios)}"))
    return rows
