"""The TFDS folder fixture writes the layout users prepare, on TFDS 4.6.0 (Ascend) and 4.9.x alike."""
from __future__ import annotations

import pytest
import tensorflow_datasets as tfds

from tests.data_fixtures import write_tfds_folder

pytestmark = pytest.mark.ascend_stack  # also in the Ascend stack's CI subset


def test_tfds_folder_has_the_prepared_layout_and_slices_into_disjoint_parts(tmp_path):
    # A registered name with other classes: the written folder must hold only what was asked.
    version_dir = write_tfds_folder(
        tmp_path, "tf_flowers", "3.0.1", ("a", "b", "c"), per_class=3, size=(8, 12),
        encoding_format="jpeg",
    )
    assert version_dir == tmp_path / "tf_flowers" / "3.0.1"
    for name in ("dataset_info.json", "features.json", "label.labels.txt"):
        assert (version_dir / name).is_file(), name
    assert [p.name for p in version_dir.glob("tf_flowers-train.tfrecord-*")]
    assert (version_dir / "label.labels.txt").read_text().split() == ["a", "b", "c"]

    builder = tfds.builder_from_directory(str(version_dir))
    assert builder.info.features["label"].names == ["a", "b", "c"]
    assert builder.info.features["image"].encoding_format == "jpeg"
    assert builder.info.splits["train"].num_examples == 9

    def images(split: str) -> list[bytes]:
        return [ex["image"].numpy().tobytes() for ex in builder.as_dataset(split=split)]

    first, rest, whole = images("train[:50%]"), images("train[50%:]"), images("train")
    assert len(whole) == 9 and 0 < len(first) < 9 and len(first) + len(rest) == 9
    assert not set(first) & set(rest)
    assert next(iter(builder.as_dataset(split="train")))["image"].shape == (8, 12, 3)
    # The registry still serves TFDS's own tf_flowers builder.
    assert tfds.builder_cls("tf_flowers").__name__ != "FixtureBuilder"
