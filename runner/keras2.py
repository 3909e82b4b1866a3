"""Which Keras: Keras 2 on every supported TensorFlow, and the few places its versions differ.

Every other module imports Keras from here (`from runner.keras2 import keras`).

- Ascend stack (requirements-ascend*.lock): TensorFlow 2.6.5, whose `tf.keras` is Keras 2.6. CANN's
  `npu_device` exists for this TensorFlow only and patches Keras-2 optimizers.
- Default stack (requirements.txt): TensorFlow 2.21, whose `tf.keras` is Keras 3; Keras 2 is the
  separate `tf-keras` package. TF-Hub's `hub.KerasLayer` needs Keras 2 as well.

The version differences the runner meets are the small functions below, not version tests
scattered through the code.
"""

from __future__ import annotations

import inspect
import os
import random
from typing import Any

import numpy as np
import tensorflow as tf

from runner.errors import ConfigError

try:
    import tf_keras as keras  # TensorFlow >= 2.16: Keras 2 is the tf-keras package
except ImportError:
    keras = tf.keras  # TensorFlow 2.6 - 2.15: tf.keras is Keras 2

if not keras.__version__.startswith("2."):
    raise ConfigError(
        f"TensorFlow {tf.__version__} ships Keras {keras.__version__} as tf.keras and the tf-keras "
        "package (Keras 2) is not installed; the runner needs Keras 2. Install the default stack "
        "with `pip install -r requirements.txt` (TensorFlow 2.21 + tf-keras)."
    )

TF_VERSION = tuple(int(part) for part in tf.__version__.split(".")[:2])
STACK = f"TensorFlow {tf.__version__} with Keras {keras.__version__}"
# TF >= 2.11's Keras has a new optimizer class and keeps OptimizerV2 as optimizers.legacy.
# OptimizerV2 everywhere: it is what npu_device's optimizer wrapper and loss-scale optimizer
# patch, and both stacks then keep the same optimizer state.
optimizers = getattr(keras.optimizers, "legacy", keras.optimizers)


def keras_api() -> dict[str, str]:
    """Which Keras this is, for env.json."""
    return {"module": keras.__name__, "version": keras.__version__}


def set_random_seed(seed: int) -> None:
    """Python, NumPy and TensorFlow seeds (keras.utils.set_random_seed, which TF 2.6 lacks)."""
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)


def set_op_determinism(enabled: bool) -> None:
    """Deterministic kernels, or not. Process-wide: set either way, so a sweep job does not inherit it.

    TF >= 2.8 switches it at run time; TF 2.6 reads the TF_DETERMINISTIC_OPS environment variable
    when its kernels are first built, so it must be set before the process starts.
    """
    if TF_VERSION >= (2, 8):
        from tensorflow.python.framework import config as tf_config  # the public API cannot disable

        if enabled:
            tf.config.experimental.enable_op_determinism()
        else:
            tf_config.disable_op_determinism()
        return
    if enabled and os.environ.get("TF_DETERMINISTIC_OPS") != "1":
        raise ConfigError(
            f"deterministic=true: {STACK} has no run-time switch for deterministic kernels; it reads "
            "the environment variable TF_DETERMINISTIC_OPS when the process starts. Run "
            "`TF_DETERMINISTIC_OPS=1 python -m runner ... deterministic=true`, or use the default "
            "stack (TensorFlow 2.21, requirements.txt)."
        )


def compile_options(jit_compile: bool | None) -> dict[str, Any]:
    """Model.compile's jit_compile where this Keras has it (TF >= 2.8); null leaves Keras' default."""
    if jit_compile is None:
        return {}
    if TF_VERSION < (2, 8):
        if jit_compile:
            raise ConfigError(
                f"jit_compile=true: Model.compile of {STACK} has no jit_compile (XLA for Keras "
                "models came with TensorFlow 2.8). Leave jit_compile unset on this stack, or use "
                "the default stack (TensorFlow 2.21, requirements.txt)."
            )
        return {}
    return {"jit_compile": jit_compile}


def create_optimizer_state(model: keras.Model) -> None:
    """Create the compiled optimiser's variables (iterations, slots) now. Keras 2's OptimizerV2
    creates them inside the first train step, and a tf.function that creates variables is traced
    twice: once more for the whole network (measured: ~15 s of a DenseNet-121 run here)."""
    model.optimizer._create_all_weights(model.trainable_variables)


def compiled_switches(model: keras.Model) -> dict[str, Any]:
    """jit_compile and steps_per_execution as the compiled model holds them (Keras may turn
    jit_compile off; TF 2.6's Keras has no XLA switch: False)."""
    return {
        "jit_compile": bool(getattr(model, "jit_compile", False)),
        "steps_per_execution": int(model._steps_per_execution.numpy()),  # a variable in both Kerases
    }


def backup_and_restore(backup_dir: str) -> keras.callbacks.Callback:
    """Keras' BackupAndRestore, except that the backup outlives fit(): Keras deletes it when fit()
    ends, but the run goes on (the final evaluation, metrics.json), and a run stopped there must
    not restart from epoch 0. train() removes the backup once metrics.json is written.

    tf-keras 2.21 has `delete_checkpoint`; TF 2.6's (still `callbacks.experimental`) always deletes
    in on_train_end, so there on_train_end does the rest of its work only."""
    callbacks = keras.callbacks
    cls = getattr(callbacks, "BackupAndRestore", None) or callbacks.experimental.BackupAndRestore
    if "delete_checkpoint" in inspect.signature(cls).parameters:
        return cls(backup_dir, delete_checkpoint=False)

    class BackupKeptAfterFit(cls):
        def on_train_end(self, logs=None):
            del self._training_state  # Keras 2.6's on_train_end without delete_backup()
            del self.model._training_state

    return BackupKeptAfterFit(backup_dir)


def best_checkpoint(path: str, monitor: str, mode: str, best_so_far: float | None,
                    checkpoint_class: type = keras.callbacks.ModelCheckpoint):
    """A ModelCheckpoint of the best epoch so far; after a resume, only better than `best_so_far`
    (initial_value_threshold, which TF 2.6's Keras lacks, sets the same attribute)."""
    checkpoint = checkpoint_class(
        path, monitor=monitor, mode=mode, save_best_only=True, save_weights_only=True
    )
    if best_so_far is not None:
        checkpoint.best = best_so_far
    return checkpoint


def reset_session() -> None:
    """Free models and graphs and leave float32 behind: another run may follow in this process."""
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")
