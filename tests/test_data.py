"""Datasets read from the real on-disk formats, split as the recipes say, batched as the models need."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from data.digits import load_digits_splits
from data.image_folder import load_image_folder_splits
from data.pipeline import PipelineSpec, make_batches
from data.tfds_folder import load_tfds_splits
from tests.data_fixtures import write_image_folder, write_tfds_folder

pytestmark = pytest.mark.ascend_stack  # also in the Ascend stack's CI subset


def count(ds: tf.data.Dataset) -> int:
    return sum(1 for _ in ds)


def test_tf_flowers_folder_splits_85_15(tmp_path):
    write_tfds_folder(tmp_path, "tf_flowers", "3.0.1", per_class=4)  # 5 classes x 4 = 20
    train, val, names = load_tfds_splits(
        "tf_flowers", str(tmp_path), "3.0.1", "train[:85%]", "train[85%:]"
    )
    assert names == ["dandelion", "daisy", "tulips", "sunflowers", "roses"]
    assert (count(train), count(val)) == (17, 3)
    image, label = next(iter(train))
    assert image.dtype == tf.string and label.dtype == tf.int32  # decoded later, in parallel


def test_cats_vs_dogs_seed_version_folder_is_read_although_tfds_registers_4_0_1(tmp_path):
    write_tfds_folder(tmp_path, "cats_vs_dogs", "4.0.0", ("cat", "dog"), per_class=10)
    train, val, names = load_tfds_splits(
        "cats_vs_dogs", str(tmp_path), "4.0.0", "train[:40%]", "train[40%:50%]"
    )
    assert names == ["cat", "dog"] and (count(train), count(val)) == (8, 2)


@pytest.mark.parametrize("pointer", ["root", "dataset", "version"])
def test_data_dir_may_point_at_any_level_of_the_layout(tmp_path, pointer):
    version_dir = write_tfds_folder(tmp_path, "tf_flowers", "3.0.1", per_class=2)
    data_dir = {"root": tmp_path, "dataset": version_dir.parent, "version": version_dir}[pointer]
    train, _, _ = load_tfds_splits("tf_flowers", str(data_dir), None, "train", "train[:1]")
    assert count(train) == 10


def test_image_folder_split_keeps_every_class_in_both_splits(tmp_path):
    write_image_folder(tmp_path / "pets", ("cat", "dog", "fox"), per_class=5)
    train, val, names = load_image_folder_splits(str(tmp_path / "pets"), 0.2, seed=1)
    assert names == ["cat", "dog", "fox"]
    assert sorted(int(y) for _, y in val) == [0, 1, 2]
    assert count(train) == 12


def test_image_folder_holds_out_the_same_images_for_the_same_seed(tmp_path):
    """README: image_folder holds out dataset.val_fraction of each class, fixed by `seed`."""
    write_image_folder(tmp_path / "pets", ("cat", "dog"), per_class=10)

    def held_out(seed: int) -> list[bytes]:
        _, val, _ = load_image_folder_splits(str(tmp_path / "pets"), 0.3, seed=seed)
        return [image.numpy() for image, _ in val]

    assert len(held_out(1)) == 6  # 3 of each class's 10
    assert held_out(1) == held_out(1) and held_out(1) != held_out(2)


def test_digits_are_stratified_and_scaled_to_pixels():
    train, val, names = load_digits_splits(0.2, seed=0)
    assert names == [str(d) for d in range(10)]
    images = np.stack([x.numpy() for x, _ in train])
    assert images.shape[1:] == (8, 8, 1) and images.max() == pytest.approx(255.0)
    val_labels = np.array([int(y) for _, y in val])
    assert len(val_labels) == 360 and np.bincount(val_labels).min() >= 34


def test_pipeline_decodes_resizes_crops_and_one_hots(tmp_path):
    write_image_folder(tmp_path / "pets", per_class=4, size=20)
    train, val, _ = load_image_folder_splits(str(tmp_path / "pets"), 0.25, seed=0)
    spec = PipelineSpec(
        image_size=32, batch_size=3, num_classes=2, one_hot=True, flip=True, crop_size=24,
        drop_remainder=True,
    )
    batches = list(make_batches(train, spec, training=True))
    assert len(batches) == 2  # 6 images, static batches of 3
    images, labels = batches[0]
    assert images.shape == (3, 24, 24, 3) and images.dtype == tf.float32
    assert labels.shape == (3, 2) and float(tf.reduce_max(images)) > 1.0  # pixels, not [0, 1]
    val_spec = PipelineSpec(image_size=32, batch_size=3, num_classes=2, crop_size=24)
    val_images, _ = next(iter(make_batches(val, val_spec, training=False)))
    assert val_images.shape[1:] == (32, 32, 3)  # no crop when evaluating


def test_grey_digits_become_rgb():
    train, _, _ = load_digits_splits(0.2, seed=0)
    spec = PipelineSpec(image_size=16, batch_size=4, num_classes=10)
    images, labels = next(iter(make_batches(train, spec, training=False)))
    assert images.shape == (4, 16, 16, 3) and labels.dtype == tf.int32
    np.testing.assert_allclose(images[..., 0], images[..., 2])


@pytest.mark.parametrize("training", [True, False])
def test_the_pipeline_runs_without_tf_datas_autotuning(training):
    """Dropping an autotuned iterator waits for its tuning thread, which can miss its wake-up and
    sleep out a period of up to 60 s (fit() ended 16-38 s late in one run of three)."""
    train, _, _ = load_digits_splits(0.2, seed=0)
    ds = make_batches(train, PipelineSpec(image_size=16, batch_size=4, num_classes=10), training)
    options = ds.repeat().options()  # as fit() gets it (runner/fit/datasets.py: epoch_input)
    autotune = options.autotune.enabled if hasattr(options, "autotune") else \
        options.experimental_optimization.autotune
    assert autotune is False


def test_image_folder_holds_out_its_share_of_each_class_not_of_the_whole(tmp_path):
    """Classes of 5, 10 and 7 images at 0.3: round(1.5)=2, 3 and round(2.1)=2 held out, each class
    by its own size (a share of the 22 files would hold out the same number of each)."""
    root = write_image_folder(tmp_path / "pets", ("cat", "dog", "fox"), per_class=10)
    for name, keep in (("cat", 5), ("fox", 7)):
        for extra in sorted((root / name).iterdir())[keep:]:
            extra.unlink()
    train, val, _ = load_image_folder_splits(str(root), 0.3, seed=0)
    assert np.bincount([int(y) for _, y in val]).tolist() == [2, 3, 2]
    assert np.bincount([int(y) for _, y in train]).tolist() == [3, 7, 5]


def test_a_cached_training_split_comes_in_a_new_order_each_epoch(tmp_path):
    """The shuffle comes after the in-memory cache: cached, the order would be frozen at epoch 1."""
    pixels = np.arange(16, dtype=np.uint8).reshape(16, 1, 1, 1).repeat(4, axis=1).repeat(4, axis=2)
    pixels = pixels.repeat(3, axis=3)
    source = tf.data.Dataset.from_tensor_slices((pixels, np.arange(16, dtype=np.int32)))
    spec = PipelineSpec(image_size=4, batch_size=16, num_classes=16, cache=True, seed=3)
    batches = make_batches(source, spec, training=True)
    orders = [next(iter(batches))[1].numpy().tolist() for _ in range(3)]
    assert all(sorted(order) == list(range(16)) for order in orders)
    assert orders[0] != orders[1] or orders[1] != orders[2]
    assert orders[0] != list(range(16))
