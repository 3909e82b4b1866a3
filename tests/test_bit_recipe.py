"""The BiT recipe through the runner: model=bit on a TFDS-prepared tf_flowers folder."""

import csv
import tarfile

import numpy as np
import pytest
from omegaconf import OmegaConf

from runner.network import build_network
from runner.train import train
from tests.bit_fixtures import write_bit_savedmodel, write_tar_gz
from tests.conftest import compose_config
from tests.data_fixtures import write_tfds_folder

pytestmark = pytest.mark.ascend_stack  # also in the Ascend stack's CI subset

SMALL_BIT = ["dataset.image_size=40", "model.crop_size=32", "batch_size=8", "log_steps=1"]


@pytest.fixture(scope="module")
def flowers(tmp_path_factory):
    """`<data_dir>/tf_flowers/3.0.1/` plus the seed's `<data_dir>/ttst/` SavedModel and its archive."""
    data_dir = tmp_path_factory.mktemp("bit_data")
    write_tfds_folder(data_dir, "tf_flowers", "3.0.1", per_class=12, size=48)
    write_bit_savedmodel(data_dir / "ttst", feature_dim=16)
    write_tar_gz(data_dir / "ttst", data_dir / "bit_m-r50x1_1.tar.gz")
    return data_dir


@pytest.fixture(scope="module")
def bit_run(flowers, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("bit_run") / "run"
    overrides = [
        "model=bit", f"dataset.data_dir={flowers}",
        f"model.handle={flowers / 'bit_m-r50x1_1.tar.gz'}", *SMALL_BIT,
        "epochs=4", "steps_per_epoch=5", "model.learning_rate=0.4",  # x 8/512 per step
    ]
    return run_dir, train(compose_config(overrides, run_dir))


def test_bit_trains_from_an_archive_and_writes_the_run_directory(bit_run):
    run_dir, metrics = bit_run
    assert metrics["model"] == "bit" and metrics["dataset"] == "tf_flowers"
    for name in ("metrics.json", "history.csv", "checkpoints/best_weights.h5", "env.json"):
        assert (run_dir / name).is_file(), name
    with open(run_dir / "history.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert (run_dir / "checkpoints" / "labels.txt").read_text().split()[0] == "dandelion"


def test_bit_checkpoint_reloads_and_predicts_the_same(bit_run):
    run_dir, metrics = bit_run
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    images = np.random.default_rng(0).uniform(0, 255, (3, 40, 40, 3)).astype("float32")
    first = build_network(cfg.model, metrics["num_classes"], cfg.dataset.image_size)
    first.load_weights(run_dir / "checkpoints" / "best_weights.h5")
    second = build_network(cfg.model, metrics["num_classes"], cfg.dataset.image_size)
    second.load_weights(run_dir / "checkpoints" / "best_weights.h5")
    np.testing.assert_allclose(first.predict(images, verbose=0), second.predict(images, verbose=0))
    assert np.abs(first.get_layer("head").get_weights()[0]).sum() > 0  # the zero head learned


def test_seed_experiment_reads_the_ascend_ttst_folder_with_a_frozen_backbone(flowers, tmp_path):
    overrides = ["experiment=bit_flowers", f"dataset.data_dir={flowers}", *SMALL_BIT,
                 "epochs=1", "steps_per_epoch=2"]
    cfg = compose_config(overrides, tmp_path / "run")
    assert cfg.model.handle == f"{flowers}/ttst" and cfg.model.trainable_backbone is False
    metrics = train(cfg)
    model = build_network(cfg.model, metrics["num_classes"], cfg.dataset.image_size)
    assert [w.name for w in model.trainable_weights] == ["head/kernel:0", "head/bias:0"]  # the head only


def test_hyperrule_decides_resolution_and_steps(flowers, tmp_path):
    overrides = ["model=bit", f"dataset.data_dir={flowers}", f"model.handle={flowers / 'ttst'}",
                 "model.schedule=hyperrule", "batch_size=8", "steps_per_epoch=250"]
    cfg = compose_config(overrides, tmp_path / "run")
    from runner.datasets import count_examples, first_image_shape, load_source
    from runner.hyperrule import apply_hyperrule, bit_hyperrule

    source = load_source(cfg.dataset, cfg.seed)
    rule = bit_hyperrule(count_examples(source.train), *first_image_shape(source.train))
    effective, _ = apply_hyperrule(cfg, rule, count_examples(source.train))
    assert (effective.dataset.image_size, effective.model.crop_size) == (160, 128)  # 48x48 images
    assert effective.epochs == 2 and list(effective.model.lr_boundaries) == [200, 300, 400]


def test_an_archive_with_an_escaping_member_is_refused(tmp_path):
    from runner.errors import ConfigError

    archive = tmp_path / "evil.tar.gz"
    payload = tmp_path / "x.txt"
    payload.write_text("x")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(payload, arcname="../evil.txt")
    cfg = compose_config(["model=bit", f"model.handle={archive}"], tmp_path / "run")
    with pytest.raises(ConfigError) as info:
        build_network(cfg.model, 5, 384)
    assert str(archive) in str(info.value)
    assert not (tmp_path.parent / "evil.txt").exists()
