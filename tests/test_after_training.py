"""evaluate, predict and export on runs trained here on tiny data, checked against the runs' own figures."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from runner.checkpoint import load_run, load_run_config
from runner.errors import ConfigError
from runner.evaluate import evaluate_run, predict_split
from runner.export import export_run
from runner.predict import Prediction, format_prediction, predict_files
from runner.report import read_history
from runner.train import train
from tests.bit_fixtures import write_bit_savedmodel
from tests.conftest import compose_config, runner_env
from tests.data_fixtures import write_tfds_folder

pytestmark = pytest.mark.ascend_stack  # also in the Ascend stack's CI subset

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The seed's BiT recipe, small: a toy hub SavedModel in <data_dir>/ttst, 40 px images, 32 px crops.
# No early stopping, so the run's final weights are its last checkpoint. Label smoothing (one-hot
# labels) on a model ending in logits: evaluate must rebuild the run's own loss to match val_loss.
SMALL_BIT = [
    "experiment=bit_flowers", "dataset.image_size=40", "model.crop_size=32", "batch_size=8",
    "log_steps=1", "epochs=3", "steps_per_epoch=4", "model.learning_rate=0.4",
    "model.early_stopping_patience=null", "model.label_smoothing=0.1",
]


def run_tool(tool: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", f"runner.{tool}", *args],
        capture_output=True, text=True, env=runner_env(), timeout=timeout,
    )


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if "| " not in line]  # not importtime


def imports_tensorflow(result: subprocess.CompletedProcess) -> bool:
    return any(line.rstrip().endswith("| tensorflow") for line in result.stderr.splitlines())


@pytest.fixture(scope="module")
def bit_run(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("flowers")
    write_tfds_folder(data_dir, "tf_flowers", "3.0.1", per_class=12, size=48)
    write_bit_savedmodel(data_dir / "ttst", feature_dim=16)
    run_dir = tmp_path_factory.mktemp("bit_after") / "run"
    metrics = train(compose_config([*SMALL_BIT, f"dataset.data_dir={data_dir}"], run_dir))
    return run_dir, metrics


@pytest.fixture(scope="module")
def val_images(bit_run, tmp_path_factory):
    """The run's validation images as files (TFDS stores them as PNG: the bytes are lossless)."""
    from runner.datasets import load_source

    cfg = load_run_config(bit_run[0])
    folder = tmp_path_factory.mktemp("val_images")
    files = []
    for i, (image, _) in enumerate(load_source(cfg.dataset, cfg.seed).val):
        files.append(folder / f"{i:03d}.png")
        files[-1].write_bytes(image.numpy())
    return files


