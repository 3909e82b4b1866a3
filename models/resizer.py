"""The learnable image resizer (Talebi & Milanfar, arXiv 2103.09950) in front of DenseNet-121.

Follows keras-io's learnable_resizer.py: the resizer's output is a bilinear resize of the input
plus a learned residual, so it starts close to plain resizing and learns what the classifier needs.
"""
from __future__ import annotations

from runner.keras2 import keras

layers = keras.layers

LEAKY_SLOPE = 0.2


def _conv_bn(x, filters: int, kernel_size: int, activation: bool):
    x = layers.Conv2D(filters, kernel_size, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.LeakyReLU(LEAKY_SLOPE)(x) if activation else x


def _residual_block(x, filters: int):
    shortcut = x
    x = _conv_bn(x, filters, 3, activation=True)
    x = _conv_bn(x, filters, 3, activation=False)
    return layers.Add()([shortcut, x])


def learnable_resizer(
    inputs, target_size: int, filters: int = 16, num_res_blocks: int = 1,
    interpolation: str = "bilinear",
):
    """inputs [H, W, 3] -> [target_size, target_size, 3]; 12,163 weights at the defaults."""
    resize = layers.Resizing(target_size, target_size, interpolation=interpolation)
    naive = resize(inputs)

    x = layers.Conv2D(filters, 7, padding="same")(inputs)
    x = layers.LeakyReLU(LEAKY_SLOPE)(x)
    x = layers.Conv2D(filters, 1, padding="same")(x)
    x = layers.LeakyReLU(LEAKY_SLOPE)(x)
    x = layers.BatchNormalization()(x)
    bottleneck = layers.Resizing(target_size, target_size, interpolation=interpolation)(x)

    x = bottleneck
    for _ in range(num_res_blocks):
        x = _residual_block(x, filters)
    x = _conv_bn(x, filters, 3, activation=False)
    x = layers.Add()([bottleneck, x])

    x = layers.Conv2D(3, 7, padding="same")(x)
    return layers.Add()([naive, x])


def build_resizer_densenet(
    num_classes: int,
    image_size: int,
    target_size: int,
    learnable_resizer_on: bool = True,
    filters: int = 16,
    num_res_blocks: int = 1,
    interpolation: str = "bilinear",
    bn_momentum: float | None = None,
) -> keras.Model:
    """Rescaling(1/255) -> learnable (or bilinear-only) resizer -> DenseNet-121 from scratch.

    bn_momentum, when given, replaces Keras' 0.99 in every BatchNormalization layer.
    """
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    if learnable_resizer_on:
        x = learnable_resizer(x, target_size, filters, num_res_blocks, interpolation)
    else:
        x = layers.Resizing(target_size, target_size, interpolation=interpolation)(x)
    backbone = keras.applications.DenseNet121(
        include_top=False, weights=None, input_shape=(target_size, target_size, 3), pooling="avg"
    )
    x = backbone(x)
    # DenseNet121's own top, built here so softmax stays float32 under a mixed-precision policy.
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    name = "resizer_densenet" if learnable_resizer_on else "densenet"
    model = keras.Model(inputs, outputs, name=name)
    if bn_momentum is not None:
        set_batchnorm_momentum(model, bn_momentum)
    return model


def set_batchnorm_momentum(model: keras.Model, momentum: float) -> None:
    """keras.applications builds BatchNormalization with momentum 0.99 and offers no argument."""
    for layer in _nested_layers(model):
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = momentum


def _nested_layers(layer: keras.layers.Layer):
    yield layer
    for sublayer in getattr(layer, "layers", []):
        yield from _nested_layers(sublayer)
