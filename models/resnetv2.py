"""ResNet-v2 as used in BiT (Kolesnikov et al. 2020), in Keras 2, and a loader for its .npz weights.

Pre-activation bottleneck units with Group Normalization and weight-standardised convolutions,
after google-research/big_transfer (bit_tf2/models.py, bit_pytorch/models.py). The official
weights (e.g. BiT-M-R50x1.npz) expect images in [-1, 1].

Layer names are the .npz key paths with '/' replaced by '_' (Keras names cannot hold '/'):
`resnet/block1/unit01/a/group_norm/gamma` is the `gamma` of layer `block1_unit01_a_group_norm`.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from runner.errors import ConfigError
from runner.keras2 import keras

layers = keras.layers

R50_BLOCK_UNITS = (3, 4, 6, 3)
NPZ_PREFIX = "resnet/"
BIT_WEIGHTS_URL = "https://storage.googleapis.com/bit_models/BiT-M-R50x1.npz"


@keras.utils.register_keras_serializable(package="bit")
class StdConv2D(layers.Conv2D):
    """Conv2D (no bias, no activation) whose kernel is standardised (zero mean, unit variance
    over H, W, C_in) per filter."""

    def call(self, inputs):
        # Standardise in float32 even under a mixed policy: the variance of a bf16 kernel is noisy.
        kernel = tf.cast(self.kernel, tf.float32)
        mean, variance = tf.nn.moments(kernel, axes=[0, 1, 2], keepdims=True)
        kernel = (kernel - mean) / tf.sqrt(variance + 1e-10)
        return tf.nn.conv2d(inputs, tf.cast(kernel, inputs.dtype), self.strides, self.padding.upper())


@keras.utils.register_keras_serializable(package="bit")
class GroupNormalization(layers.Layer):
    """Group Normalization (Wu & He 2018) over the channels of NHWC images, in float32.

    Keras 2.6 (the Ascend stack) has no GroupNormalization layer; this one has the same weights
    (`gamma`, `beta`) on both stacks.
    """

    def __init__(self, groups: int = 32, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.groups, self.epsilon = groups, epsilon

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if channels % self.groups:
            raise ValueError(f"{self.name}: {channels} channels do not split into {self.groups} groups")
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        shape = tf.shape(x)
        channels = x.shape[-1]
        grouped = tf.reshape(x, [shape[0], shape[1], shape[2], self.groups, channels // self.groups])
        mean, variance = tf.nn.moments(grouped, axes=[1, 2, 4], keepdims=True)
        grouped = (grouped - mean) * tf.math.rsqrt(variance + self.epsilon)
        x = tf.reshape(grouped, shape) * tf.cast(self.gamma, tf.float32) + tf.cast(self.beta, tf.float32)
        return tf.cast(x, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "epsilon": self.epsilon}


def group_norm(name: str) -> GroupNormalization:
    return GroupNormalization(groups=32, epsilon=1e-5, name=name)


def std_conv(filters: int, kernel_size: int, name: str, strides: int = 1) -> StdConv2D:
    return StdConv2D(filters, kernel_size, strides=strides, use_bias=False, name=name)


def bottleneck_unit(x, filters: int, strides: int, name: str):
    """Pre-activation bottleneck: GN-ReLU-conv1x1, GN-ReLU-conv3x3 (strided), GN-ReLU-conv1x1."""
    shortcut = x
    x = group_norm(f"{name}_a_group_norm")(x)
    x = layers.ReLU()(x)
    if strides > 1 or x.shape[-1] != 4 * filters:
        # The projection sees the pre-activated input, as in the paper.
        shortcut = std_conv(4 * filters, 1, f"{name}_a_proj_standardized_conv2d", strides)(x)
    x = std_conv(filters, 1, f"{name}_a_standardized_conv2d")(x)

    x = group_norm(f"{name}_b_group_norm")(x)
    x = layers.ReLU()(x)
    x = layers.ZeroPadding2D(1)(x)
    x = std_conv(filters, 3, f"{name}_b_standardized_conv2d", strides)(x)

    x = group_norm(f"{name}_c_group_norm")(x)
    x = layers.ReLU()(x)
    x = std_conv(4 * filters, 1, f"{name}_c_standardized_conv2d")(x)
    return layers.Add()([x, shortcut])


def resnet_v2(
    block_units: Sequence[int] = R50_BLOCK_UNITS,
    width_factor: float = 1,
    name: str = "resnet",
) -> keras.Model:
    """BiT ResNet-v2 feature extractor: images (any size) -> (batch, 2048 * width_factor).

    R50x1 is block_units (3, 4, 6, 3), width_factor 1. Every width must be a multiple of 32
    (GroupNorm's groups), so tests can use width_factor 0.5 and block_units (1, 1, 1, 1).
    """
    width = int(64 * width_factor)
    inputs = keras.Input((None, None, 3))
    x = layers.ZeroPadding2D(3)(inputs)
    x = std_conv(width, 7, "root_block_standardized_conv2d", strides=2)(x)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.MaxPooling2D(3, strides=2)(x)
    for block, units in enumerate(block_units, start=1):
        filters = width * 2 ** (block - 1)
        for unit in range(1, units + 1):
            strides = 2 if block > 1 and unit == 1 else 1
            x = bottleneck_unit(x, filters, strides, name=f"block{block}_unit{unit:02d}")
    x = group_norm("group_norm")(x)
    x = layers.ReLU()(x)
    features = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, features, name=name)


def npz_prefix(layer_name: str) -> str:
    """The .npz key prefix of a layer's weights.

    'block1_unit01_a_group_norm' -> 'resnet/block1/unit01/a/group_norm'.
    """
    # Undo '/' -> '_' only before the path parts, not inside 'root_block' or 'group_norm'.
    path = re.sub(r"_(?=unit\d|[abc]_|proj_|standardized_conv2d|group_norm)", "/", layer_name)
    return NPZ_PREFIX + path


def load_bit_npz(model: keras.Model, path: str | Path) -> None:
    """Loads official BiT weights (e.g. BiT-M-R50x1.npz) into the ResNet-v2 layers of `model`.

    `model` is a `resnet_v2` model or any model that holds one. The classification head of the
    .npz (resnet/head/...) is not used.
    """
    path = Path(path).expanduser()
    if path.suffix != ".npz":
        raise ConfigError(
            f"model.weights '{path}': only the official BiT .npz files are supported (e.g. "
            f"{BIT_WEIGHTS_URL}); download the .npz and set model.weights to its path."
        )
    if not path.is_file():
        raise ConfigError(
            f"model.weights '{path}' does not exist. Download {BIT_WEIGHTS_URL} (or the .npz of "
            "your BiT variant) and set model.weights to its path."
        )
    try:
        with np.load(path) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as error:  # zipfile.BadZipFile, ValueError, OSError, ...
        raise ConfigError(
            f"Cannot read model.weights '{path}' ({type(error).__name__}: {error}); download the "
            "official .npz again."
        ) from error

    assignments, missing, misshaped = [], [], []
    for layer in _all_layers(model):
        if isinstance(layer, StdConv2D):
            params = {"kernel": layer.kernel}
        elif isinstance(layer, GroupNormalization):
            params = {"gamma": layer.gamma, "beta": layer.beta}
        else:
            continue
        for param, variable in params.items():
            key = f"{npz_prefix(layer.name)}/{param}"
            if key not in arrays:
                missing.append(key)
                continue
            value = arrays.pop(key)
            expected = tuple(variable.shape)
            if value.ndim > len(expected) and value.shape[-len(expected) :] == expected:
                value = value.reshape(expected)  # e.g. a gamma stored as (1, 1, 1, C)
            if value.shape != expected:
                misshaped.append(f"{key} {value.shape} (model expects {expected})")
                continue
            assignments.append((variable, value))

    unused = [key for key in arrays if not key.startswith(NPZ_PREFIX + "head/")]
    problems = []
    if missing:
        problems.append(f"missing keys: {_first_few(missing)}")
    if misshaped:
        problems.append(f"wrong shapes: {_first_few(misshaped)}")
    if unused:
        problems.append(f"keys this model has no layer for: {_first_few(unused)}")
    if not (assignments or missing or misshaped):
        problems.append("the model has no ResNet-v2 layers")
    if problems:
        raise ConfigError(
            f"model.weights '{path}' does not fit this ResNet-v2 ({'; '.join(problems)}). Use "
            f"the .npz of the same BiT variant (R50x1 needs BiT-M-R50x1.npz, {BIT_WEIGHTS_URL})."
        )
    for variable, value in assignments:
        variable.assign(value)


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _first_few(items: list[str], count: int = 5) -> str:
    more = f" and {len(items) - count} more" if len(items) > count else ""
    return ", ".join(items[:count]) + more
