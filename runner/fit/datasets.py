"""Dataset config -> batched train and validation pipelines."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Tuple

import tensorflow as tf

from data.pipeline import PipelineSpec, make_batches
from runner.errors import ConfigError
from runner.fit.optim import uses_one_hot_labels

# (examples, global batch) -> (this card's examples, its batch): npu_device.distribute's signature.
# typing's names: a type alias is evaluated at import, and Python 3.7/3.8 subscript no builtin.
Shard = Callable[[tf.data.Dataset, int], Tuple[tf.data.Dataset, int]]


@dataclass
class Splits:
    train: tf.data.Dataset
    val: tf.data.Dataset
    class_names: list[str]
    train_examples: int
    val_examples: int


@dataclass
class Source:
    """The unbatched splits as a source yields them: (encoded bytes or pixels, label)."""

    train: tf.data.Dataset
    val: tf.data.Dataset
    class_names: list[str]


def load_source(dataset_cfg: Any, seed: int) -> Source:
    """The splits of the source named by dataset.source."""
    return Source(*_load_splits(dataset_cfg, seed))


def first_image_shape(ds: tf.data.Dataset) -> tuple[int, int]:
    """(height, width) of a split's first image, before any resize (BiT-HyperRule's input)."""
    image, _ = next(iter(ds.take(1)))
    if image.dtype == tf.string:
        image = tf.io.decode_image(image, channels=3, expand_animations=False)
    return int(image.shape[0]), int(image.shape[1])


def _load_splits(dataset_cfg: Any, seed: int):
    if dataset_cfg.source == "digits":
        from data.digits import load_digits_splits

        return load_digits_splits(dataset_cfg.val_fraction, seed)
    if dataset_cfg.source == "tfds":
        from data.tfds_folder import load_tfds_splits

        return load_tfds_splits(
            dataset_cfg.name, dataset_cfg.data_dir, dataset_cfg.version,
            dataset_cfg.train_split, dataset_cfg.val_split,
        )
    if dataset_cfg.source == "image_folder":
        from data.image_folder import load_image_folder_splits

        return load_image_folder_splits(
            dataset_cfg.path, dataset_cfg.val_fraction, seed, dataset_cfg.checked_images_cache
        )
    raise ConfigError(
        f"dataset.source={dataset_cfg.source!r} is not one of digits, tfds, image_folder."
    )


def count_examples(ds: tf.data.Dataset) -> int:
    n = int(ds.cardinality())
    return n if n >= 0 else int(ds.reduce(0, lambda count, _: count + 1))


def should_cache(pipeline_cfg: Any, decoded_bytes: int) -> bool:
    """pipeline.cache, or when null: cache if the decoded float32 images fit the memory budget.

    Caching skips decode + resize after the first epoch (bench/results.md: the pipeline section).
    """
    if pipeline_cfg.cache is not None:
        return bool(pipeline_cfg.cache)
    return decoded_bytes <= pipeline_cfg.cache_budget_mb << 20


def _split_by_element(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Each worker of a multi-worker run keeps every N-th element. TensorFlow's default splits
    by file instead, which fails when a split has fewer files than there are workers (a small
    TFDS split is one tfrecord) and gives workers unequal step counts."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def build_splits(
    cfg: Any, source: Source, drop_remainder: bool, shard: Shard | None = None
) -> Splits:
    """The data stage: reads the dataset, the model's augmentation and label keys, the pipeline,
    batch_size, seed, deterministic and device.multi_worker. shard: on a multi-card run, this
    card's share of the training examples and its batch."""
    train, val, class_names = source.train, source.val, source.class_names
    train, train_batch = shard(train, cfg.batch_size) if shard else (train, cfg.batch_size)
    train_examples, val_examples = count_examples(train), count_examples(val)
    for split, n in (("training", train_examples), ("validation", val_examples)):
        if n < (train_batch if drop_remainder else 1):
            raise ConfigError(
                f"The {split} split of dataset={cfg.dataset.name} has {n} examples, fewer than "
                f"one batch (batch_size={cfg.batch_size}, static_shape={drop_remainder}). "
                "Lower batch_size or add data."
            )
    image_size = cfg.dataset.image_size
    spec = PipelineSpec(
        image_size=image_size,
        batch_size=cfg.batch_size,
        num_classes=len(class_names),
        one_hot=uses_one_hot_labels(cfg.model),
        flip=cfg.model.flip,
        crop_size=cfg.model.crop_size,
        mixup_alpha=cfg.model.mixup_alpha,
        drop_remainder=drop_remainder,
        cache=should_cache(cfg.pipeline, (train_examples + val_examples) * image_size**2 * 3 * 4),
        seed=cfg.seed,
        deterministic=cfg.deterministic,
    )
    train = make_batches(train, replace(spec, batch_size=train_batch), training=True)
    val = make_batches(val, replace(spec, flip=False, crop_size=None, mixup_alpha=0.0), training=False)
    if cfg.device.multi_worker:
        train, val = _split_by_element(train), _split_by_element(val)
    return Splits(
        train=train,
        val=val,
        class_names=class_names,
        train_examples=train_examples,
        val_examples=val_examples,
    )


def epoch_input(train, steps_per_epoch: int | None):
    """fit()'s training input and steps per epoch: one iterator over the repeated split for the
    whole fit. Given no steps_per_epoch, Keras 2 makes a new iterator of the split every epoch,
    and dropping the old one waits for its tf.data background threads: up to 19 s between epochs
    on this 2-core machine under load (docs/performance.md). An epoch is one pass over the split
    (its batches, the last one partial) either way. A split of unknown length keeps Keras' way."""
    if steps_per_epoch:
        return train.repeat(), steps_per_epoch
    batches = int(train.cardinality())
    return (train.repeat(), batches) if batches > 0 else (train, None)
