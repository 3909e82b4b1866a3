"""evaluate, predict and export on runs trained here on tiny data, checked against the runs' own figures."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from runner.errors import ConfigError
from runner.evaluate import classification_metrics, evaluate_run, predict_split
from runner.export import export_run
from runner.predict import Prediction, format_prediction, predict_files
from runner.record.run_folder import read_history
from runner.tools.checkpoint import load_run, load_run_config
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
    from runner.fit.datasets import load_source

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
    # docs/after_training.md: what eval/<split>/metrics.json holds; matrix rows are true classes.
    written = json.loads((folder / "metrics.json").read_text())
    assert set(written) == {"accuracy", "loss", "examples", "split", "split_spec", "checkpoint",
                            "macro_avg", "per_class", "confusion_matrix"}
    assert set(written["per_class"]["roses"]) == {"precision", "recall", "f1", "support"}
    # The matrix's rows and columns follow checkpoints/labels.txt, as per_class.csv's rows do.
    labels = (run_dir / "checkpoints" / "labels.txt").read_text().split()
    assert [r["class"] for r in rows] == labels
    supports = [written["per_class"][name]["support"] for name in labels]
    assert np.array(written["confusion_matrix"]).sum(axis=1).tolist() == supports
    assert "| dandelion |" in (folder / "per_class.md").read_text()


def test_evaluate_command_reads_a_tfds_split_string(bit_run):
    run_dir, _ = bit_run
    result = run_tool("evaluate", f"run={run_dir}", "split=train[:50%]")
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads((run_dir / "eval" / "train_50pct" / "metrics.json").read_text())
    assert written["split_spec"] == "train[:50%]" and written["examples"] == 30  # 60 images
    assert "accuracy" in result.stdout and "train[:50%]" in result.stdout


def test_split_train_is_the_runs_training_split(bit_run):
    """docs/after_training.md: split=train is the run's training split (train[:85%] of the 60
    images here), written to eval/train/."""
    run_dir, _ = bit_run
    evaluated = evaluate_run(load_run(run_dir), "train")
    assert (evaluated["split_spec"], evaluated["examples"]) == ("train[:85%]", 51)
    assert (run_dir / "eval" / "train" / "metrics.json").is_file()


def test_a_tfds_split_string_gets_a_folder_name():
    """docs/after_training.md: train[85%:] becomes eval/train_85pct/."""
    from runner.evaluate import split_folder_name

    assert split_folder_name("train[85%:]") == "train_85pct"


def test_predict_uses_the_evaluation_preprocessing(bit_run, val_images):
    run = load_run(bit_run[0])
    from runner.tools.checkpoint import to_probabilities

    evaluated = to_probabilities(predict_split(run, "val").outputs, from_logits=True)
    predicted = predict_files(run, val_images)
    np.testing.assert_allclose(predicted, evaluated, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predicted.sum(axis=1), 1.0, rtol=1e-5)  # BiT's logits: a softmax


def test_predict_command_prints_top_k_per_image(bit_run, val_images):
    run_dir, _ = bit_run
    result = run_tool("predict", f"run={run_dir}", f"images={val_images[0].parent}", "top_k=2", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(p) for p in val_images]
    probabilities = [[c["probability"] for c in line["top_k"]] for line in lines]
    assert all(len(p) == 2 and p[0] >= p[1] for p in probabilities)
    class_names = (run_dir / "checkpoints" / "labels.txt").read_text().split()
    assert all(c["class"] in class_names for line in lines for c in line["top_k"])
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
other_size = model.signatures["serve_images"](images=tf.zeros([2, 20, 30, 3], tf.uint8))
loaded = sorted(m for m in ("runner", "tf_keras", "tensorflow_hub") if m in sys.modules)
np.savez(sys.argv[2], bytes=by_bytes["probabilities"].numpy(),
         pixels=by_pixels["probabilities"].numpy(), names=by_bytes["class_names"].numpy(),
         top=by_bytes["top_class"].numpy(), other_size=other_size["probabilities"].numpy(),
         loaded=np.array(loaded, dtype=str))
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
    # docs/after_training.md: the SavedModel needs TensorFlow only (no runner, no Keras model
    # code, no hub module); serve_images takes any H and W.
    assert served["loaded"].tolist() == []
    assert served["other_size"].shape == (2, len(run.class_names))
    expected = predict_files(run, val_images)  # softmax of the BiT logits, as served
    np.testing.assert_allclose(served["bytes"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served["pixels"], expected, rtol=1e-5, atol=1e-6)
    # class_names: [N, C], the names repeated on every row.
    assert served["names"].shape == (len(val_images), len(run.class_names))
    assert all([n.decode() for n in row] == run.class_names for row in served["names"])
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


def test_images_is_a_file_a_folder_searched_recursively_or_a_glob(tmp_path):
    """docs/after_training.md: images= is a file, a folder (its .jpg .jpeg .png .gif .bmp files,
    recursively, in name order) or a glob."""
    from PIL import Image

    from runner.predict import list_images

    for name in ("b.png", "a.jpg", "sub/c.bmp", "sub/d.gif"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image, not listed")
    folder = [p.relative_to(tmp_path).as_posix() for p in list_images(str(tmp_path))]
    assert folder == ["a.jpg", "b.png", "sub/c.bmp", "sub/d.gif"]
    assert list_images(str(tmp_path / "b.png")) == [tmp_path / "b.png"]
    assert list_images(str(tmp_path / "*.png")) == [tmp_path / "b.png"]


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


@pytest.mark.parametrize(("tool", "args", "named"), [
    ("evaluate", ["run=/no/such/run"], "run='/no/such/run' does not exist"),
    ("predict", ["run=/r", "images=x", "--top_k=3"], "'--top_k=3' is not an argument of runner.predict"),
    ("export", ["out=/o"], "runner.export needs run=..."),
])
def test_a_bad_argument_or_missing_folder_is_one_paragraph_and_exit_2(tool, args, named):
    """docs/after_training.md: a bad argument, a missing file or folder gives one paragraph on
    stderr and exit code 2 (before TensorFlow is imported)."""
    result = run_tool(tool, *args, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = error_lines(result)
    assert named in line and not imports_tensorflow(result)


def test_an_export_goes_to_an_empty_or_new_folder_only(tmp_path):
    """docs/after_training.md: out= must not exist yet (or be empty); by default RUN/export/best/."""
    from runner.export import check_out_dir, default_export_dir

    assert default_export_dir(tmp_path, "best") == tmp_path / "export" / "best"
    check_out_dir(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_out_dir(tmp_path / "empty")
    (tmp_path / "empty" / "saved_model.pb").write_text("")
    with pytest.raises(ConfigError, match="already exists"):
        check_out_dir(tmp_path / "empty")


def test_an_export_into_an_unwritable_place_is_refused_before_loading(tmp_path):
    """A folder under a file, or under a folder this user cannot write (root can write anywhere,
    so that half runs as another user only)."""
    import os

    from runner.export import check_out_dir

    (tmp_path / "a_file").write_text("")
    with pytest.raises(ConfigError) as caught:
        check_out_dir(tmp_path / "a_file" / "model")
    assert str(tmp_path / "a_file") in str(caught.value)
    check_out_dir(tmp_path / "deep" / "new" / "model")  # created on the way: fine
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ConfigError):
            check_out_dir(locked / "model")


def test_help_is_fast_and_names_the_options():
    for tool, option in (("evaluate", "split="), ("predict", "images="), ("export", "out=")):
        result = run_tool(tool, "--help", timeout=60)
        assert result.returncode == 0 and option in result.stdout
        assert not imports_tensorflow(result)



@pytest.mark.parametrize(("classes", "annotated"), [(3, 9), (20, 400), (21, 0)])
def test_confusion_matrix_counts_are_written_up_to_20_classes(classes, annotated, tmp_path):
    """docs/after_training.md: confusion_matrix.png has the counts written in its cells up to 20
    classes (more would not fit)."""
    from runner.evaluate import confusion_figure, plot_confusion_matrix

    matrix = np.eye(classes, dtype=int).tolist()
    names = [f"class{i}" for i in range(classes)]
    assert len(confusion_figure(matrix, names, "t").axes[0].texts) == annotated
    plot_confusion_matrix(matrix, names, tmp_path / "c.png", "t")
    assert (tmp_path / "c.png").read_bytes().startswith(PNG_SIGNATURE)


def test_classification_metrics_on_hand_made_predictions():
    """Three cats (one called a cat, two called dogs) and one dog, called a dog: cat precision 1,
    recall 1/3; dog precision 1/3, recall 1. The confusion matrix has a row per true class."""
    labels = np.array([0, 0, 0, 1])
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7]])
    report = classification_metrics(labels, probabilities, ["cat", "dog"])
    assert report["accuracy"] == 0.5 and report["examples"] == 4
    cat, dog = report["per_class"]["cat"], report["per_class"]["dog"]
    assert (cat["precision"], cat["recall"], cat["support"]) == (1.0, pytest.approx(1 / 3), 3)
    assert (dog["precision"], dog["recall"], dog["support"]) == (pytest.approx(1 / 3), 1.0, 1)
    assert report["confusion_matrix"] == [[1, 2], [0, 1]]
    assert report["macro_avg"]["precision"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("source", ["image_folder", "tfds"])
def test_evaluating_a_run_whose_data_moved_asks_for_its_new_place(source, tmp_path):
    """Not "create the folder": the run's data existed; the fix is dataset.path= / data_dir=."""
    from runner.evaluate import _split_source
    from runner.tools.checkpoint import LoadedRun

    key, overrides = {
        "image_folder": ("path", ["dataset=image_folder", f"dataset.path={tmp_path}/moved"]),
        "tfds": ("data_dir", ["dataset=tf_flowers", f"dataset.data_dir={tmp_path}/moved"]),
    }[source]
    run = LoadedRun(tmp_path / "run", compose_config(overrides, tmp_path / "run"), None, ["a", "b"], "best")
    with pytest.raises(ConfigError) as caught:
        _split_source(run, "val")
    assert f"run={tmp_path / 'run'} dataset.{key}=" in str(caught.value)
