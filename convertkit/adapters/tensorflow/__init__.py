"""TensorFlow and Keras sources: SavedModel folders, Keras 3 ``.keras`` and legacy ``.h5``
files, ``.tflite`` flatbuffers, frozen GraphDef ``.pb`` files, and FILE.py:NAME /
module:NAME naming a keras.Model, a tf.Module or a tf.function (or a callable returning one).

Every source but TFLite becomes one tf.function with a named input signature, frozen and
converted by tf2onnx; TFLite files go through tf2onnx's own flatbuffer reader. tf2onnx's
``from_keras`` is not used: it fails on Keras 3 (KeyError keras_tensor_N), while a
tf.function that calls the Keras model converts. The reference outputs come from TensorFlow
itself (the signature, the Keras model, the frozen graph, the TFLite interpreter), run
eagerly on the same check inputs every artifact gets.

Layout: NHWC inputs stay NHWC unless ``--inputs-as-nchw`` names them. Those are NCHW in the
ONNX model, in ``-i``, ``--data`` and the check feeds; the reference run transposes them
back to NHWC for TensorFlow.

Where things are:

- ``sources``: which kind of source a path is, and which options each kind takes.
- ``savedmodel``, ``keras``, ``graphdef``, ``python_object``: loading each kind as a
  ``TfModel`` (``savedmodel`` also holds the signature and tf.function handling a
  tf.Module from Python shares); ``tflite``: the TFLite route, start to end.
- ``tracing``: a ``TfModel`` traced as one tf.function, converted, and run for the
  reference outputs.
- ``export``: tf2onnx (opset, conversion, the problems it logs) and tidying its ONNX file.
- ``inputs``, ``layout``, ``reasons``: fitting ``-i`` to the declared inputs,
  ``--inputs-as-nchw``, and TensorFlow's errors as one-line messages.

Only the functions that load or convert import TensorFlow, tf2onnx or Keras.
"""

from __future__ import annotations

from typing import ClassVar

from convertkit.adapters import Adapter, Lowered, LowerRequest, save_check_data
from convertkit.adapters.python_source import source_mentions
from convertkit.adapters.tensorflow.graphdef import load_graph_def
from convertkit.adapters.tensorflow.keras import check_keras_container, load_keras_file
from convertkit.adapters.tensorflow.layout import layout_notes
from convertkit.adapters.tensorflow.python_object import load_python
from convertkit.adapters.tensorflow.savedmodel import load_saved_model
from convertkit.adapters.tensorflow.sources import (
    PYTHON_PACKAGES,
    SourceKind,
    check_options,
    not_a_tensorflow_source,
    source_kind,
)
from convertkit.adapters.tensorflow.tflite import lower_tflite
from convertkit.adapters.tensorflow.tracing import TfModel, lower_traced
from convertkit.dependencies import require
from convertkit.spec import SourceRef


class TensorFlowAdapter(Adapter):
    name: ClassVar[str] = "tensorflow"
    options: ClassVar[frozenset[str]] = frozenset(
        {"signature", "output_names", "inputs_as_nchw", "trust_code"})

    def detect(self, source: SourceRef) -> bool:
        if source.is_python_object:
            return source_mentions(source, PYTHON_PACKAGES)
        return source_kind(source) is not None

    def lower(self, request: LowerRequest) -> Lowered:
        kind = source_kind(request.source)
        if kind is None:
            raise not_a_tensorflow_source(request.source)
        check_options(kind, request)
        if kind is SourceKind.KERAS:
            check_keras_container(request.source.path)  # before TensorFlow's 4 s import
        tf = _import_tensorflow()
        if kind is SourceKind.TFLITE:
            converted = lower_tflite(request, tf)
        else:
            converted = lower_traced(_load(kind, request, tf), request, tf)
        return Lowered(
            framework=self.name, onnx_path=request.export_path,
            check=save_check_data(request, converted.plan, converted.references),
            exporter=converted.exporter,
            inputs=tuple(converted.inputs), output_names=tuple(converted.output_names),
            notes=tuple(converted.notes + layout_notes(request.options.inputs_as_nchw)),
            nchw_inputs=tuple(request.options.inputs_as_nchw),
        )


def _import_tensorflow():
    tf = require("tensorflow", name="tensorflow", extra="tensorflow",
                 needed_for="needed for TensorFlow sources")
    # The converter: fail here, not after loading the model.
    require("tf2onnx", name="tf2onnx", extra="tensorflow",
            needed_for="needed for TensorFlow sources")
    return tf


def _load(kind: SourceKind, request: LowerRequest, tf) -> TfModel:
    source = request.source
    if kind is SourceKind.PYTHON:
        return load_python(source, request, tf)
    assert source.path is not None
    if kind is SourceKind.SAVED_MODEL:
        folder = source.path.parent if source.path.is_file() else source.path
        return load_saved_model(folder, request.options.signature, tf)
    if kind is SourceKind.KERAS:
        return load_keras_file(source.path, request.options.trust_code, tf)
    return load_graph_def(source.path, request.options.output_names, tf)
