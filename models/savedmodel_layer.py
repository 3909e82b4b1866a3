"""A TFSMLayer that fine-tunes with any optimiser and runs under mixed precision."""

import re
from pathlib import Path

import keras
import tensorflow as tf
from keras import ops

from runner.errors import ConfigError


class TrainableSavedModel(keras.layers.TFSMLayer):
    """Calls a TF2 SavedModel (e.g. a TF-Hub feature vector) as a trainable Keras layer.

    Differences from the stock `keras.layers.TFSMLayer`:
    - each restored variable is registered under a clean name (no ':0', no '/'), because
      optimisers that keep per-variable state (SGD with momentum, Adam) name their slots after
      the variable and the stock ':0' names are not valid scope names;
    - it always computes in float32 (the SavedModel's graph is float32) and casts its inputs,
      so it also works inside a model under a mixed-precision policy;
    - besides attributes such as "__call__", it accepts signatures (e.g. "serving_default"),
      which take keyword arguments and return a dict.
    """

    def __init__(
        self,
        filepath: str | Path,
        call_endpoint: str = "__call__",
        trainable: bool = True,
        name: str | None = None,
        dtype: str = "float32",
        **kwargs,
    ):
        super().__init__(
            str(filepath),
            call_endpoint=call_endpoint,
            trainable=trainable,
            name=name,
            dtype=dtype,
            **kwargs,
        )
        self._signature_input = None
        if not hasattr(self._reloaded_obj, call_endpoint):
            # A signature: one keyword argument per input.
            input_names = list(self.call_endpoint_fn.structured_input_signature[1])
            if len(input_names) != 1:
                raise ConfigError(
                    f"The SavedModel '{filepath}' signature '{call_endpoint}' takes inputs "
                    f"{input_names}; an image model with a single image input is expected."
                )
            self._signature_input = input_names[0]

    def _add_existing_weight(self, weight):
        # TFSMLayer keeps the restored name ("block1/conv/kernel:0"); make it a valid scope name.
        clean_name = re.sub(r"[^A-Za-z0-9_.-]", "_", re.sub(r":\d+$", "", weight.name))
        variable = keras.Variable(
            initializer=weight,  # wraps the restored tf.Variable itself: training updates it
            trainable=weight.trainable,
            dtype=weight.dtype,
            shape=weight.shape,
            name=clean_name,
        )
        self._track_variable(variable)

    def call(self, inputs, training=False):
        inputs = ops.cast(inputs, "float32")
        if self._signature_input is not None:
            outputs = self.call_endpoint_fn(**{self._signature_input: inputs})
        else:
            outputs = self.call_endpoint_fn(inputs)
        if isinstance(outputs, dict):
            if len(outputs) != 1:
                raise ConfigError(
                    f"The SavedModel '{self.filepath}' endpoint '{self.call_endpoint}' returns "
                    f"several outputs {sorted(outputs)}; a single feature tensor is expected."
                )
            outputs = next(iter(outputs.values()))
        return ops.cast(outputs, self.compute_dtype)


def load_savedmodel_layer(
    path: str | Path, trainable: bool = True, name: str | None = None
) -> TrainableSavedModel:
    """Loads `path` with the TF-Hub "__call__" interface, or else its "serving_default"."""
    try:
        return TrainableSavedModel(path, call_endpoint="__call__", trainable=trainable, name=name)
    except (OSError, tf.errors.OpError) as error:  # unreadable saved_model.pb, no variables/
        raise ConfigError(
            f"Cannot load the SavedModel '{path}' ({type(error).__name__}: "
            f"{str(error).splitlines()[0]}). It must hold saved_model.pb, "
            "variables/variables.index and variables/variables.data-*: extract the whole "
            "archive again."
        ) from error
    except ValueError as call_missing:
        try:
            return TrainableSavedModel(
                path, call_endpoint="serving_default", trainable=trainable, name=name
            )
        except ValueError:
            raise ConfigError(
                f"The SavedModel '{path}' has neither a '__call__' function (the TF-Hub "
                "interface) nor a 'serving_default' signature; export it with one of them."
            ) from call_missing
