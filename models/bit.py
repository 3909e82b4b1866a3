"""BiT (Big Transfer): a pre-trained ResNet-v2 feature extractor plus a zero-initialised head.

After keras-io examples/vision/bit.py. The backbone is either the TF-Hub SavedModel
(`backbone="hub"`, e.g. https://tfhub.dev/google/bit/m-r50x1/1, which expects pixels in [0, 1])
or the native Keras ResNet-v2 of models/resnetv2.py (`backbone="native"`, with the official
.npz weights, which expect pixels in [-1, 1]). Either way the model takes raw float32 pixels in
[0, 255] and returns float32 logits.
"""
from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from models.hub_handle import resolve_handle
from models.resnetv2 import R50_BLOCK_UNITS, load_bit_npz, resnet_v2
from runner.errors import ConfigError
from runner.keras2 import keras

layers = keras.layers

BACKBONES = ("hub", "native")


def build_bit(
    num_classes: int,
    handle: str | None,
    trainable_backbone: bool = True,
    backbone: str = "hub",
    weights: str | Path | None = None,
    cache_dir: str | Path | None = None,
    feature_dim: int | None = None,
    block_units: tuple[int, ...] = R50_BLOCK_UNITS,
    width_factor: float = 1,
) -> keras.Model:
    """Returns a BiT classifier: (batch, H, W, 3) pixels in [0, 255] -> (batch, num_classes) logits.

    handle: the hub backbone (TF-Hub URL, SavedModel folder or .tar.gz; see resolve_handle).
    trainable_backbone: False trains the head only (the keras-io/seed recipe), True fine-tunes
        everything (the BiT paper).
    backbone: "hub" (the SavedModel at `handle`) or "native" (models/resnetv2.py, `weights` an
        official BiT .npz or None for a random init; `handle` is not used).
    feature_dim: when given, the width the backbone's features must have (2048 for R50x1); a
        different width means `handle` is not the feature-vector model.
    block_units, width_factor: the native ResNet-v2's depth and width (R50x1 by default).
    """
    inputs = keras.Input((None, None, 3), dtype="float32", name="pixels")
    if backbone == "hub":
        if not handle:
            raise ConfigError("model.handle is empty: backbone 'hub' needs a TF-Hub model.")
        x = layers.Rescaling(1 / 255, name="to_unit_range")(inputs)
        features_model = hub_layer(resolve_handle(handle, cache_dir), trainable_backbone)
        features = _call_backbone(features_model, x, handle)
    elif backbone == "native":
        x = layers.Rescaling(1 / 127.5, offset=-1, name="to_signed_unit_range")(inputs)
        features_model = resnet_v2(block_units, width_factor, name="resnet")
        if weights is not None:
            load_bit_npz(features_model, weights)
        features_model.trainable = trainable_backbone
        features = features_model(x)
    else:
        raise ConfigError(f"model.backbone '{backbone}' is unknown; use one of {BACKBONES}.")

    if len(features.shape) != 2 or (feature_dim and features.shape[-1] != feature_dim):
        raise ConfigError(
            f"The backbone '{handle if backbone == 'hub' else weights}' returns shape "
            f"{tuple(features.shape)}, but a feature-vector model is expected: (batch, "
            f"{feature_dim or 'features'}). Use a BiT feature_vector model (e.g. "
            "https://tfhub.dev/google/bit/m-r50x1/1), not a classification or feature-map model."
        )
    # float32 head: logits stay float32 under a mixed policy, for a stable softmax.
    logits = layers.Dense(num_classes, kernel_initializer="zeros", dtype="float32", name="head")(
        features
    )
    return keras.Model(inputs, logits, name="bit")


def hub_layer(folder: Path, trainable: bool) -> keras.layers.Layer:
    """The SavedModel as the seed loads it: `hub.KerasLayer(folder, trainable=...)`, through its
    TF-Hub `__call__`, or else its "serving_default" signature (which TF-Hub can only run frozen).

    float32 whatever the policy: the SavedModel's graph is float32.
    """
    import tensorflow_hub as hub

    options = {"trainable": trainable, "dtype": "float32", "name": "backbone"}
    try:
        try:
            return hub.KerasLayer(str(folder), **options)
        except ValueError:  # no __call__: "Signature name has to be specified ..."
            if trainable:
                raise ConfigError(
                    f"The SavedModel '{folder}' has no TF-Hub '__call__', only a "
                    "'serving_default' signature, and TF-Hub cannot fine-tune through a "
                    "signature. Set model.trainable_backbone=false, or export the model with the "
                    "TF-Hub interface (`__call__`, `variables`, `trainable_variables`)."
                ) from None
            return hub.KerasLayer(
                str(folder), signature="serving_default", output_key=_signature_output(folder),
                **options,
            )
    except (OSError, tf.errors.OpError) as error:  # unreadable saved_model.pb, no variables/
        raise ConfigError(
            f"Cannot load the SavedModel '{folder}' ({type(error).__name__}: "
            f"{str(error).splitlines()[0]}). It must hold saved_model.pb, "
            "variables/variables.index and variables/variables.data-*: extract the whole "
            "archive again."
        ) from error


def _signature_output(folder: Path) -> str:
    """The one output of the SavedModel's serving_default signature."""
    signature = tf.saved_model.load(str(folder)).signatures.get("serving_default")
    if signature is None:
        raise ConfigError(
            f"The SavedModel '{folder}' has neither a '__call__' function (the TF-Hub interface) "
            "nor a 'serving_default' signature; export it with one of them."
        )
    outputs = sorted(signature.structured_outputs)
    if len(outputs) != 1:
        raise ConfigError(
            f"The SavedModel '{folder}' signature 'serving_default' returns several outputs "
            f"{outputs}; a single feature tensor is expected."
        )
    return outputs[0]


def _call_backbone(features_model: layers.Layer, x, handle: str):
    try:
        return features_model(x)
    except (ValueError, TypeError) as error:
        raise ConfigError(
            f"The SavedModel '{handle}' cannot be called on a batch of float32 images of any "
            f"size (batch, height, width, 3) in [0, 1] ({type(error).__name__}: {error}). "
            "Use a TF2 image feature-vector model such as https://tfhub.dev/google/bit/m-r50x1/1."
        ) from error
