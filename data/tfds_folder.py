"""A TFDS-prepared folder (dataset_info.json + tfrecords) read offline, with any split slicing."""
from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

from data.checks import find_tfds_version_dir


def load_tfds_splits(
    name: str, data_dir: str, version: str | None, train_split: str, val_split: str
) -> tuple[tf.data.Dataset, tf.data.Dataset, list[str]]:
    """(encoded image bytes, label) pairs of both splits, and the class names.

    The builder comes from the folder itself, not the installed registry: TFDS 4.9.10 registers
    cats_vs_dogs 4.0.1 while prepared folders are often 4.0.0. Images stay encoded so the
    pipeline decodes them in parallel.
    """
    builder = tfds.builder_from_directory(str(find_tfds_version_dir(data_dir, name, version)))
    decoders = {"image": tfds.decode.SkipDecoding()}
    train, val = (
        builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
        .map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32)))
        for split in (train_split, val_split)
    )
    return train, val, list(builder.info.features["label"].names)
