"""DenseNet-121 from keras.applications with random weights (nothing is downloaded), for the
README's TensorFlow commands.

As a Python source: convertkit convert examples/keras_densenet.py:build
As files:           python examples/keras_densenet.py FOLDER   writes FOLDER/densenet.keras,
                    densenet.h5, savedmodel/ (model.export), densenet.tflite and frozen.pb
                    (a frozen GraphDef: input `image`, output `logits`)
"""

import sys
from pathlib import Path

import keras
import tensorflow as tf


def build() -> keras.Model:
    keras.utils.set_random_seed(0)
    image = keras.Input((32, 32, 3), name="image")
    return keras.applications.DenseNet121(weights=None, input_tensor=image, classes=10,
                                          classifier_activation=None)


def write_frozen_graph(model: keras.Model, path: Path) -> None:
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    @tf.function(input_signature=[tf.TensorSpec((None, 32, 32, 3), tf.float32, name="image")])
    def serve(image):
        return tf.identity(model(image, training=False), name="logits")

    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    model = build()
    model.save(folder / "densenet.keras")
    model.save(folder / "densenet.h5")
    model.export(str(folder / "savedmodel"), verbose=False)
    (folder / "densenet.tflite").write_bytes(
        tf.lite.TFLiteConverter.from_keras_model(model).convert())
    write_frozen_graph(model, folder / "frozen.pb")
