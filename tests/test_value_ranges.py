"""Values that cannot train are refused at config time, before TensorFlow, with the valid range."""
from __future__ import annotations

import subprocess
import sys

import pytest

from runner.errors import ConfigError
from runner.preflight import check_config
from tests.conftest import compose_config, runner_env

pytestmark = pytest.mark.ascend_stack  # also in the Ascend stack's CI subset


@pytest.mark.parametrize(("override", "valid_range"), [
    ("model.learning_rate=-1", "must be > 0"),
    ("model.learning_rate=0", "must be > 0"),
    ("model.momentum=1", "must be in [0, 1)"),
    ("model.momentum=-0.5", "must be in [0, 1)"),
    ("model.label_smoothing=1.0", "must be in [0, 1)"),
    ("model.label_smoothing=-0.1", "must be in [0, 1)"),
    ("model.mixup_alpha=-0.2", "must be >= 0"),
    ("model.lr_decay=0", "must be in (0, 1]"),
    ("model.lr_warmup_steps=-1", "must be >= 0"),
    ("model.bn_momentum=1.5", "must be in [0, 1]"),
    ("model.early_stopping_patience=-1", "must be >= 0"),
    ("dataset.val_fraction=1.0", "must be in (0, 1)"),
    ("dataset.val_fraction=0", "must be in (0, 1)"),
])
def test_a_value_that_cannot_train_names_its_valid_range(override, valid_range, tmp_path):
    with pytest.raises(ConfigError) as info:
        check_config(compose_config([override], tmp_path / "run"))
    message = str(info.value)
    assert "\n" not in message and override in message and valid_range in message


@pytest.mark.parametrize("override", [
    "model.momentum=0", "model.momentum=0.99", "model.label_smoothing=0", "model.mixup_alpha=0",
    "model.lr_decay=1", "model.early_stopping_patience=null", "model.bn_momentum=1",
])
def test_the_edges_of_each_range_are_accepted(override, tmp_path):
    check_config(compose_config([override], tmp_path / "run"))


def test_a_negative_learning_rate_stops_the_command_at_once_without_tensorflow(tmp_path):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "runner", "model.learning_rate=-1",
         f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, env=runner_env(), timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "model.learning_rate=-1.0 is out of range" in result.stderr  # a float, as the schema types it
    assert not any(line.rstrip().endswith("| tensorflow") for line in result.stderr.splitlines())
