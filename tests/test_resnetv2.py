"""The native BiT ResNet-v2 against a NumPy transcription of big_transfer's definition."""

import re

import numpy as np
import pytest
import tensorflow as tf
from numpy.lib.stride_tricks import as_strided

from models.bit import build_bit
from models.resnetv2 import StdConv2D, bottleneck_unit, load_bit_npz, resnet_v2
from runner.errors import ConfigError
from runner.keras2 import keras, optimizers
from tests.bit_fixtures import bit_npz_shapes, write_bit_npz
from tests.conftest import ON_ASCEND_STACK

pytestmark = pytest.mark.ascend_stack  # also in the Ascend stack's CI subset

TINY = {"block_units": (2, 1), "width_factor": 0.5}  # 32-channel root, 256-d features


def sliding_window_view(x, size, axis=(1, 2)):
    """numpy's sliding_window_view over H, W of NHWC (numpy >= 1.20; the Ascend stack has 1.19):
    shape (N, H - kh + 1, W - kw + 1, C, kh, kw)."""
    assert axis == (1, 2)
    (n, height, width, channels), (kh, kw) = x.shape, size
    strides = x.strides
    return as_strided(
        x, (n, height - kh + 1, width - kw + 1, channels, kh, kw),
        (*strides, strides[1], strides[2]), writeable=False,
    )


# NumPy reference, written from big_transfer bit_pytorch/models.py (independent of the layers).
def np_standardize(kernel):
    mean = kernel.mean(axis=(0, 1, 2), keepdims=True)
    return (kernel - mean) / np.sqrt(kernel.var(axis=(0, 1, 2), keepdims=True) + 1e-10)


