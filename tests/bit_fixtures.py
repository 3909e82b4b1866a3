"""Small on-disk BiT files for tests: a hub-style SavedModel, its .tar.gz, an official-style .npz.

Plain functions (not pytest fixtures) so any test module can import them.
"""
from __future__ import annotations

import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf


class _ToyFeatureVector(tf.Module):
    """A 3x3 conv + ReLU (+ global average pool): [0, 1] images of any size -> features."""

    def __init__(self, feature_dim: int, output: str, seed: int):
        super().__init__()
        rng = np.random.default_rng(seed)
        kernel = rng.normal(0.0, 0.5, (3, 3, 3, feature_dim)).astype("float32")
        self.kernel = tf.Variable(kernel, name="conv/kernel")
        self.bias = tf.Variable(np.full(feature_dim, 0.1, "float32"), name="conv/bias")
        self.output = output

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        maps = tf.nn.relu(tf.nn.conv2d(images, self.kernel, 1, "SAME") + self.bias)
        if self.output == "maps":
            return maps
        return tf.reduce_mean(maps, axis=[1, 2])


def write_bit_savedmodel(
    path: str | Path,
    feature_dim: int = 16,
    output: str = "features",
    seed: int = 0,
    with_call: bool = True,
) -> Path:
    """Saves a SavedModel with the TF-Hub BiT interface (`__call__`, `variables`,
    `trainable_variables`, a "serving_default" signature) and returns its folder.

    output: "features" returns (batch, feature_dim) like a feature-vector model, "maps" returns
    (batch, H, W, feature_dim) like a model without its pooling. with_call=False exports only
    the "serving_default" signature.
    """
    path = Path(path)
    module = _ToyFeatureVector(feature_dim, output, seed)
    root = tf.train.Checkpoint()  # a plain trackable root, like the objects TF-Hub exports
    root.module = module
    if with_call:
        root.__call__ = module.__call__
    root.variables = list(module.variables)
    root.trainable_variables = list(module.trainable_variables)
    signatures = {"serving_default": module.__call__.get_concrete_function()}
    tf.saved_model.save(root, str(path), signatures=signatures)
    return path


def write_tar_gz(folder: str | Path, archive: str | Path, top_folder: str | None = None) -> Path:
    """Packs the content of `folder` into `archive`, at its top or under `top_folder/`."""
    folder, archive = Path(folder), Path(archive)
    with tarfile.open(archive, "w:gz") as tar:
        for item in sorted(folder.iterdir()):
            arcname = f"{top_folder}/{item.name}" if top_folder else item.name
            tar.add(item, arcname=arcname)
    return archive


def bit_npz_shapes(
    block_units: Sequence[int] = (3, 4, 6, 3), width_factor: float = 1, head_classes: int = 0
) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of an official BiT .npz (big_transfer bit_pytorch/models.py
    `load_from`), written out independently of models/resnetv2.py."""
    width = int(64 * width_factor)
    shapes = {"resnet/root_block/standardized_conv2d/kernel": (7, 7, 3, width)}
    channels = width
    for block, units in enumerate(block_units, start=1):
        filters = width * 2 ** (block - 1)
        for unit in range(1, units + 1):
            prefix = f"resnet/block{block}/unit{unit:02d}"
            shapes[f"{prefix}/a/group_norm/gamma"] = (channels,)
            shapes[f"{prefix}/a/group_norm/beta"] = (channels,)
            shapes[f"{prefix}/a/standardized_conv2d/kernel"] = (1, 1, channels, filters)
            if unit == 1:  # the first unit of each block changes width (and stride): projection
                proj_shape = (1, 1, channels, 4 * filters)
                shapes[f"{prefix}/a/proj/standardized_conv2d/kernel"] = proj_shape
            shapes[f"{prefix}/b/group_norm/gamma"] = (filters,)
            shapes[f"{prefix}/b/group_norm/beta"] = (filters,)
            shapes[f"{prefix}/b/standardized_conv2d/kernel"] = (3, 3, filters, filters)
            shapes[f"{prefix}/c/group_norm/gamma"] = (filters,)
            shapes[f"{prefix}/c/group_norm/beta"] = (filters,)
            shapes[f"{prefix}/c/standardized_conv2d/kernel"] = (1, 1, filters, 4 * filters)
            channels = 4 * filters
    shapes["resnet/group_norm/gamma"] = (channels,)
    shapes["resnet/group_norm/beta"] = (channels,)
    if head_classes:
        shapes["resnet/head/conv2d/kernel"] = (1, 1, channels, head_classes)
        shapes["resnet/head/conv2d/bias"] = (head_classes,)
    return shapes


def write_bit_npz(
    path: str | Path,
    block_units: Sequence[int] = (3, 4, 6, 3),
    width_factor: float = 1,
    head_classes: int = 10,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Writes random weights under the official BiT .npz key names; returns what it wrote."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for key, shape in bit_npz_shapes(block_units, width_factor, head_classes).items():
        center = 1.0 if key.endswith("gamma") else 0.0
        arrays[key] = rng.normal(center, 0.2, shape).astype("float32")
    np.savez(path, **arrays)
    return arrays
