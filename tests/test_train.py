"""train(cfg) end to end on tiny real data: the run directory contract, per model and dataset."""

import csv
import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from runner.errors import ConfigError
from runner.keras2 import keras
from runner.network import build_network
from runner.train import progress_verbosity, train
from tests.conftest import ON_ASCEND_STACK, TINY_RUN, compose_config
from tests.data_fixtures import write_image_folder, write_tfds_folder

pytestmark = pytest.mark.ascend_stack  # also in the Ascend stack's CI subset

METRIC_KEYS = {
    "val_accuracy", "val_loss", "train_accuracy", "train_loss", "epochs_completed",
    "images_per_sec", "wall_seconds",
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("quick") / "run"
    metrics = train(compose_config(TINY_RUN, run_dir))
    return run_dir, metrics


def test_run_directory_holds_the_contract(quick_run):
    run_dir, metrics = quick_run
    for name in ("train.log", "history.csv", "metrics.json", "env.json", ".hydra/config.yaml",
                 "checkpoints/best_weights.h5", "checkpoints/last_weights.h5",
                 "checkpoints/labels.txt"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert not (run_dir / "checkpoints" / "backup").exists()  # removed once training finished
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics


def test_metrics_are_complete_and_consistent_with_history(quick_run):
    run_dir, metrics = quick_run
    assert METRIC_KEYS <= metrics.keys()
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1] and metrics["epochs_completed"] == 2
    assert metrics["train_loss"] == pytest.approx(float(rows[-1]["loss"]), rel=1e-5)
    assert 0.0 <= metrics["val_accuracy"] <= 1.0 and np.isfinite(metrics["val_loss"])
    assert metrics["images_per_sec"] > 0 and metrics["wall_seconds"] > 0


def test_log_has_step_and_epoch_lines_once_each(quick_run):
    run_dir, _ = quick_run
    lines = (run_dir / "train.log").read_text().splitlines()
    step_lines = [line for line in lines if "step: " in line and ",loss: " in line]
    assert len(step_lines) == 6  # log_steps=1, 3 steps x 2 epochs
    assert sum("epoch 2/2" in line for line in lines) == 1
    assert len(lines) == len(set(lines))  # one logger chain: no line written twice
    assert any("imgs/s:" in line and "finished" in line for line in lines)


def test_env_json_names_versions_and_device(quick_run):
    env = json.loads((quick_run[0] / "env.json").read_text())
    assert env["packages"]["tensorflow"].startswith("2.")
    assert env["keras_api"]["version"].startswith("2.")  # Keras 2 on both stacks
    assert env["device"]["type"] == "cpu" and env["device"]["replicas"] == 1
    assert "git_commit" in env and env["python"].count(".") == 2


def test_checkpoints_are_keras2_hdf5_that_both_stacks_read(quick_run):
    """Keras 2's HDF5 weights layout (TF 2.6's Keras reads only this one); tf-keras writes Keras 3's
    layout ("vars" groups) for names ending in .weights.h5, which TF 2.6 cannot read."""
    import h5py

    for name in ("best_weights.h5", "last_weights.h5"):
        with h5py.File(quick_run[0] / "checkpoints" / name, "r") as weights:
            assert "layer_names" in weights.attrs and "vars" not in weights, name
            version = weights.attrs["keras_version"]
            assert (version.decode() if isinstance(version, bytes) else version).startswith("2.")


def test_best_checkpoint_rebuilds_from_the_runs_own_config(quick_run):
    run_dir, metrics = quick_run
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    model = build_network(cfg.model, metrics["num_classes"], cfg.dataset.image_size)
    model.load_weights(run_dir / "checkpoints" / "last_weights.h5")
    probs = model.predict(np.zeros((2, 64, 64, 3), np.float32), verbose=0)
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    kernel = model.get_layer("predictions").get_weights()[0]
    assert np.abs(kernel).sum() > 0


def test_a_finished_run_directory_is_not_trained_again(quick_run):
    run_dir, metrics = quick_run
    before = (run_dir / "history.csv").read_text()
    assert train(compose_config(TINY_RUN, run_dir)) == metrics
    assert (run_dir / "history.csv").read_text() == before


def test_densenet_baseline_on_a_tfds_folder(tmp_path):
    write_tfds_folder(tmp_path / "data", "cats_vs_dogs", "4.0.0", ("cat", "dog"), per_class=20)
    overrides = [
        *TINY_RUN, "model=densenet", "dataset=cats_vs_dogs", f"dataset.data_dir={tmp_path / 'data'}",
        "dataset.image_size=64", "batch_size=4", "static_shape=true",
    ]
    metrics = train(compose_config(overrides, tmp_path / "run"))
    assert metrics["model"] == "densenet" and metrics["num_classes"] == 2
    labels = (tmp_path / "run" / "checkpoints" / "labels.txt").read_text().split()
    assert labels == ["cat", "dog"]


def test_resizer_learns_an_image_folder(tmp_path):
    write_image_folder(tmp_path / "pets", ("cat", "dog"), per_class=24, size=32)
    overrides = [
        "dataset=image_folder", f"dataset.path={tmp_path / 'pets'}", "dataset.image_size=64",
        "batch_size=8", "epochs=3", "log_steps=100", "model.optimizer=adam",
        "model.learning_rate=0.001",
    ]
    metrics = train(compose_config(overrides, tmp_path / "run"))
    with open(tmp_path / "run" / "history.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert losses[-1] < losses[0]  # two colour-coded classes are learnable in a few steps
    assert metrics["train_accuracy"] > 0.6


def test_keras_session_is_usable_after_a_run(quick_run):
    # The autouse fixture resets the policy; a run must not leave a mixed policy behind anyway.
    assert keras.mixed_precision.global_policy().name == "float32"


class _Terminal:
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_plain_lines_elsewhere(tmp_path):
    with open(tmp_path / "log.txt", "w") as file:
        assert progress_verbosity(file, {}) == 0
    assert progress_verbosity(_Terminal(), {}) == 1
    assert progress_verbosity(_Terminal(), {"CI": "true"}) == 0


def test_jit_compile_and_determinism_where_the_stack_has_them(monkeypatch):
    """TF >= 2.8 switches both at run time; TF 2.6 (the Ascend stack) has no Model.compile
    jit_compile and reads TF_DETERMINISTIC_OPS only at start-up: clear refusals, naming the fix."""
    from runner.keras2 import compile_options, set_op_determinism

    assert compile_options(None) == {}
    monkeypatch.delenv("TF_DETERMINISTIC_OPS", raising=False)
    if ON_ASCEND_STACK:
        assert compile_options(False) == {}
        with pytest.raises(ConfigError, match="jit_compile=true.*TensorFlow 2.8.*requirements.txt"):
            compile_options(True)
        with pytest.raises(ConfigError, match="TF_DETERMINISTIC_OPS=1 python -m runner"):
            set_op_determinism(True)
        monkeypatch.setenv("TF_DETERMINISTIC_OPS", "1")
        set_op_determinism(True)  # set before start-up, as asked: accepted
    else:
        assert compile_options(True) == {"jit_compile": True}
        set_op_determinism(True)
        set_op_determinism(False)
