"""The BiT recipe through the runner: model=bit on a TFDS-prepared tf_flowers folder."""

import tarfile

import numpy as np
import pytest
from omegaconf import OmegaConf

from runner.evaluate import evaluate_run
from runner.fit.network import build_network
from runner.record.run_folder import read_history
from runner.tools.checkpoint import load_run
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
    """BiT-HyperRule through train(): 60 images of 48x48 pick 160 px images, 128 px crops and
    500 steps (warm-up 100, decays at 200/300/400): 2 epochs of 250 steps of the toy backbone."""
    run_dir = tmp_path_factory.mktemp("bit_run") / "run"
    overrides = [
        "model=bit", f"dataset.data_dir={flowers}", f"model.handle={flowers / 'bit_m-r50x1_1.tar.gz'}",
        f"model.cache_dir={run_dir.parent / 'cache'}",
        "model.schedule=hyperrule", "batch_size=8", "steps_per_epoch=250", "log_steps=50",
        "model.learning_rate=0.4",  # x 8/512 per step
    ]
    return run_dir, train(compose_config(overrides, run_dir))


def test_bit_trains_from_an_archive_and_writes_the_run_directory(bit_run):
    run_dir, metrics = bit_run
    assert metrics["model"] == "bit" and metrics["dataset"] == "tf_flowers"
    for name in ("metrics.json", "history.csv", "checkpoints/best_weights.h5", "env.json"):
        assert (run_dir / name).is_file(), name
    losses = [row["loss"] for row in read_history(run_dir)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert (run_dir / "checkpoints" / "labels.txt").read_text().split()[0] == "dandelion"
    # The archive was extracted once, into model.cache_dir.
    assert len(list((run_dir.parent / "cache").glob("bit_m-r50x1_1-*/saved_model.pb"))) == 1


def test_hyperrule_decides_resolution_and_steps_and_the_run_keeps_both_configs(bit_run):
    run_dir, metrics = bit_run
    effective = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert (effective.dataset.image_size, effective.model.crop_size) == (160, 128)  # 48x48 images
    assert effective.epochs == 2 and list(effective.model.lr_boundaries) == [200, 300, 400]
    assert effective.model.lr_warmup_steps == 100
    assert metrics["optimizer_steps"] == 500 and metrics["epochs_completed"] == 2
    composed = OmegaConf.load(run_dir / ".hydra" / "config.composed.yaml")
    assert composed.model.schedule == "hyperrule" and composed.model.crop_size != 128
    assert composed.epochs != 2


def test_best_checkpoint_scores_what_its_epoch_scored(bit_run):
    """best_weights.h5 rebuilt from the run's effective config (160 px, 128 px crops) scores the
    best epoch's row of history.csv, and its zero-initialised head has learned."""
    run_dir, _ = bit_run
    best_epoch = max(read_history(run_dir), key=lambda row: row["val_accuracy"])
    run = load_run(run_dir, "best")
    evaluated = evaluate_run(run)
    assert evaluated["accuracy"] == pytest.approx(best_epoch["val_accuracy"], abs=1e-6)
    assert evaluated["loss"] == pytest.approx(best_epoch["val_loss"], rel=1e-4)
    assert np.abs(run.model.get_layer("head").get_weights()[0]).sum() > 0


@pytest.mark.slow
def test_seed_experiment_reads_the_ascend_ttst_folder_and_trains_the_head_only(flowers, tmp_path):
    overrides = ["experiment=bit_flowers", f"dataset.data_dir={flowers}", *SMALL_BIT,
                 "epochs=1", "steps_per_epoch=2", "model.learning_rate=0.4"]
    cfg = compose_config(overrides, tmp_path / "run")
    assert cfg.model.handle == f"{flowers}/ttst" and cfg.model.trainable_backbone is False
    metrics = train(cfg)
    fresh = build_network(cfg.model, metrics["num_classes"], cfg.dataset.image_size)
    trained = load_run(tmp_path / "run", "last").model
    assert [w.name for w in trained.trainable_weights] == ["head/kernel:0", "head/bias:0"]
    after_training, as_loaded = (m.get_layer("backbone").get_weights() for m in (trained, fresh))
    assert len(after_training) == len(as_loaded) == 2  # the toy backbone's kernel and bias
    for after, before in zip(after_training, as_loaded):
        np.testing.assert_array_equal(after, before)  # the SavedModel's weights, untouched
    assert np.abs(trained.get_layer("head").get_weights()[0]).sum() > 0  # the head trained


def test_an_archive_with_an_escaping_member_is_refused(tmp_path):
    from runner.errors import ConfigError

    archive = tmp_path / "evil.tar.gz"
    payload = tmp_path / "x.txt"
    payload.write_text("x")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(payload, arcname="../evil.txt")
    cfg = compose_config(
        ["model=bit", f"model.handle={archive}", f"model.cache_dir={tmp_path / 'cache'}"], tmp_path / "run"
    )
    with pytest.raises(ConfigError) as info:
        build_network(cfg.model, 5, 384)
    assert str(archive) in str(info.value)
    assert not (tmp_path.parent / "evil.txt").exists()
