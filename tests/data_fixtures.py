"""Small datasets in the real on-disk formats, written by the same libraries users prepare with.

Plain functions (not fixtures) so any test module or benchmark can import them.
"""

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
    rng.shuffle(pairs)
    return pairs


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

    encoding_format: "jpeg" stores images as the real tf_flowers and cats_vs_dogs do.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    features = tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format=encoding_format),
            "label": tfds.features.ClassLabel(names=list(class_names)),
        }
    )
    pairs = class_images(len(class_names), per_class, size)
    images = np.stack([image for image, _ in pairs])
    labels = np.array([label for _, label in pairs], dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name,
        version=version,
        features=features,
        split_datasets={"train": ds},
        data_dir=str(data_dir),
    )
    return Path(data_dir) / name / version


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
