"""build_bit with the hub backbone: a small SavedModel with the TF-Hub BiT interface."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from models.bit import build_bit
from runner.errors import ConfigError
from runner.keras2 import keras, optimizers
from tests.bit_fixtures import write_bit_savedmodel, write_tar_gz
from tests.conftest import ON_ASCEND_STACK

pytestmark = pytest.mark.ascend_stack  # also in the Ascend stack's CI subset

FEATURE_DIM = 16


@pytest.fixture(scope="module")
def handle(tmp_path_factory) -> str:
    return str(write_bit_savedmodel(tmp_path_factory.mktemp("hub") / "bit", FEATURE_DIM))


@pytest.fixture
def mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def dark_vs_bright(count: int = 16, size: int = 8, seed: int = 0):
    """A learnable toy task on raw [0, 255] pixels: class 0 is dark, class 1 is bright."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    low = np.where(labels == 1, 128, 0)[:, None, None, None]
    images = low + rng.uniform(0, 127, (count, size, size, 3))
    return images.astype("float32"), labels


def compile_for_bit(model: keras.Model, optimizer: optimizers.Optimizer) -> keras.Model:
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def backbone_values(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_layer("backbone").weights]


def test_backbone_sees_pixels_scaled_to_unit_range(handle):
    images, _ = dark_vs_bright(count=4)
    model = build_bit(2, handle)
    features = keras.Model(model.input, model.get_layer("backbone").output)
    expected = tf.saved_model.load(handle)(tf.constant(images / 255.0, tf.float32))
    np.testing.assert_allclose(features.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_output_is_logits_over_classes_for_any_image_size(handle):
    model = build_bit(5, handle)
    assert model.get_layer("backbone").weights, "the SavedModel's variables are tracked"
    for height, width in [(8, 8), (12, 20)]:
        logits = model.predict(np.zeros((2, height, width, 3), "float32"), verbose=0)
        assert logits.shape == (2, 5)
    np.testing.assert_array_equal(logits, 0.0)  # zero-initialised head, as in BiT


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: optimizers.SGD(0.1, momentum=0.9),  # momentum keeps a slot per backbone variable
        lambda: optimizers.Adam(0.03),
    ],
    ids=["sgd_momentum", "adam"],
)
def test_fine_tuning_updates_the_backbone(handle, optimizer):
    images, labels = dark_vs_bright()
    model = compile_for_bit(build_bit(2, handle, trainable_backbone=True), optimizer())
    assert len(model.trainable_weights) == 4
    before = backbone_values(model)
    loss_before = model.evaluate(images, labels, verbose=0)[0]

    model.fit(images, labels, batch_size=8, epochs=4, verbose=0)

    assert model.evaluate(images, labels, verbose=0)[0] < loss_before - 0.1
    changed = [not np.allclose(a, b) for a, b in zip(before, backbone_values(model))]
    assert all(changed)


def test_frozen_backbone_trains_the_head_only(handle):
    images, labels = dark_vs_bright()
    model = build_bit(2, handle, trainable_backbone=False)
    compile_for_bit(model, optimizers.SGD(0.1, momentum=0.9))
    assert [w.name for w in model.trainable_weights] == ["head/kernel:0", "head/bias:0"]
    before = backbone_values(model)
    loss_before = model.evaluate(images, labels, verbose=0)[0]

    model.fit(images, labels, batch_size=8, epochs=4, verbose=0)

    assert model.evaluate(images, labels, verbose=0)[0] < loss_before - 0.1
    for old, new in zip(before, backbone_values(model)):
        np.testing.assert_array_equal(old, new)


def test_weights_checkpoint_rebuilds_the_same_model(handle, tmp_path):
    images, labels = dark_vs_bright()
    model = compile_for_bit(build_bit(2, handle), optimizers.SGD(0.1, momentum=0.9))
    model.fit(images, labels, batch_size=8, epochs=2, verbose=0)
    model.save_weights(tmp_path / "bit_weights.h5")
    expected = model.predict(images, verbose=0)

    rebuilt = build_bit(2, handle)  # a fresh load of the SavedModel: the original weights
    assert not np.allclose(rebuilt.predict(images, verbose=0), expected)
    rebuilt.load_weights(tmp_path / "bit_weights.h5")
    np.testing.assert_allclose(rebuilt.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_mixed_bfloat16_trains_with_float32_logits(handle, mixed_bfloat16):
    images, labels = dark_vs_bright()
    model = compile_for_bit(build_bit(2, handle), optimizers.SGD(0.1, momentum=0.9))
    assert model.get_layer("backbone").compute_dtype == "float32"
    history = model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert tf.convert_to_tensor(model(images[:2])).dtype == tf.float32


@pytest.mark.skipif(ON_ASCEND_STACK, reason="TF 2.6's Model.compile has no jit_compile (test_train.py)")
def test_jit_compiled_training_step(handle):
    images, labels = dark_vs_bright(count=8)
    model = build_bit(2, handle)
    model.compile(
        optimizer=optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    history = model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    assert model.jit_compile
    assert np.isfinite(history.history["loss"][0])


def test_tar_gz_handle_and_signature_only_savedmodel(tmp_path):
    folder = write_bit_savedmodel(tmp_path / "signature_only", FEATURE_DIM, with_call=False)
    archive = write_tar_gz(folder, tmp_path / "signature_only.tar.gz")
    model = build_bit(3, str(archive), trainable_backbone=False, cache_dir=tmp_path / "cache")
    assert model.get_layer("backbone").get_config()["signature"] == "serving_default"
    assert model.predict(np.zeros((1, 8, 8, 3), "float32"), verbose=0).shape == (1, 3)
    # TF-Hub runs a signature frozen only: fine-tuning it is refused with the fix.
    with pytest.raises(ConfigError, match="model.trainable_backbone=false"):
        build_bit(3, str(archive), trainable_backbone=True, cache_dir=tmp_path / "cache")


def test_feature_maps_model_is_refused(tmp_path):
    folder = write_bit_savedmodel(tmp_path / "maps", FEATURE_DIM, output="maps")
    with pytest.raises(ConfigError, match="feature-vector model is expected") as raised:
        build_bit(2, str(folder))
    assert str(folder) in str(raised.value)


def test_wrong_feature_width_is_refused(handle):
    # e.g. a classification model (1001 logits) where a 2048-d feature vector is expected
    with pytest.raises(ConfigError, match="feature-vector model is expected") as raised:
        build_bit(2, handle, feature_dim=2048)
    assert handle in str(raised.value)
    assert tuple(build_bit(2, handle, feature_dim=FEATURE_DIM).output.shape) == (None, 2)


def test_unknown_backbone_is_refused(handle):
    with pytest.raises(ConfigError, match="model.backbone 'timm'"):
        build_bit(2, handle, backbone="timm")


@pytest.mark.parametrize("damage", ["corrupt saved_model.pb", "no variables folder"])
def test_damaged_savedmodel_is_named(handle, tmp_path, damage):
    folder = tmp_path / "damaged"
    folder.mkdir()
    if damage == "corrupt saved_model.pb":
        (folder / "saved_model.pb").write_bytes(b"not a protobuf")
    else:
        shutil.copy(Path(handle) / "saved_model.pb", folder)
    with pytest.raises(ConfigError, match="Cannot load the SavedModel") as raised:
        build_bit(2, str(folder))
    assert str(folder) in str(raised.value)
