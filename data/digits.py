"""scikit-learn's embedded digits (1,797 8x8 grey images, 10 classes): real data, no download."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

CLASS_NAMES = [str(d) for d in range(10)]
DIGITS_MAX = 16.0  # load_digits pixel values run 0..16


def load_digits_splits(
    val_fraction: float, seed: int
) -> tuple[tf.data.Dataset, tf.data.Dataset, list[str]]:
    """Stratified train/val split of 8x8x1 images scaled to [0, 255] (the pipeline makes them RGB)."""
    # Imported here: scikit-learn adds ~1.3 s to any process that imports it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images * (255.0 / DIGITS_MAX)).astype(np.float32)[..., np.newaxis]
    labels = digits.target.astype(np.int32)
    x_train, x_val, y_train, y_val = train_test_split(
        images, labels, test_size=val_fraction, stratify=labels, random_state=seed
    )
    train = tf.data.Dataset.from_tensor_slices((x_train, y_train))
    val = tf.data.Dataset.from_tensor_slices((x_val, y_val))
    return train, val, CLASS_NAMES
