"""The tf.data pipeline shared by every dataset: decode, resize, cache, augment, batch, prefetch."""
from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class PipelineSpec:
    """How one split becomes batches. Built by the runner from the composed config."""

    image_size: int
    batch_size: int
    num_classes: int
    one_hot: bool = False  # categorical labels (label smoothing needs them)
    flip: bool = False  # training only
    crop_size: int | None = None  # training only: random crop after the resize
    drop_remainder: bool = False  # static shapes (the NPU needs them)
    mixup_alpha: float = 0.0  # training only: MixUp of each batch with itself reversed
    cache: bool = False  # keep decoded, resized images in memory after the first epoch
    shuffle_buffer: int = 10_000
    seed: int = 0
    # Training decodes in parallel in whatever order finishes first, unless the run must repeat
    # exactly (TF >= 2.9's op determinism would force this; TF 2.6's TF_DETERMINISTIC_OPS does not).
    deterministic: bool = False


def decode(encoded: tf.Tensor) -> tf.Tensor:
    """JPEG/PNG/GIF/BMP bytes -> uint8 RGB [height, width, 3] (a GIF's first frame). The check
    before training (data/decode_check.py) decodes with this too, so what passes it trains."""
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def decode_and_resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded bytes or a pixel array -> float32 RGB [image_size, image_size, 3] in [0, 255]."""
    if image.dtype == tf.string:
        image = decode(image)
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    image = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size))
    return tf.ensure_shape(image, (image_size, image_size, 3))


def augment(image: tf.Tensor, flip: bool, crop_size: int | None) -> tf.Tensor:
    """BiT's training augmentation: random horizontal flip, then a random square crop."""
    if flip:
        image = tf.image.random_flip_left_right(image)
    if crop_size:
        image = tf.image.random_crop(image, (crop_size, crop_size, 3))
    return image


def mixup(images: tf.Tensor, labels: tf.Tensor, alpha: float) -> tf.Tensor:
    """BiT's MixUp: one lambda ~ Beta(alpha, alpha) per batch, mixed with the batch reversed."""
    a, b = tf.random.gamma([], alpha), tf.random.gamma([], alpha)
    lam = a / (a + b)
    mixed_images = lam * images + (1 - lam) * tf.reverse(images, [0])
    return mixed_images, lam * labels + (1 - lam) * tf.reverse(labels, [0])


def make_batches(ds: tf.data.Dataset, spec: PipelineSpec, training: bool) -> tf.data.Dataset:
    """Batches of (images, labels) for one split; training batches are shuffled and augmented."""
    ds = ds.map(
        lambda image, label: (decode_and_resize(image, spec.image_size), label),
        num_parallel_calls=AUTOTUNE,
        deterministic=spec.deterministic or not training,
    )
    if spec.cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(spec.shuffle_buffer, seed=spec.seed, reshuffle_each_iteration=True)
        if spec.flip or spec.crop_size:
            ds = ds.map(
                lambda image, label: (augment(image, spec.flip, spec.crop_size), label),
                num_parallel_calls=AUTOTUNE,
            )
    ds = ds.batch(spec.batch_size, drop_remainder=spec.drop_remainder)
    if spec.one_hot:
        ds = ds.map(lambda images, labels: (images, tf.one_hot(labels, spec.num_classes)))
    if training and spec.mixup_alpha > 0:
        ds = ds.map(lambda images, labels: mixup(images, labels, spec.mixup_alpha))
    return without_autotuning(ds.prefetch(AUTOTUNE))


def without_autotuning(ds: tf.data.Dataset) -> tf.data.Dataset:
    """ds with tf.data's autotuning off: AUTOTUNE then means TensorFlow's defaults (parallel maps
    on every core, prefetching on), as fast here as tuned (docs/performance.md). Dropping a tuned
    iterator waits for its tuning thread, whose wake-up can be lost: it then sleeps out its
    period, which doubles up to 60 s, so fit() ended 16-38 s late in about one run of three."""
    options = tf.data.Options()
    if hasattr(options, "autotune"):  # TF >= 2.7
        options.autotune.enabled = False
    else:  # TF 2.6
        options.experimental_optimization.autotune = False
    return ds.with_options(options)


def caches_in_memory(ds: tf.data.Dataset) -> bool:
    """Whether a cache() stage is upstream of ds, read from the pipeline itself (its chain of
    input datasets: tf.data has no public way to list them; both stacks name the stage
    CacheDataset)."""
    pending = [ds]
    while pending:
        stage = pending.pop()
        if type(stage).__name__ == "CacheDataset":
            return True
        pending.extend(stage._inputs())
    return False
