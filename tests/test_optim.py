"""Learning-rate schedules, BiT-HyperRule and MixUp: the numbers the recipes promise."""

import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from data.pipeline import mixup
from runner.fit.hyperrule import apply_hyperrule, bit_hyperrule
from runner.fit.optim import base_learning_rate, build_schedule, uses_one_hot_labels
from tests.conftest import compose_config

pytestmark = pytest.mark.ascend_stack  # also in the Ascend stack's CI subset


def lr_at(schedule, step: int) -> float:
    return float(schedule(step)) if callable(schedule) else float(schedule)


def test_bit_seed_schedule(tmp_path):
    model = compose_config(["model=bit"], tmp_path).model
    assert base_learning_rate(model, 64) == pytest.approx(0.003 * 64 / 512)
    schedule = build_schedule(model, 64)
    lr = 0.003 * 64 / 512
    for step, expected in [(0, lr), (199, lr), (201, lr * 0.1), (301, lr * 0.01), (450, lr * 0.001)]:
        assert lr_at(schedule, step) == pytest.approx(expected, rel=1e-5)


def test_resizer_schedule_is_a_constant_0_01(tmp_path):
    model = compose_config([], tmp_path).model
    assert lr_at(build_schedule(model, 64), 10_000) == pytest.approx(0.01)


def test_warmup_rises_linearly_then_follows_the_schedule(tmp_path):
    model = compose_config(["model=bit", "model.lr_warmup_steps=100"], tmp_path).model
    schedule = build_schedule(model, 512)
    assert lr_at(schedule, 0) == 0.0
    assert lr_at(schedule, 50) == pytest.approx(0.0015)
    assert lr_at(schedule, 150) == pytest.approx(0.003)
    assert lr_at(schedule, 250) == pytest.approx(0.0003)


@pytest.mark.parametrize(
    "examples,side,expected",
    [
        (3_120, 240, ((100, (200, 300, 400), 500), 0.0, (512, 480))),
        (50_000, 32, ((500, (3000, 6000, 9000), 10_000), 0.1, (160, 128))),
        (1_000_000, 500, ((500, (6000, 12_000, 18_000), 20_000), 0.1, (512, 480))),
        # The boundaries: below 20k examples is small, below 500k medium; below 96x96 pixels small.
        (19_999, 96, ((100, (200, 300, 400), 500), 0.0, (512, 480))),
        (20_000, 95, ((500, (3000, 6000, 9000), 10_000), 0.1, (160, 128))),
        (499_999, 96, ((500, (3000, 6000, 9000), 10_000), 0.1, (512, 480))),
        (500_000, 95, ((500, (6000, 12_000, 18_000), 20_000), 0.1, (160, 128))),
    ],
)
def test_hyperrule_table(examples, side, expected):
    rule = bit_hyperrule(examples, side, side)
    assert ((rule.warmup_steps, rule.decay_boundaries, rule.total_steps), rule.mixup_alpha,
            (rule.resize, rule.crop)) == expected


def test_hyperrule_fills_the_config(tmp_path):
    cfg = compose_config(["model=bit", "model.schedule=hyperrule"], tmp_path)
    effective, _ = apply_hyperrule(cfg, bit_hyperrule(3_120, 240, 320), 3_120)
    assert (effective.dataset.image_size, effective.model.crop_size) == (512, 480)
    assert list(effective.model.lr_boundaries) == [200, 300, 400]
    assert effective.model.lr_warmup_steps == 100
    assert effective.epochs * effective.steps_per_epoch >= 500 and effective.epochs == 50
    assert OmegaConf.is_config(effective) and cfg.dataset.image_size == 384  # original untouched


def test_mixup_mixes_images_and_labels_with_one_lambda():
    images = tf.constant(np.stack([np.zeros((2, 2, 3)), np.full((2, 2, 3), 100.0)]), tf.float32)
    labels = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    mixed_images, mixed_labels = mixup(images, labels, alpha=0.4)
    lam = float(mixed_labels[0, 0])
    np.testing.assert_allclose(mixed_labels.numpy().sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(mixed_images[0].numpy(), (1 - lam) * 100.0, rtol=1e-5)


def test_labels_are_one_hot_only_when_needed(tmp_path):
    assert uses_one_hot_labels(compose_config([], tmp_path).model)  # label smoothing 0.1
    assert not uses_one_hot_labels(compose_config(["model=bit"], tmp_path).model)
    assert uses_one_hot_labels(compose_config(["model=bit", "model.mixup_alpha=0.1"], tmp_path).model)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_optimisers_are_keras_2s_optimizer_v2_on_both_stacks(optimizer, tmp_path):
    """docs/devices.md: the optimisers are Keras 2's OptimizerV2 family on both stacks
    (keras.optimizers.legacy on tf-keras 2.21), the family npu_device's wrapper and loss-scale
    optimiser patch."""
    from runner.fit.optim import build_optimizer

    model = compose_config([f"model.optimizer={optimizer}"], tmp_path).model
    ancestors = [cls.__name__ for cls in type(build_optimizer(model, 64)).__mro__]
    assert "OptimizerV2" in ancestors


@pytest.mark.parametrize("model", ["bit", "resizer_densenet"])
def test_the_loss_reads_what_the_network_outputs(model):
    """BiT ends in logits (a zero-initialised Dense head), the resizer's DenseNet in softmax: the
    loss takes each as it is. Read as probabilities, logits would give another (wrong) loss."""
    from runner.fit.optim import build_loss

    cfg = compose_config([f"model={model}", "model.label_smoothing=0.0"])
    outputs = [[2.0, 0.0]] if model == "bit" else [[0.8, 0.2]]
    expected = np.log1p(np.exp(-2.0)) if model == "bit" else -np.log(0.8)
    loss = build_loss(cfg.model)(np.array([0]), np.array(outputs))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
