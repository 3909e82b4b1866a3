"""What the benchmark trains on: data in the runner's real formats and a BiT-shaped SavedModel.

The SavedModel is built with the runner's Keras 2 (runner.keras2) and exported with TF-Hub's
interface, so `hub.KerasLayer` loads it on both stacks (and Keras 3's TFSMLayer on the default one).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from runner.keras2 import keras
from tests.data_fixtures import write_tfds_folder

# The folder layouts of the two recipes' datasets (conf/dataset/*.yaml).
RECIPE_DATASETS = {
    "resizer": ("cats_vs_dogs", "4.0.0", ("cat", "dog")),
    "bit": ("tf_flowers", "3.0.1", ("dandelion", "daisy", "tulips", "sunflowers", "roses")),
}


def digits_in_memory(side: int) -> tuple[np.ndarray, np.ndarray]:
    """dataset=digits as a plain script holds it: all images resized to `side`, RGB, in [0, 255]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images[..., np.newaxis].astype(np.float32) * (255.0 / 16.0)
    images = tf.image.resize(tf.image.grayscale_to_rgb(tf.constant(images)), (side, side))
    return images.numpy(), digits.target.astype(np.int32)


def write_recipe_jpegs(data_dir: Path, recipe: str, images: int, shape: tuple[int, int]) -> Path:
    """The recipe's TFDS folder holding `images` JPEGs of `shape` (height, width); returns data_dir."""
    name, version, class_names = RECIPE_DATASETS[recipe]
    if not (data_dir / name / version).is_dir():
        write_tfds_folder(
            data_dir, name, version, class_names, per_class=max(2, images // len(class_names)),
            size=shape, encoding_format="jpeg",
        )
    return data_dir


def decoded_tfds_images(data_dir: Path, recipe: str) -> tuple[np.ndarray, np.ndarray]:
    """Every image of the recipe's folder decoded into memory (the plain script's data)."""
    import tensorflow_datasets as tfds

    name, version, _ = RECIPE_DATASETS[recipe]
    builder = tfds.builder_from_directory(str(data_dir / name / version))
    pairs = list(builder.as_dataset(split="train").as_numpy_iterator())
    images = np.stack([pair["image"] for pair in pairs]).astype(np.float32)
    return images, np.array([pair["label"] for pair in pairs], dtype=np.int32)


class FeatureVector(tf.Module):
    """The TF-Hub BiT interface: `__call__` on [0, 1] images -> (batch, features)."""

    def __init__(self, network: keras.Model):
        super().__init__()
        self.network = network

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        return self.network(images, training=False)


def bit_backbone_network(kind: str) -> keras.Model:
    """resnet50v2: ResNet-v2 50 (BiT-M R50x1's shape, 2048 features); tiny: for CI."""
    if kind == "resnet50v2":
        return keras.applications.ResNet50V2(
            include_top=False, weights=None, input_shape=(None, None, 3), pooling="avg"
        )
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="tiny")


def write_bit_savedmodel(path: Path, kind: str) -> Path:
    """A SavedModel with TF-Hub's interface (`__call__`, `variables`, `trainable_variables`)."""
    if not path.is_dir():
        module = FeatureVector(bit_backbone_network(kind))
        root = tf.train.Checkpoint()  # a plain trackable root, like the objects TF-Hub exports
        root.module = module
        root.__call__ = module.__call__
        root.variables = list(module.network.variables)  # Keras 2 weights are tf.Variables
        root.trainable_variables = list(module.network.trainable_variables)
        tf.saved_model.save(root, str(path))
    return path
