"""train(cfg) end to end on tiny real data: the run directory contract, per model and dataset."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from runner.errors import ConfigError
from runner.evaluate import evaluate_run
from runner.keras2 import keras
from runner.record.run_folder import one_line, read_history
from runner.tools.checkpoint import load_run, load_run_config
from runner.train import progress_verbosity, train
from runner.versions import installed_version
from tests.conftest import ON_ASCEND_STACK, TINY_RUN, compose_config
from tests.data_fixtures import write_image_folder, write_tfds_folder

pytestmark = pytest.mark.ascend_stack  # also in the Ascend stack's CI subset

ROOT = Path(__file__).resolve().parent.parent

METRIC_KEYS = {
    "val_accuracy", "val_loss", "train_accuracy", "train_loss", "epochs_completed",
    "images_per_sec", "wall_seconds",
}


# The default recipe (learnable resizer + DenseNet-121) on an image folder of two colour-coded
# classes: 64 px images resized to 32, 3 epochs of 5 steps, enough to learn them. Many tests read
# this one run: DenseNet-121 costs tens of seconds to build and trace.
QUICK_RUN = [
    "dataset=image_folder", "dataset.image_size=64", "batch_size=8", "epochs=3",
    "steps_per_epoch=5", "log_steps=1", "model.optimizer=adam", "model.learning_rate=0.001",
]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("quick")
    write_image_folder(root / "pets", ("cat", "dog"), per_class=24, size=32)
    run_dir = root / "run"
    metrics = train(compose_config([*QUICK_RUN, f"dataset.path={root / 'pets'}"], run_dir))
    return run_dir, metrics


def test_run_directory_holds_the_contract(quick_run):
    run_dir, metrics = quick_run
    for name in ("train.log", "history.csv", "metrics.json", "env.json", ".hydra/config.yaml",
                 "checkpoints/best_weights.h5", "checkpoints/last_weights.h5",
                 "checkpoints/labels.txt", "checkpoints/resume_config.yaml", "run.lock"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert not (run_dir / "checkpoints" / "backup").exists()  # removed once training finished
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    assert (run_dir / "checkpoints" / "labels.txt").read_text().split() == ["cat", "dog"]


def test_resizer_learns_the_image_folder(quick_run):
    run_dir, metrics = quick_run
    losses = [row["loss"] for row in read_history(run_dir)]
    assert losses[-1] < losses[0]  # two colour-coded classes are learnable in a few steps
    assert metrics["train_accuracy"] > 0.6


def test_metrics_are_complete_and_consistent_with_history(quick_run):
    run_dir, metrics = quick_run
    assert METRIC_KEYS <= metrics.keys()
    rows = read_history(run_dir)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2] and metrics["epochs_completed"] == 3
    assert metrics["train_loss"] == pytest.approx(rows[-1]["loss"], rel=1e-5)
    assert metrics["train_accuracy"] == pytest.approx(rows[-1]["accuracy"], rel=1e-5)
    # No early stopping: the final evaluation sees the last epoch's weights, as its val columns did.
    assert metrics["val_accuracy"] == pytest.approx(rows[-1]["val_accuracy"], abs=1e-6)
    assert metrics["val_loss"] == pytest.approx(rows[-1]["val_loss"], rel=1e-4)
    assert metrics["optimizer_steps"] == 15 and metrics["num_classes"] == 2
    # The Ascend figures of a plain run: TrainingTime is milliseconds per step of `batch_size` images.
    assert metrics["ActualFPS"] == metrics["images_per_sec"] > 0
    assert metrics["TrainingTime"] == pytest.approx(8 / metrics["images_per_sec"] * 1000, rel=0.01)


def test_log_has_step_and_epoch_lines_once_each(quick_run):
    """README: per-step `epoch: E step: N ,loss: X ,accuracy: A ,time: T ,imgs/s: F` lines every
    log_steps, one line per epoch, a closing `finished: ... imgs/s: F` line."""
    run_dir, _ = quick_run
    lines = (run_dir / "train.log").read_text().splitlines()
    step_lines = [line for line in lines if "step: " in line and ",loss: " in line]
    assert len(step_lines) == 15  # log_steps=1, 5 steps x 3 epochs
    step_line = re.compile(r"epoch: (\d) step: (\d) ,loss: [\d.]+ ,accuracy: [\d.]+ ,time: [\d.]+ "
                           r",imgs/s: [\d.]+$")
    steps = [step_line.search(line).groups() for line in step_lines]
    assert steps == [(str(e), str(n)) for e in (1, 2, 3) for n in (1, 2, 3, 4, 5)]
    assert [sum(f"epoch {e}/3 " in line for line in lines) for e in (1, 2, 3)] == [1, 1, 1]
    assert len(lines) == len(set(lines))  # one logger chain: no line written twice
    assert any("imgs/s:" in line and "finished" in line for line in lines)


def test_env_json_names_versions_and_device(quick_run):
    env = json.loads((quick_run[0] / "env.json").read_text())
    assert env["packages"]["tensorflow"].startswith("2.")
    # Whichever wheel brought TensorFlow (tensorflow-cpu on an Ascend host set up as Huawei says).
    assert installed_version(env["tensorflow_distribution"]) == env["packages"]["tensorflow"]
    assert env["keras_api"]["version"].startswith("2.")  # Keras 2 on both stacks
    assert env["device"]["type"] == "cpu" and env["device"]["replicas"] == 1
    assert "git_commit" in env and env["python"].count(".") == 2
    # README: versions of TFDS, TF-Hub and Hydra too; the project's git commit in a checkout.
    assert all(env["packages"][name] for name in ("tensorflow-datasets", "tensorflow-hub", "hydra-core"))
    if (ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", env["git_commit"]), env["git_commit"]


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
    """best_weights.h5 in the network the run's .hydra/config.yaml describes scores exactly what
    the best epoch's row of history.csv says (the first of equal val_accuracy, as it was saved)."""
    run_dir, _ = quick_run
    assert_best_checkpoint_scores(run_dir, max(read_history(run_dir), key=lambda row: row["val_accuracy"]))