def test_last_checkpoint_reproduces_the_runs_own_val_metrics(bit_run):
    run_dir, metrics = bit_run
    evaluated = evaluate_run(load_run(run_dir, "last"))
    assert evaluated["accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-6)
    assert evaluated["loss"] == pytest.approx(metrics["val_loss"], rel=1e-4)
    assert (run_dir / "eval" / "val-last" / "metrics.json").is_file()


def test_best_checkpoint_matches_its_epoch_and_writes_the_report(bit_run):
    run_dir, _ = bit_run
    epochs = read_history(run_dir)
    best_epoch = max(epochs, key=lambda row: row["val_accuracy"])  # the first of equals, as saved
    evaluated = evaluate_run(load_run(run_dir))
    assert evaluated["checkpoint"] == "best" and evaluated["split_spec"] == "train[85%:]"
    assert evaluated["accuracy"] == pytest.approx(best_epoch["val_accuracy"], abs=1e-6)
    assert evaluated["loss"] == pytest.approx(best_epoch["val_loss"], rel=1e-4)
    folder = run_dir / "eval" / "val"
    assert json.loads((folder / "metrics.json").read_text())["accuracy"] == evaluated["accuracy"]
    assert (folder / "confusion_matrix.png").read_bytes().startswith(PNG_SIGNATURE)
    with open(folder / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == ["dandelion", "daisy", "tulips", "sunflowers", "roses"]
    assert sum(int(r["support"]) for r in rows) == evaluated["examples"]
    assert np.array(evaluated["confusion_matrix"]).sum() == evaluated["examples"]
    assert "| dandelion |" in (folder / "per_class.md").read_text()


def test_evaluate_command_reads_a_tfds_split_string(bit_run):
    run_dir, _ = bit_run
    result = run_tool("evaluate", f"run={run_dir}", "split=train[:50%]")
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads((run_dir / "eval" / "train_50pct" / "metrics.json").read_text())
    assert written["split_spec"] == "train[:50%]" and written["examples"] == 30  # 60 images
    assert "accuracy" in result.stdout and "train[:50%]" in result.stdout


def test_predict_uses_the_evaluation_preprocessing(bit_run, val_images):
    run = load_run(bit_run[0])
    from runner.checkpoint import to_probabilities

    evaluated = to_probabilities(predict_split(run, "val").outputs, from_logits=True)
    np.testing.assert_allclose(predict_files(run, val_images), evaluated, rtol=1e-5, atol=1e-6)


def test_predict_command_prints_top_k_per_image(bit_run, val_images):
    run_dir, _ = bit_run
    result = run_tool("predict", f"run={run_dir}", f"images={val_images[0].parent}", "top_k=2", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(p) for p in val_images]
    probabilities = [[c["probability"] for c in line["top_k"]] for line in lines]
    assert all(len(p) == 2 and p[0] >= p[1] for p in probabilities)
    text = format_prediction(Prediction("a.png", [("roses", 0.75), ("daisy", 0.25)]), "text")
    assert text == "a.png\troses 0.7500\tdaisy 0.2500"


LOAD_IN_A_FRESH_PROCESS = """
import sys, numpy as np, tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
files = sys.argv[3:]
by_bytes = model.signatures["serving_default"](
    image_bytes=tf.constant([open(f, "rb").read() for f in files]))
by_pixels = model.signatures["serve_images"](
    images=tf.stack([tf.io.decode_png(tf.io.read_file(f), channels=3) for f in files]))
np.savez(sys.argv[2], bytes=by_bytes["probabilities"].numpy(),
         pixels=by_pixels["probabilities"].numpy(), names=by_bytes["class_names"].numpy()[0],
         top=by_bytes["top_class"].numpy())
"""


def test_exported_savedmodel_predicts_as_the_checkpoint_in_a_fresh_process(bit_run, val_images, tmp_path):
    run = load_run(bit_run[0])
    out = export_run(run, tmp_path / "exported")
    result = subprocess.run(
        [sys.executable, "-c", LOAD_IN_A_FRESH_PROCESS, str(out), str(tmp_path / "p.npz"),
         *map(str, val_images)],
        capture_output=True, text=True, env=runner_env(), timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = np.load(tmp_path / "p.npz", allow_pickle=True)
    expected = predict_files(run, val_images)  # softmax of the BiT logits, as served
    np.testing.assert_allclose(served["bytes"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served["pixels"], expected, rtol=1e-5, atol=1e-6)
    assert [n.decode() for n in served["names"]] == run.class_names
    assert [t.decode() for t in served["top"]] == [run.class_names[i] for i in expected.argmax(1)]
    with pytest.raises(ConfigError, match="already exists"):
        export_run(run, out)


def test_a_run_directory_without_a_checkpoint_is_named(bit_run, tmp_path):
    not_finished = tmp_path / "half_run"
    shutil.copytree(bit_run[0] / ".hydra", not_finished / ".hydra")
    result = run_tool("evaluate", f"run={not_finished}", timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = error_lines(result)
    assert len(errors) == 1 and str(not_finished) in errors[0] and "best_weights.h5" in errors[0]
    assert not imports_tensorflow(result)
    with pytest.raises(ConfigError, match=r"\.hydra/config\.yaml"):
        load_run(tmp_path)


def test_a_file_that_is_not_an_image_is_named(bit_run, tmp_path):
    fake = tmp_path / "photo.jpg"
    fake.write_text("not an image")
    result = run_tool("predict", f"run={bit_run[0]}", f"images={fake}", timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(fake) in result.stderr and not imports_tensorflow(result)


def test_overrides_must_name_keys_the_run_has(bit_run):
    cfg = load_run_config(bit_run[0], ["dataset.data_dir=/elsewhere", "batch_size=2"])
    assert cfg.dataset.data_dir == "/elsewhere" and cfg.batch_size == 2
    with pytest.raises(ConfigError, match="dataset.no_such_key"):
        load_run_config(bit_run[0], ["dataset.no_such_key=1"])


def test_help_is_fast_and_names_the_options():
    for tool, option in (("evaluate", "split="), ("predict", "images="), ("export", "out=")):
        result = run_tool(tool, "--help", timeout=60)
        assert result.returncode == 0 and option in result.stdout
        assert not imports_tensorflow(result)