def np_conv(x, kernel, stride=1, pad=0):
    """Weight-standardised convolution, NHWC x HWIO, zero padding `pad` on each side."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    windows = sliding_window_view(x, kernel.shape[:2], axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("nhwcij,ijco->nhwo", windows, np_standardize(kernel))


def np_group_norm(x, gamma, beta, groups=32):
    grouped = x.reshape(*x.shape[:3], groups, x.shape[3] // groups)
    mean = grouped.mean(axis=(1, 2, 4), keepdims=True)
    variance = grouped.var(axis=(1, 2, 4), keepdims=True)
    return ((grouped - mean) / np.sqrt(variance + 1e-5)).reshape(x.shape) * gamma + beta


def np_unit(x, weights, prefix, stride):
    def gn_relu(x, part):
        gamma, beta = (weights[f"{prefix}/{part}/group_norm/{p}"] for p in ("gamma", "beta"))
        return np.maximum(np_group_norm(x, gamma, beta), 0)

    out = gn_relu(x, "a")
    shortcut = x
    if f"{prefix}/a/proj/standardized_conv2d/kernel" in weights:
        shortcut = np_conv(out, weights[f"{prefix}/a/proj/standardized_conv2d/kernel"], stride)
    out = np_conv(out, weights[f"{prefix}/a/standardized_conv2d/kernel"])
    out = np_conv(gn_relu(out, "b"), weights[f"{prefix}/b/standardized_conv2d/kernel"], stride, 1)
    out = np_conv(gn_relu(out, "c"), weights[f"{prefix}/c/standardized_conv2d/kernel"])
    return out + shortcut


def np_resnet(images, weights, block_units):
    x = np_conv(images, weights["resnet/root_block/standardized_conv2d/kernel"], 2, 3)
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    x = sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2].max(axis=(4, 5))
    for block, units in enumerate(block_units, start=1):
        for unit in range(1, units + 1):
            stride = 2 if block > 1 and unit == 1 else 1
            x = np_unit(x, weights, f"resnet/block{block}/unit{unit:02d}", stride)
    x = np_group_norm(x, weights["resnet/group_norm/gamma"], weights["resnet/group_norm/beta"])
    return np.maximum(x, 0).mean(axis=(1, 2))


def layer_weight(model: keras.Model, key: str):
    """The variable of an official .npz key, by the documented naming ('/' -> '_')."""
    layer_path, param = re.sub(r"^resnet/", "", key).rsplit("/", 1)
    return getattr(model.get_layer(layer_path.replace("/", "_")), param)


def random_images(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def test_std_conv2d_matches_numpy():
    x = np.random.default_rng(1).normal(size=(2, 9, 9, 4)).astype("float32")
    conv = StdConv2D(8, 3, strides=2, use_bias=False)
    conv.build(x.shape)
    kernel = np.random.default_rng(2).normal(0.3, 2.0, (3, 3, 4, 8)).astype("float32")
    conv.kernel.assign(kernel)
    np.testing.assert_allclose(conv(x), np_conv(x, kernel, stride=2), rtol=1e-4, atol=1e-4)


def test_bottleneck_unit_matches_numpy(tmp_path):
    inputs = keras.Input((None, None, 128))
    unit = keras.Model(inputs, bottleneck_unit(inputs, 64, strides=2, name="block2_unit01"))
    weights = {
        key: value
        for key, value in write_bit_npz(tmp_path / "all.npz", **TINY).items()
        if key.startswith("resnet/block2/unit01/")
    }
    np.savez(tmp_path / "unit.npz", **weights)
    load_bit_npz(unit, tmp_path / "unit.npz")

    x = np.random.default_rng(3).normal(size=(2, 7, 7, 128)).astype("float32")
    expected = np_unit(x.astype("float64"), weights, "resnet/block2/unit01", stride=2)
    assert expected.shape == (2, 4, 4, 256)
    np.testing.assert_allclose(unit(x), expected, rtol=1e-4, atol=1e-4)


def test_npz_weights_land_in_the_named_layers(tmp_path):
    arrays = write_bit_npz(tmp_path / "tiny.npz", **TINY)
    model = resnet_v2(**TINY)
    load_bit_npz(model, tmp_path / "tiny.npz")
    for key, value in arrays.items():
        if not key.startswith("resnet/head/"):
            np.testing.assert_array_equal(layer_weight(model, key), value, err_msg=key)


def test_r50x1_has_exactly_the_official_keys_and_shapes():
    model = resnet_v2()  # R50x1
    official = bit_npz_shapes((3, 4, 6, 3), 1)
    for key, shape in official.items():
        assert tuple(layer_weight(model, key).shape) == shape, key
    assert len(model.weights) == len(official)
    assert tuple(model.output.shape) == (None, 2048)
    assert model.count_params() == sum(np.prod(s) for s in official.values())


def test_bit_native_matches_numpy_on_raw_pixels_of_two_sizes(tmp_path):
    arrays = write_bit_npz(tmp_path / "tiny.npz", **TINY)
    model = build_bit(3, None, backbone="native", weights=tmp_path / "tiny.npz", **TINY)
    for shape in [(2, 32, 32, 3), (1, 40, 56, 3)]:
        pixels = random_images(shape)
        # Official BiT weights expect [-1, 1]: the model rescales raw pixels itself.
        features = model.get_layer("resnet")(model.get_layer("to_signed_unit_range")(pixels))
        expected = np_resnet(pixels / 127.5 - 1.0, arrays, TINY["block_units"])
        np.testing.assert_allclose(features, expected, rtol=1e-3, atol=1e-3)
        assert model.predict(pixels, verbose=0).shape == (shape[0], 3)


def test_missing_key_is_named(tmp_path):
    arrays = write_bit_npz(tmp_path / "full.npz", **TINY)
    del arrays["resnet/block1/unit02/b/group_norm/beta"]
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(ConfigError, match="missing keys") as raised:
        load_bit_npz(resnet_v2(**TINY), tmp_path / "partial.npz")
    assert "resnet/block1/unit02/b/group_norm/beta" in str(raised.value)
    assert str(tmp_path / "partial.npz") in str(raised.value)


def test_wrong_variant_is_refused(tmp_path):
    # Wider weights: every shape is off. Deeper weights: keys with no layer.
    write_bit_npz(tmp_path / "wide.npz", block_units=(2, 1), width_factor=1)
    with pytest.raises(ConfigError, match="wrong shapes") as raised:
        load_bit_npz(resnet_v2(**TINY), tmp_path / "wide.npz")
    assert "resnet/root_block/standardized_conv2d/kernel (7, 7, 3, 64)" in str(raised.value)

    write_bit_npz(tmp_path / "deep.npz", block_units=(2, 2), width_factor=0.5)
    with pytest.raises(ConfigError, match="no layer for") as raised:
        load_bit_npz(resnet_v2(**TINY), tmp_path / "deep.npz")
    assert "resnet/block2/unit02/" in str(raised.value)


@pytest.mark.parametrize("name", ["BiT-M-R50x1.h5", "missing.npz", "corrupt.npz"])
def test_unusable_weights_file_is_named(tmp_path, name):
    path = tmp_path / name
    if name != "missing.npz":
        path.write_bytes(b"not a weights file")
    with pytest.raises(ConfigError) as raised:
        load_bit_npz(resnet_v2(**TINY), path)
    assert str(path) in str(raised.value)


def test_native_frozen_backbone_keeps_its_weights(tmp_path):
    write_bit_npz(tmp_path / "tiny.npz", **TINY)
    model = build_bit(
        2, None, trainable_backbone=False, backbone="native", weights=tmp_path / "tiny.npz", **TINY
    )
    assert [w.name for w in model.trainable_weights] == ["head/kernel:0", "head/bias:0"]
    before = [np.array(w) for w in model.get_layer("resnet").weights]
    model.compile(
        optimizer=optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(random_images((4, 32, 32, 3)), np.array([0, 1, 0, 1]), batch_size=2, verbose=0)
    assert np.any(np.array(model.get_layer("head").kernel) != 0)
    for old, new in zip(before, model.get_layer("resnet").weights):
        np.testing.assert_array_equal(old, new)


@pytest.mark.slow
def test_native_trains_under_a_mixed_policy_with_jit():
    """mixed_bfloat16 with XLA; on the Ascend stack mixed_float16 without (TF 2.6 has no bf16
    convolution on the CPU and no jit_compile in Model.compile)."""
    keras.mixed_precision.set_global_policy("mixed_float16" if ON_ASCEND_STACK else "mixed_bfloat16")
    try:
        model = build_bit(2, None, backbone="native", block_units=(1,), width_factor=0.5)
        model.compile(
            optimizer=optimizers.SGD(0.1, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            **({} if ON_ASCEND_STACK else {"jit_compile": True}),
        )
        before = np.array(model.get_layer("resnet").weights[0])
        history = model.fit(random_images((2, 32, 32, 3)), np.array([0, 1]), verbose=0, epochs=2)
        logits = model(random_images((1, 24, 40, 3)))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.all(np.isfinite(history.history["loss"]))
    assert tf.convert_to_tensor(logits).dtype == tf.float32
    # README: the native backbone computes in the policy's dtype (a SavedModel's stays float32).
    assert model.get_layer("resnet").compute_dtype == ("float16" if ON_ASCEND_STACK else "bfloat16")
    assert not np.array_equal(before, model.get_layer("resnet").weights[0])