def assert_best_checkpoint_scores(run_dir: Path, expected: dict[str, float]) -> None:
    """best_weights.h5, rebuilt from the run's own config, scores `expected`'s val_accuracy and
    val_loss on the validation split (a history row, or metrics.json)."""
    evaluated = evaluate_run(load_run(run_dir, "best"))
    assert evaluated["accuracy"] == pytest.approx(expected["val_accuracy"], abs=1e-6)
    assert evaluated["loss"] == pytest.approx(expected["val_loss"], rel=1e-4)


def test_a_finished_run_directory_is_not_trained_again(quick_run):
    run_dir, metrics = quick_run
    before = (run_dir / "history.csv").read_text()
    assert train(load_run_config(run_dir)) == metrics
    assert (run_dir / "history.csv").read_text() == before


@pytest.mark.slow
def test_densenet_baseline_on_a_tfds_folder(tmp_path):
    write_tfds_folder(tmp_path / "data", "cats_vs_dogs", "4.0.0", ("cat", "dog"), per_class=20)
    overrides = [
        "model=densenet", "dataset=cats_vs_dogs", f"dataset.data_dir={tmp_path / 'data'}",
        "dataset.image_size=32", "model.target_size=32", "batch_size=4", "epochs=1", "steps_per_epoch=2",
        "static_shape=true",
    ]
    metrics = train(compose_config(overrides, tmp_path / "run"))
    assert metrics["model"] == "densenet" and metrics["num_classes"] == 2
    labels = (tmp_path / "run" / "checkpoints" / "labels.txt").read_text().split()
    assert labels == ["cat", "dog"]


