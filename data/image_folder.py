"""A user's `<path>/<class_name>/*.jpg|png` tree.

Read with a small tf.data pipeline over the checked file list rather than
`keras.utils.image_dataset_from_directory` (which resizes while decoding and reports an unreadable
file only mid-training) or TFDS ImageFolder (which wants train/ and test/ split folders).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from data.checks import list_image_folder
from data.decode_check import check_images_decode


def load_image_folder_splits(
    path: str, val_fraction: float, seed: int, checked_images_cache: str | None = None
) -> tuple[tf.data.Dataset, tf.data.Dataset, list[str]]:
    """(encoded image bytes, label) pairs, split per class so every class is in both splits.
    Every image is decoded first (data/decode_check.py), so that a bad one fails here, named."""
    class_names, files = list_image_folder(path)
    check_images_decode([f for f, _ in files], path, checked_images_cache)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in range(len(class_names)):
        members = [str(f) for f, lab in files if lab == label]
        rng.shuffle(members)
        n_val = int(round(len(members) * val_fraction))
        val += [(f, label) for f in members[:n_val]]
        train += [(f, label) for f in members[n_val:]]
    return _read(train), _read(val), class_names


def _read(pairs: list[tuple[str, int]]) -> tf.data.Dataset:
    paths = [p for p, _ in pairs]
    labels = np.array([lab for _, lab in pairs], dtype=np.int32)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    return ds.map(lambda p, y: (tf.io.read_file(p), y), num_parallel_calls=tf.data.AUTOTUNE)
