"""Small datasets in the real on-disk formats, written by the same libraries users prepare with.

Plain functions (not fixtures) so any test module or benchmark can import them.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def class_images(num_classes: int, per_class: int, size: int | tuple[int, int], seed: int = 0) -> list:
    """(uint8 image, label) pairs a model can learn: each class has its own mean colour.

    size: a side, or (height, width) for photo-shaped images.
    """
    height, width = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    pairs = []
    for label in range(num_classes):
        colour = np.array([(label * 97) % 256, (label * 53 + 80) % 256, (label * 151 + 160) % 256])
        for _ in range(per_class):
            noise = rng.integers(-40, 40, (height, width, 3))
            pairs.append((np.clip(colour + noise, 0, 255).astype(np.uint8), label))
    # The order rng.shuffle(pairs) gives, without numpy 1.19's ragged-array warning (Ascend stack).
    return [pairs[i] for i in rng.permutation(len(pairs))]


def write_tfds_folder(
    data_dir: Path,
    name: str = "tf_flowers",
    version: str = "3.0.1",
    class_names: tuple[str, ...] = ("dandelion", "daisy", "tulips", "sunflowers", "roses"),
    per_class: int = 8,
    size: int | tuple[int, int] = 40,
    encoding_format: str = "png",
) -> Path:
    """A TFDS-prepared `<data_dir>/<name>/<version>/` written by TFDS's own writer.

    A throwaway `GeneratorBasedBuilder` named `name` at `version`, prepared offline: the same
    code on TFDS 4.6.0 (Ascend stack, no `store_as_tfds_dataset`) and 4.9.10. One `train` split.
    encoding_format: "jpeg" stores images as the real tf_flowers and cats_vs_dogs do.
    """
    import tensorflow_datasets as tfds

    pairs = class_images(len(class_names), per_class, size)
    builder_name = name  # a class body cannot read a function argument it also assigns

    # skip_registration: TFDS already registers tf_flowers and cats_vs_dogs, and each call
    # defines a new class under the same name.
    class FixtureBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = builder_name
        VERSION = tfds.core.Version(version)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(
                            shape=(None, None, 3), encoding_format=encoding_format
                        ),
                        "label": tfds.features.ClassLabel(names=list(class_names)),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for key, (image, label) in enumerate(pairs):
                yield key, {"image": image, "label": label}

    with tfds_offline():
        builder = FixtureBuilder(data_dir=str(data_dir))
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    return Path(data_dir) / name / version


@contextmanager
def tfds_offline() -> Iterator[None]:
    """TFDS without its GCS bucket, for the block only.

    Offline, and nothing of the real dataset: with GCS enabled (TFDS 4.6.0's default), a builder
    named tf_flowers merges gs://tfds-data's tf_flowers/3.0.1 metadata (label names, ...) into its
    info on creation, and download_and_prepare fetches the real prepared files instead of
    generating.
    """
    from tensorflow_datasets.core.utils import gcs_utils

    was_disabled = gcs_utils._is_gcs_disabled
    gcs_utils._is_gcs_disabled = True
    try:
        yield
    finally:
        gcs_utils._is_gcs_disabled = was_disabled


def write_image_folder(
    root: Path, class_names: tuple[str, ...] = ("cat", "dog"), per_class: int = 6, size: int = 24
) -> Path:
    """`<root>/<class>/<n>.png|jpg`: the layout of dataset=image_folder (PNGs and JPEGs mixed)."""
    import tensorflow as tf

    for i, (image, label) in enumerate(class_images(len(class_names), per_class, size)):
        folder = Path(root) / class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        if i % 2:
            (folder / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
        else:
            (folder / f"{i}.jpg").write_bytes(tf.io.encode_jpeg(image).numpy())
    return Path(root)