def test_a_run_leaves_float32_behind_even_when_it_fails_early(tmp_path, toy_bit_run):
    """Another run may follow in this process: whatever policy was set before (a mixed one here),
    a run that ends, even at its config check, leaves Keras in float32."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    with pytest.raises(ConfigError, match="model.crop_size=40"):
        train(compose_config([*toy_bit_run, "model.crop_size=40"], tmp_path / "run"))
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.skipif(ON_ASCEND_STACK, reason="TF 2.6 reads TF_DETERMINISTIC_OPS once, at start-up")
def test_each_run_sets_op_determinism_afresh(tmp_path):
    """docs/sweeps.md: jobs sharing a process (the basic launcher) get op determinism set afresh:
    a deterministic=false run after a deterministic one turns it off. (This run stops at
    device=gpu on a machine without a GPU, after the switch and before any data is read.)"""
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU: the run would train")
    tf.config.experimental.enable_op_determinism()
    with pytest.raises(ConfigError, match="TensorFlow sees no GPU"):
        train(compose_config(["device=gpu", "deterministic=false"], tmp_path / "run"))
    assert not tf_config.is_op_determinism_enabled()


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


def test_early_stopping_stops_and_the_metrics_are_the_best_epochs(tmp_path, toy_bit_run):
    """At learning rate 3 the toy backbone's validation accuracy stays flat while its loss moves
    (tests/test_kill_anywhere.py FLAT_VAL_ACCURACY): with patience 1 of 5 epochs, training stops
    at the first epoch without a gain, brings back the best epoch's weights, and metrics.json
    reports what those weights score."""
    overrides = [o for o in toy_bit_run if not o.startswith(("epochs=", "model.early_stopping"))]
    run_dir = tmp_path / "run"
    metrics = train(compose_config([*overrides, "epochs=5", "model.early_stopping_patience=1",
                                    "model.learning_rate=3"], run_dir))
    rows = read_history(run_dir)
    assert 2 <= len(rows) < 5 and metrics["epochs_completed"] == len(rows)
    best = max(rows, key=lambda row: row["val_accuracy"])  # the first of equals, as kept
    assert best is not rows[-1] and rows[-1]["val_accuracy"] <= best["val_accuracy"]
    assert metrics["val_accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-6)
    # The best epoch's loss, not the last's (they differ by ~0.01).
    to_best, to_last = (abs(metrics["val_loss"] - row["val_loss"]) for row in (best, rows[-1]))
    assert to_best < to_last
    # docs/after_training.md: with early stopping, `evaluate` (best) reproduces metrics.json.
    assert_best_checkpoint_scores(run_dir, metrics)


def test_early_stopping_brings_the_best_weights_back_when_training_runs_to_the_end(tmp_path):
    """docs/after_training.md: with early stopping, Keras restores the best weights at the end,
    stopped early or not, on both stacks (Keras 2.6 itself does only when it stopped early)."""
    import numpy as np

    from runner.fit.callbacks import ResumableEarlyStopping

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    early_stopping = ResumableEarlyStopping(tmp_path, tmp_path / "best_weights.h5", monitor="val_accuracy",
                                            mode="max", patience=3, restore_best_weights=True)
    early_stopping.set_model(model)
    early_stopping.on_train_begin()
    best = model.get_weights()
    early_stopping.on_epoch_end(0, {"val_accuracy": 0.7})
    model.set_weights([w + 1.0 for w in best])  # a worse last epoch; patience 3 is not used up
    early_stopping.on_epoch_end(1, {"val_accuracy": 0.5})
    early_stopping.on_train_end()
    assert not model.stop_training
    np.testing.assert_allclose(model.get_weights()[0], best[0])


def test_a_failure_reason_is_one_line_that_keeps_the_cause():
    """status.json's `failed` reason (README): TensorFlow names the cause after its stack lines."""
    message = "Graph execution error:\n\n" + "  File x.py, line 1\n" * 200 + "a.jpg; No such file"
    reason = one_line(message)
    assert "\n" not in reason and len(reason) <= 1005
    assert reason.startswith("Graph execution error:") and reason.endswith("a.jpg; No such file")
    assert one_line("short\n  message") == "short message"


def test_a_diverged_training_loss_is_named_with_its_epoch():
    from runner.fit.validation import training_divergence

    row = {"epoch": 2.0, "loss": 0.5, "val_loss": 0.7, "val_accuracy": 0.4}
    assert training_divergence([row]) is None and training_divergence([]) is None
    assert "epoch 4" in training_divergence([row, {**row, "epoch": 3.0, "loss": float("nan")}])


@pytest.mark.parametrize("loss", [float("inf"), float("nan")])
def test_a_validation_loss_that_is_not_a_number_is_kept_with_a_warning_and_scores_nothing(loss, caplog):
    """A smoke run of a BatchNorm network can end with a finite training loss and an inf/NaN
    validation loss: the run is kept, a sweeper gets a failed job's result instead of NaN."""
    from runner.__main__ import FAILED_JOB_RESULT, sweeper_score
    from runner.fit.validation import warn_if_not_a_number

    warn_if_not_a_number({"loss": 0.7, "accuracy": 0.4})
    assert not caplog.records
    warn_if_not_a_number({"loss": loss, "accuracy": 0.4})
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    metrics = {"val_loss": loss, "val_accuracy": 0.4}
    assert sweeper_score(metrics, "val_loss") is FAILED_JOB_RESULT
    assert sweeper_score(metrics, "val_accuracy") == 0.4


