"""`npu_device.ops.gelu`: tf.nn.gelu eagerly, the NPU's FastGelu in graphs and Keras models.

As the real one: on a Keras functional-API tensor it adds a layer computing FastGelu (the real adds
its own TFOpLambda subclass; the fake a Lambda layer), eagerly it is the exact `tf.nn.gelu`, and
while a graph is built it is FastGelu (an approximation: results differ slightly from tf.nn.gelu).
"""

from __future__ import annotations

import tensorflow as tf
from keras.engine import keras_tensor  # a Keras-2 private module, imported as by the real one
from tensorflow.python.util import nest

from npu_device.npu_device import gen_npu_ops


def gelu(x):
    if any(isinstance(e, keras_tensor.KerasTensor) for e in nest.flatten([x])):
        return tf.keras.layers.Lambda(gen_npu_ops.fast_gelu)(x)
    if tf.executing_eagerly():
        return tf.nn.gelu(x)
    return gen_npu_ops.fast_gelu(tf.convert_to_tensor(x))
