"""What a run does besides training steps, and what it no longer does: one training
iterator for the whole fit, one trace of the train and test steps, no second evaluation of the
last epoch's weights, no Keras 3 (and matplotlib) behind `python -m runner`'s TensorFlow import,
no profiling unasked. No timing here: the times are bench/'s (`python -m bench --sections
fixed_costs`, docs/performance.md)."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from runner.fit.datasets import epoch_input
from runner.fit.validation import best_epoch, final_validation
from runner.keras2 import keras
from runner.record.run_folder import read_history
from runner.train import train
from tests.conftest import compose_config, runner_env

pytestmark = pytest.mark.ascend_stack
ROOT = Path(__file__).resolve().parent.parent


def batches(examples: int, batch_size: int) -> tf.data.Dataset:
    return tf.data.Dataset.range(examples).batch(batch_size)


def test_an_epoch_is_one_pass_over_the_split_from_one_repeated_iterator():
    data, steps = epoch_input(batches(10, 4), None)
    assert steps == 3  # the last batch partial, as Keras' own end of an epoch
    firsts = [int(batch[0]) for batch in data.take(2 * steps)]
    assert firsts == [0, 4, 8, 0, 4, 8]  # epoch 2 starts the split again, not mid-way


def test_steps_per_epoch_given_is_kept_and_an_unknown_length_left_to_keras():
    assert epoch_input(batches(10, 4), 7)[1] == 7
    unknown = batches(10, 4).filter(lambda batch: True)
    assert epoch_input(unknown, None) == (unknown, None)


def toy_model() -> tuple[keras.Model, tf.data.Dataset]:
    model = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    val = tf.data.Dataset.from_tensor_slices(
        (rng.normal(size=(8, 3)).astype("float32"), rng.integers(0, 2, 8))).batch(4)
    return model, val


# Figures no model computes: returned only if read from history, not evaluated.
HISTORY = [{"val_loss": 0.9, "val_accuracy": 0.25}, {"val_loss": 0.7, "val_accuracy": 0.375}]


def test_the_last_epochs_weights_are_not_evaluated_again():
    model, val = toy_model()
    assert final_validation(model, val, HISTORY, best_restored=False) == {"loss": 0.7, "accuracy": 0.375}
    # early stopping's best is the last epoch: the same weights
    assert final_validation(model, val, HISTORY, best_restored=True) == {"loss": 0.7, "accuracy": 0.375}


def test_weights_restored_from_an_earlier_epoch_are_evaluated():
    model, val = toy_model()
    earlier_best = [HISTORY[1], HISTORY[0]]
    evaluated = model.evaluate(val, return_dict=True, verbose=0)
    final = final_validation(model, val, earlier_best, best_restored=True)
    assert final["accuracy"] == pytest.approx(evaluated["accuracy"]) and final["loss"] != 0.9
    assert final_validation(model, val, [], best_restored=False)["loss"] == pytest.approx(evaluated["loss"])


def test_the_best_epoch_is_the_first_of_equal_accuracies():
    rows = [{"val_accuracy": a} for a in (0.5, 0.75, 0.75, 0.5)]
    assert best_epoch(rows) == 1


@pytest.mark.slow
def test_a_run_over_whole_passes_reports_its_last_epochs_validation_exactly(tmp_path, toy_bit_run):
    """steps_per_epoch=null: each epoch one pass over the training split (ceil(n / batch) steps),
    metrics.json's val figures the last history row's exactly (not a second evaluation's), and
    no profiler trace (Keras 2.6's TensorBoard profiled the second batch by default)."""
    overrides = [o for o in toy_bit_run if not o.startswith("steps_per_epoch=")]
    metrics = train(compose_config([*overrides, "steps_per_epoch=null"], tmp_path))
    rows = read_history(tmp_path)
    train_examples = int(next(
        line for line in (tmp_path / "train.log").read_text().splitlines() if "training /" in line
    ).split("data: ")[1].split()[0])
    assert len(rows) == 2 and metrics["optimizer_steps"] == 2 * math.ceil(train_examples / 16)
    assert (metrics["val_accuracy"], metrics["val_loss"]) == (rows[-1]["val_accuracy"], rows[-1]["val_loss"])
    assert not list((tmp_path / "tensorboard").rglob("plugins/profile"))


@pytest.mark.parametrize("overrides", [
    ["model.optimizer=sgd"],  # sparse labels
    ["model.optimizer=adam", "model.label_smoothing=0.1"],  # one-hot labels
    ["precision=allow_mix_precision_fp16"],  # on the GPU policy: Keras' loss-scale optimizer
], ids=["sgd-sparse", "adam-one-hot", "loss-scaled"])
def test_the_first_train_and_test_steps_are_traced_once(tmp_path, toy_bit_run, overrides):
    """Every variable the steps use exists before fit(): a tf.function that creates variables
    (optimizer slots, a metric's totals) on its first call is traced twice, the second time for
    the whole network again (seconds of DenseNet-121's start-up)."""
    from runner.device.precision import apply_precision
    from runner.fit.datasets import build_splits, load_source
    from runner.fit.network import compiled_model

    cfg = compose_config([*toy_bit_run, *overrides], tmp_path)
    apply_precision(cfg.precision.mode, "gpu")
    splits = build_splits(cfg, load_source(cfg.dataset, cfg.seed), drop_remainder=False, shard=None)
    model = compiled_model(cfg, len(splits.class_names))
    images, labels = next(iter(splits.train))
    model.train_on_batch(images, labels)
    model.test_on_batch(*next(iter(splits.val)))
    model.train_on_batch(images, labels)
    assert model.train_function.experimental_get_tracing_count() == 1
    assert model.test_function.experimental_get_tracing_count() == 1
    assert model.metrics_names == ["loss", "accuracy"]


def test_the_runner_command_imports_no_keras_3_and_no_plotting_library():
    """`python -m runner` imports TensorFlow after runner/__main__.py: TF 2.21 would otherwise
    load Keras 3, which imports matplotlib.pyplot, for a run that draws nothing."""
    probe = ("import runner.__main__, sys; runner.__main__.prefer_legacy_keras(); import tensorflow; "
             "print(sorted({'matplotlib', 'keras.src'} & set(sys.modules)))")
    env = {k: v for k, v in runner_env().items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True, timeout=300).stdout
    assert out.strip().splitlines()[-1] == "[]"
    # Importing the module changes nothing: other processes a test or tool starts keep Keras 3.
    leak = "import os, runner.__main__; print(os.environ.get('TF_USE_LEGACY_KERAS'))"
    out = subprocess.run([sys.executable, "-c", leak], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True, timeout=300).stdout
    assert out.strip().splitlines()[-1] == "None"


EXIT_PROBE = """
import atexit, sys, threading, time
from runner.__main__ import exit_without_teardown

class Left:
    def __del__(self):
        print("torn down", flush=True)

left = Left()  # a module global: Python's teardown would delete it
atexit.register(lambda: print("exit handler ran", flush=True))
threading.Thread(target=lambda: (time.sleep(0.5), print("thread finished", flush=True))).start()
stop = threading.Event()  # a worker manager that stops when told at exit, as joblib's (loky's) does
if hasattr(threading, "_register_atexit"):  # Python 3.9+; 3.7 and 3.8 have no such hook
    threading.Thread(target=stop.wait).start()
    threading._register_atexit(stop.set)
print("buffered, not flushed", end="")
exit_without_teardown(sys.argv[1] if sys.argv[1].startswith("why") else int(sys.argv[1]))
"""


@pytest.mark.parametrize(("code", "status"), [("0", 0), ("2", 2), ("143", 143), ("why: a reason", 1)])
def test_the_command_exits_with_its_status_after_the_exit_handlers_without_the_teardown(code, status):
    """The runner command skips only the interpreter's teardown of what is left (TensorFlow's
    graphs: seconds): threading's exit hooks run, threads are joined, exit handlers run, output
    flushed, the status kept."""
    result = subprocess.run([sys.executable, "-c", EXIT_PROBE, code], cwd=ROOT, env=runner_env(),
                            capture_output=True, text=True, timeout=300)  # a thread never told to stop: hangs
    assert result.returncode == status
    assert "thread finished" in result.stdout and "exit handler ran" in result.stdout
    assert result.stdout.index("thread finished") < result.stdout.index("exit handler ran")
    assert "buffered, not flushed" in result.stdout and "torn down" not in result.stdout
    assert ("why: a reason" in result.stderr) == code.startswith("why")