@pytest.mark.parametrize("loggers", ["tensorboard", "mlflow", "[tensorboard,mlflow]"])
def test_the_end_of_a_run_names_its_folder_and_the_commands_that_show_it(loggers, tmp_path):
    import shlex

    from runner.train import where_to_look

    cfg = compose_config([f"logger={loggers}"], tmp_path)
    lines = where_to_look(tmp_path / "run", cfg.logger)
    commands = [shlex.split(line.split(": ", 1)[1]) for line in lines[1:]]
    assert str((tmp_path / "run").resolve()) in lines[0]
    assert ["python", "-m", "runner.evaluate", f"run={(tmp_path / 'run').resolve()}"] in commands
    tensorboard = ["tensorboard", "--logdir", str((tmp_path / "run").resolve())]
    assert (tensorboard in commands) == ("tensorboard" in loggers)
    store = cfg.logger.mlflow and str(cfg.logger.mlflow.tracking_uri)
    mlflow = ["mlflow", "ui", "--backend-store-uri", store]
    assert (mlflow in commands) == ("mlflow" in loggers)


def test_a_loss_far_above_its_first_steps_stops_training_as_diverged():
    from runner.fit.callbacks import StopOnLossExplosion

    model = keras.Sequential([keras.layers.Dense(1, input_shape=(1,))])
    guard = StopOnLossExplosion(100.0)
    guard.set_model(model)
    for step, loss in enumerate([2.0, 150.0, 199.0]):  # up to 100 x 2.0: still training
        guard.on_train_batch_end(step, {"loss": loss})
    assert guard.what is None and not model.stop_training
    guard.on_train_batch_end(3, {"loss": 201.0})
    assert model.stop_training and "201" in guard.what

    resumed = StopOnLossExplosion(100.0)  # a resumed run starting near 0: measured against 1
    resumed.set_model(keras.Sequential([keras.layers.Dense(1, input_shape=(1,))]))
    for step, loss in enumerate([0.01, 50.0, 99.0]):
        resumed.on_train_batch_end(step, {"loss": loss})
    assert resumed.what is None

    off = StopOnLossExplosion(None)
    off.set_model(keras.Sequential([keras.layers.Dense(1, input_shape=(1,))]))
    for step, loss in enumerate([1.0, 1e16]):
        off.on_train_batch_end(step, {"loss": loss})
    assert off.what is None


@pytest.mark.slow
def test_an_exploding_run_fails_as_diverged(tmp_path):
    """model.learning_rate=1e9 ended `finished`, exit 0, at a loss of 2e16 (a failed job gives a
    sweeper no score: runner/__main__.py)."""
    from runner.errors import TrainingDiverged

    run_dir = tmp_path / "run"
    with pytest.raises(TrainingDiverged):
        train(compose_config(["model.learning_rate=1e9", *TINY_RUN], run_dir))
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and status["error"] == "TrainingDiverged"
    assert not (run_dir / "metrics.json").exists()


def test_on_a_terminal_the_bar_ends_its_line_before_the_epoch_line(monkeypatch):
    """The bar and the runner's epoch line shared a line: Keras adds its own bar last, after the
    StepLogger that writes the epoch line."""
    import io
    import logging
    import sys

    import numpy as np

    from runner.fit.callbacks import StepLogger
    from runner.train import progress_bar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    handler = logging.StreamHandler(terminal)
    logger = logging.getLogger("runner.fit")
    monkeypatch.setattr(logger, "level", logging.INFO)
    logger.addHandler(handler)
    model = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    try:
        model.fit(np.zeros((8, 3)), np.zeros(8), batch_size=4, epochs=2, verbose=1,
                  callbacks=[*progress_bar(1), StepLogger(100, 4, 2)])
    finally:
        logger.removeHandler(handler)
    lines = terminal.getvalue().replace("\r", "\n").splitlines()
    epoch_lines = [line for line in lines if "epoch 1/2" in line or "epoch 2/2" in line]
    assert len(epoch_lines) == 2 and all(line.startswith("epoch ") for line in epoch_lines), lines
