"""The speed switches `python -m bench` measured: cache, jit_compile, steps_per_execution, threads:
how they compose, and that each reaches a real run."""
from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from runner.fit.callbacks import StepLogger
from runner.fit.datasets import should_cache
from tests.conftest import ON_ASCEND_STACK, compose_config, runner_env

MB = 1 << 20


@pytest.mark.parametrize(
    ("overrides", "decoded_mb", "expected"),
    [
        ([], 100, True),  # null: cache what fits the 2048 MB budget
        ([], 3000, False),
        (["pipeline.cache_budget_mb=50"], 100, False),
        (["pipeline.cache=true"], 3000, True),
        (["pipeline.cache=false"], 1, False),
    ],
)
def test_cache_follows_the_switch_then_the_budget(overrides, decoded_mb, expected):
    assert should_cache(compose_config(overrides).pipeline, decoded_mb * MB) is expected


def test_speed_switches_compose_typed():
    cfg = compose_config(["jit_compile=true", "steps_per_execution=4", "threads.intra_op=2"])
    assert cfg.jit_compile is True and cfg.steps_per_execution == 4 and cfg.threads.intra_op == 2
    assert compose_config([]).jit_compile is None  # Keras 2's default: off


@pytest.mark.parametrize("override", ["jit_compile=maybe", "pipeline.cache=sometimes"])
def test_a_bad_switch_value_fails_while_composing(override):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_config([override])


def test_step_logger_counts_every_step_of_a_multi_step_execution():
    """With steps_per_execution=4 Keras calls the batch hooks once per 4 steps."""
    logger = StepLogger(log_steps=100, batch_size=8, epochs=1)
    logger.on_train_begin()
    logger.on_epoch_begin(0)
    for first in range(0, 12, 4):
        logger.on_train_batch_begin(first)
        logger.on_train_batch_end(first + 3)
    assert logger.steps_seen == 12
    assert logger.steady_steps == 8  # the first execution (4 steps) is within the warm-up


# Each switch away from its default (steps_per_execution 1, TensorFlow's thread pools, digits
# cached because it fits the budget), so a switch that does not reach the run shows its default
# in train.log's "speed switches in effect" line, read back from the compiled model, TensorFlow
# and the pipeline. One process: thread pools are fixed when TensorFlow starts. (jit_compile is
# checked on the compiled model below: XLA compiling would add tens of seconds to this run.)
SWITCHES = ["steps_per_execution=3", "threads.intra_op=1", "threads.inter_op=1", "pipeline.cache=false"]


@pytest.fixture(scope="module")
def switched_run(tmp_path_factory, toy_bit_run) -> dict[str, str]:
    run_dir = tmp_path_factory.mktemp("switches") / "run"
    result = subprocess.run(
        [sys.executable, "-m", "runner", *toy_bit_run, *SWITCHES, f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, env=runner_env(), timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = (run_dir / "train.log").read_text()
    line = next(line for line in log.splitlines() if "speed switches in effect:" in line)
    return {"log": log, **dict(item.split("=") for item in line.split("in effect: ")[1].split())}


@pytest.mark.ascend_stack
def test_the_run_compiles_without_xla_by_default(switched_run):
    assert switched_run["jit_compile"] == "False"  # null: Keras 2 has no auto, it is off


@pytest.mark.skipif(ON_ASCEND_STACK, reason="TF 2.6's Model.compile has no jit_compile")
def test_jit_compile_reaches_the_compiled_model(toy_bit_run):
    """compiled_model is what train() compiles with; the flag is read back from the model."""
    from runner.fit.network import compiled_model
    from runner.keras2 import compiled_switches

    model = compiled_model(compose_config([*toy_bit_run, "jit_compile=true"]), num_classes=10)
    assert compiled_switches(model)["jit_compile"] is True


@pytest.mark.ascend_stack
def test_steps_per_execution_reaches_the_compiled_model(switched_run):
    assert switched_run["steps_per_execution"] == "3"
    # Keras calls the batch hooks once per execution: with log_steps=1, steps 3 and 6 only.
    assert "epoch: 1 step: 3 ," in switched_run["log"]
    assert "epoch: 1 step: 1 ," not in switched_run["log"]


@pytest.mark.ascend_stack
def test_thread_pools_reach_tensorflow(switched_run):
    assert switched_run["threads.intra_op"] == "1" and switched_run["threads.inter_op"] == "1"


@pytest.mark.ascend_stack
def test_pipeline_cache_reaches_the_training_pipeline(switched_run):
    assert switched_run["pipeline.cache"] == "False"


@pytest.mark.ascend_stack
def test_the_default_pipeline_caches_what_fits(tmp_path, toy_bit_run):
    """The other side of the last test: digits fits the default budget, so the pipeline caches."""
    from data.pipeline import caches_in_memory
    from runner.fit.datasets import build_splits, load_source

    cfg = compose_config(toy_bit_run, tmp_path)
    splits = build_splits(cfg, load_source(cfg.dataset, cfg.seed), drop_remainder=False, shard=None)
    assert caches_in_memory(splits.train) and caches_in_memory(splits.val)
