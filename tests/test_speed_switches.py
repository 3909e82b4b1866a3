"""The speed switches `python -m bench` measured: cache, jit_compile, steps_per_execution, threads."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from runner.callbacks import StepLogger
from runner.datasets import should_cache
from tests.conftest import compose_config

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
    assert should_cache(compose_config(overrides), decoded_mb * MB) is expected


def test_speed_switches_compose_typed():
    cfg = compose_config(["jit_compile=true", "steps_per_execution=4", "threads.intra_op=2"])
    assert cfg.jit_compile is True and cfg.steps_per_execution == 4 and cfg.threads.intra_op == 2
    assert compose_config([]).jit_compile is None  # Keras' auto


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
