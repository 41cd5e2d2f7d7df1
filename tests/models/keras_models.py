"""TensorFlow and Keras models for the adapter tests: keras.applications (weights=None), small
functional models, tf.Modules and tf.functions. Builders return models; writers save them in
the formats users bring (SavedModel, .keras, .h5, .tflite, frozen GraphDef)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf


def densenet121() -> keras.Model:
    """keras.applications DenseNet121, random weights, 32x32 inputs, logits out. (An untrained
    MobileNetV2 or EfficientNetB0 outputs values near 1e-10, which any converter "matches";
    DenseNet's outputs are near 0.1, so the check means something.)"""
    keras.utils.set_random_seed(0)
    return keras.applications.DenseNet121(weights=None, input_shape=(32, 32, 3), classes=10,
                                          classifier_activation=None)


def two_in_two_out() -> keras.Model:
    """A functional model with two named inputs and two named outputs."""
    keras.utils.set_random_seed(0)
    features = keras.Input((8,), name="features")
    extra = keras.Input((4,), name="extra")
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(features)
    joined = keras.layers.Concatenate(name="joined")([hidden, extra])
    scores = keras.layers.Dense(3, name="scores")(joined)
    probability = keras.layers.Dense(1, activation="sigmoid", name="probability")(hidden)
    return keras.Model([features, extra], [scores, probability], name="two_in_two_out")


def small_cnn() -> keras.Model:
    """A small NHWC image classifier with batch normalisation."""
    keras.utils.set_random_seed(0)
    image = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(image)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    logits = keras.layers.Dense(5, name="logits")(x)
    return keras.Model(image, logits, name="small_cnn")


def lambda_model() -> keras.Model:
    """A model whose saved file holds Python code (a Lambda layer)."""
    x = keras.Input((4,), name="x")
    y = keras.layers.Lambda(lambda t: t * 2.0 + 1.0, name="affine")(x)
    return keras.Model(x, y)


class Scorer(tf.Module):
    """A tf.Module with a serving __call__ that returns a dict, and a second tf.function."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(0)
        self.w = tf.Variable(rng.standard_normal((6, 3)).astype("float32"), name="w")
        self.b = tf.Variable(rng.standard_normal((3,)).astype("float32"), name="b")

    @tf.function(input_signature=[tf.TensorSpec((None, 6), tf.float32, name="x")])
    def __call__(self, x):
        logits = tf.matmul(x, self.w) + self.b
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    @tf.function(input_signature=[tf.TensorSpec((None, 6), tf.float32, name="x")])
    def embed(self, x):
        return tf.tanh(tf.matmul(x, self.w))


@tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="a"),
                              tf.TensorSpec((None, 4), tf.float32, name="b")])
def gated_sum(a, b):
    """A tf.function with an input signature and a positional (tuple) output."""
    return a * tf.sigmoid(b), a + b


class SvdModule(tf.Module):
    """Computes singular values: TensorFlow's Svd op has no ONNX conversion in tf2onnx."""

    @tf.function(input_signature=[tf.TensorSpec((3, 3), tf.float32, name="x")])
    def __call__(self, x):
        return tf.linalg.svd(x, compute_uv=False) + 1.0


def not_a_model() -> str:
    return "just a string"


# --- writers ------------------------------------------------------------------------------

def write_saved_model_from_module(folder: Path) -> Path:
    """Scorer as a SavedModel with two signatures: serving_default (__call__) and embed."""
    module = Scorer()
    tf.saved_model.save(module, str(folder),
                        signatures={"serving_default": module.__call__, "embed": module.embed})
    return folder


def write_tflite(path: Path) -> Path:
    converter = tf.lite.TFLiteConverter.from_keras_model(small_cnn())
    path.write_bytes(converter.convert())
    return path


def write_frozen_graph(path: Path) -> Path:
    """A frozen GraphDef of small_cnn: input placeholder `image`, output node `logits_out`."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    model = small_cnn()

    @tf.function(input_signature=[tf.TensorSpec((None, 16, 16, 3), tf.float32, name="image")])
    def serve(image):
        return tf.identity(model(image, training=False), name="logits_out")

    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    return path
