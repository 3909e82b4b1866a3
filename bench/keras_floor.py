"""The floor under the quickstart's fixed costs: its training as a bare Keras 2 script.

The same data (digits at 64 px, the same split), the same network (models/resizer.py), optimiser,
loss, batch size, epochs and per-epoch validation as `python -m runner`, written as a keras-io
example is: no Hydra, no run folder, no checkpoints, no callbacks but the runner's StepLogger as
the step meter, so both sides count a step the same way. What no program needs to pay it skips
as the runner does: tf.data's autotuning (data.pipeline.without_autotuning) and the interpreter's
teardown. Run as its own process by `bench/fixed_costs.py`; its wall time against its step time
is what TensorFlow and Keras themselves cost (import, build, tracing, validation), the floor under
any program that trains this.

    python -m bench.keras_floor [epochs] [batch_size] [steps_per_epoch]
    # prints {"steps": ..., "step_seconds": ...}; steps_per_epoch 0: one pass over the split
"""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TF 2.21: tf-keras, as `python -m runner` does

import tensorflow as tf  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from bench.fixtures import digits_in_memory  # noqa: E402
from data.pipeline import without_autotuning  # noqa: E402
from models.resizer import build_resizer_densenet  # noqa: E402
from runner.fit.callbacks import StepLogger  # noqa: E402
from runner.keras2 import keras, optimizers  # noqa: E402

IMAGE_SIZE, TARGET_SIZE, SEED = 64, 32, 42  # conf/dataset/digits.yaml, conf/model/resizer_densenet.yaml


def digits_batches(batch_size: int) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """dataset=digits' split (val_fraction 0.2, stratified by the seed), batched, one-hot labels."""
    images, labels = digits_in_memory(IMAGE_SIZE)
    x_train, x_val, y_train, y_val = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=SEED)

    def batches(x, y, shuffle: bool) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((x, tf.one_hot(y, 10)))
        if shuffle:
            ds = ds.shuffle(len(x), seed=SEED)
        return without_autotuning(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))

    return batches(x_train, y_train, True), batches(x_val, y_val, False)


def main(epochs: int = 5, batch_size: int = 64, steps_per_epoch: int = 0) -> None:
    tf.random.set_seed(SEED)
    train, val = digits_batches(batch_size)
    model = build_resizer_densenet(10, IMAGE_SIZE, TARGET_SIZE, bn_momentum=0.9)
    model.compile(
        optimizer=optimizers.SGD(0.01),  # the runner's: Keras 2's OptimizerV2 on both stacks
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
        # An object, as the runner's: Keras' "accuracy" string would trace the train step twice.
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    meter = StepLogger(log_steps=10**9, batch_size=batch_size, epochs=epochs)
    if steps_per_epoch:
        train = train.repeat()
    model.fit(train, validation_data=val, epochs=epochs, steps_per_epoch=steps_per_epoch or None,
              callbacks=[meter], verbose=0)
    print(json.dumps({"steps": meter.steps_seen, "step_seconds": meter.seconds_per_step}), flush=True)
    os._exit(0)  # no teardown of the traced graphs: seconds that follow the training, not part of it


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:4]))
