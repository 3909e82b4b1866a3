"""The resizer recipe's networks, checked against the published shapes and parameter counts."""

import numpy as np
import pytest

from models.resizer import build_resizer_densenet, learnable_resizer
from runner.keras2 import keras

pytestmark = pytest.mark.ascend_stack  # also in the Ascend stack's CI subset


def test_learnable_resizer_has_the_papers_12163_weights():
    inputs = keras.Input((300, 300, 3))
    resizer = keras.Model(inputs, learnable_resizer(inputs, 150))
    assert resizer.count_params() == 12_163
    assert resizer.output_shape == (None, 150, 150, 3)


# DenseNet-121 takes seconds to build: two builds serve the tests below.
@pytest.fixture(scope="module")
def with_resizer():
    return build_resizer_densenet(2, 64, 32, learnable_resizer_on=True, bn_momentum=0.9)


@pytest.fixture(scope="module")
def baseline():
    return build_resizer_densenet(2, 64, 32, learnable_resizer_on=False)  # Keras' bn_momentum


def test_densenet_baseline_is_the_same_network_without_the_resizer(with_resizer, baseline):
    assert with_resizer.count_params() - baseline.count_params() == 12_163
    assert (with_resizer.name, baseline.name) == ("resizer_densenet", "densenet")


@pytest.mark.slow
def test_softmax_output_stays_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = build_resizer_densenet(3, 64, 32)
    probs = model(np.full((2, 64, 64, 3), 128.0, np.float32))
    assert probs.dtype == "float32"
    np.testing.assert_allclose(np.sum(probs, axis=-1), 1.0, rtol=1e-5)


def test_bn_momentum_reaches_every_batchnorm_layer(with_resizer, baseline):
    momenta = {
        layer.momentum for layer in with_resizer.get_layer("densenet121").layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    assert momenta == {0.9}
    assert baseline.get_layer("densenet121").get_layer("bn").momentum == 0.99


def test_batchnorm_momentum_reaches_the_layers_of_nested_models():
    """DenseNet-121 sits inside the resizer's model as one layer: model.bn_momentum must reach the
    BatchNormalization layers inside it (and inside models nested deeper), not only the top's."""
    from models.resizer import set_batchnorm_momentum

    inner = keras.Sequential([keras.layers.Dense(4, input_shape=(4,)), keras.layers.BatchNormalization()])
    middle = keras.Sequential([inner, keras.layers.BatchNormalization()])
    outer = keras.Sequential([middle, keras.layers.BatchNormalization(), keras.layers.Dense(2)])
    set_batchnorm_momentum(outer, 0.9)
    found = [outer.layers[1].momentum, middle.layers[1].momentum, inner.layers[1].momentum]
    assert found == [0.9, 0.9, 0.9]
