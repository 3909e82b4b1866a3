"""The plain Keras scripts the runner is measured against, written the keras-io way.

keras-io examples/vision/learnable_resizer.py and bit.py: a model function, a tf.data pipeline
of a few tf.image calls, `model.compile` + `model.fit`. Deliberately independent of the runner's
modules: this is the baseline an engineer would write without it. The only additions are
`steps` (fit a fixed number of steps) and `callbacks` (the benchmark's meter).

Which Keras: the one a user of this TensorFlow writes. On TensorFlow 2.21 (the default stack)
that is Keras 3 (`import keras`), so the runner's ratio against it shows what the runner's Keras 2
(tf-keras) costs or gains. On TensorFlow 2.6 (the Ascend stack) it is `tf.keras` (Keras 2.6), as
the seeds and keras-io's bit.py write it; there it is the same Keras the runner uses.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

if keras.__version__.startswith("2."):  # TensorFlow 2.6: the seeds' tf.keras (the public API;
    from tensorflow import keras  # `import keras` there is Keras' internal package)

layers = keras.layers
KERAS_3 = keras.__version__.startswith("3.")

AUTO = tf.data.AUTOTUNE
INTERPOLATION = "bilinear"


def conv_bn(x, filters: int, kernel_size: int, activation: bool = True):
    x = layers.Conv2D(filters, kernel_size, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.LeakyReLU(0.2)(x) if activation else x


def learnable_resizer(target_size: int, filters: int = 16) -> keras.Model:
    """Talebi & Milanfar's resizer: bilinear resize plus a learned residual (one res block)."""
    inputs = layers.Input(shape=[None, None, 3])
    naive = layers.Resizing(target_size, target_size, interpolation=INTERPOLATION)(inputs)
    x = layers.LeakyReLU(0.2)(layers.Conv2D(filters, 7, padding="same")(inputs))
    x = layers.BatchNormalization()(layers.LeakyReLU(0.2)(layers.Conv2D(filters, 1)(x)))
    bottleneck = layers.Resizing(target_size, target_size, interpolation=INTERPOLATION)(x)
    block = conv_bn(conv_bn(bottleneck, filters, 3), filters, 3, activation=False)
    x = layers.Add()([bottleneck, block])
    x = layers.Add()([bottleneck, conv_bn(x, filters, 3, activation=False)])
    x = layers.Conv2D(3, 7, padding="same")(x)
    return keras.Model(inputs, layers.Add()([naive, x]), name="learnable_resizer")


def resizer_densenet(input_size: int, target_size: int, num_classes: int) -> keras.Model:
    backbone = keras.applications.DenseNet121(
        weights=None, include_top=True, classes=num_classes,
        input_shape=(target_size, target_size, 3),
    )
    inputs = layers.Input((input_size, input_size, 3))
    x = layers.Rescaling(scale=1.0 / 255)(inputs)
    outputs = backbone(learnable_resizer(target_size)(x))
    return keras.Model(inputs, outputs)


def train_resizer(
    images: np.ndarray, labels: np.ndarray, num_classes: int, target_size: int,
    batch_size: int, steps: int, callbacks: list,
) -> keras.Model:
    """keras-io learnable_resizer.py's training on images already resized in memory."""
    model = resizer_densenet(images.shape[1], target_size, num_classes)
    model.compile(
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
        optimizer="sgd",
        metrics=["accuracy"],
    )
    train_ds = (
        tf.data.Dataset.from_tensor_slices((images, tf.one_hot(labels, num_classes)))
        .shuffle(batch_size * 100)
        .repeat()
        .batch(batch_size)
        .prefetch(AUTO)
    )
    model.fit(train_ds, epochs=1, steps_per_epoch=steps, callbacks=callbacks, verbose=0)
    return model


def frozen_savedmodel_layer(backbone_path: str) -> layers.Layer:
    """The SavedModel's `__call__` as a frozen layer, the way this Keras calls a SavedModel.

    Keras 2 (the seeds, keras-io bit.py): `hub.KerasLayer(path)`, frozen by default. Keras 3
    cannot hold a `hub.KerasLayer`; `TFSMLayer` is its way to call a SavedModel.
    """
    if KERAS_3:
        return layers.TFSMLayer(backbone_path, call_endpoint="__call__", trainable=False)
    import tensorflow_hub as hub

    return hub.KerasLayer(backbone_path, trainable=False)


def bit_classifier(backbone_path: str, num_classes: int) -> keras.Model:
    """keras-io bit.py's model: the hub feature vector (frozen) + a zero-initialised Dense head."""
    backbone = frozen_savedmodel_layer(backbone_path)
    inputs = layers.Input((None, None, 3))
    features = backbone(inputs)
    outputs = layers.Dense(num_classes, kernel_initializer="zeros")(features)
    return keras.Model(inputs, outputs)


def bit_preprocess_train(image, label, resize: int, crop: int):
    image = tf.image.random_flip_left_right(image)
    image = tf.image.resize(image, (resize, resize))
    image = tf.image.random_crop(image, (crop, crop, 3))
    return image / 255.0, label


def train_bit(
    images: np.ndarray, labels: np.ndarray, num_classes: int, backbone_path: str,
    resize: int, crop: int, batch_size: int, steps: int, callbacks: list,
) -> keras.Model:
    """keras-io bit.py's training (SGD momentum 0.9, sparse CE from logits) on in-memory images."""
    model = bit_classifier(backbone_path, num_classes)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.003 * batch_size / 512, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    train_ds = (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .shuffle(batch_size * 10)
        .repeat()
        .map(lambda x, y: bit_preprocess_train(x, y, resize, crop), num_parallel_calls=AUTO)
        .batch(batch_size)
        .prefetch(AUTO)
    )
    model.fit(train_ds, epochs=1, steps_per_epoch=steps, callbacks=callbacks, verbose=0)
    return model


def reset_session(policy: str = "float32") -> None:
    """This Keras' session cleared and its global dtype policy set (Keras 3 and tf-keras each
    keep their own; on TensorFlow 2.6 this is the runner's Keras too)."""
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(policy)
