"""Keras models: Keras 3 ``.keras`` and legacy ``.h5`` files, and a keras.Model from Python
(with ``--weights``), each called through a tf.function. tf2onnx's ``from_keras`` is not
used: it fails on Keras 3 (KeyError keras_tensor_N)."""

from __future__ import annotations

import contextlib
import zipfile
from pathlib import Path
from typing import Any

from convertkit.adapters.tensorflow.export import tf2onnx_label
from convertkit.adapters.tensorflow.inputs import DeclaredInput
from convertkit.adapters.tensorflow.reasons import error_reason
from convertkit.adapters.tensorflow.sources import KERAS_SUFFIXES
from convertkit.adapters.tensorflow.tracing import TfModel
from convertkit.dependencies import require
from convertkit.errors import UsageError

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _import_keras():
    return require("keras", name="keras", extra="tensorflow",
                   needed_for="needed for .keras and .h5 files")


def load_keras_file(path: Path, trust_code: bool, tf) -> TfModel:
    keras = _import_keras()
    try:
        model = keras.models.load_model(str(path), compile=False, safe_mode=not trust_code)
    except Exception as exc:
        text = str(exc)
        if "safe_mode" in text or "unsafe_deserialization" in text:
            raise UsageError(
                f"{path.name} holds Python code (a Lambda layer or similar) that Keras will "
                "only deserialise with safe_mode=False",
                hint="pass --trust-code if you trust this file (it can run arbitrary code)",
                code="unsafe-deserialization") from exc
        hint = "pass a complete file written by model.save (this one may be truncated)"
        if "No model config" in text or "weights" in text.lower():
            hint = ("it looks like a weights-only file: pass the model's code as FILE.py:NAME "
                    f"with --weights {path.name}")
        raise UsageError(f"cannot load Keras file {path}: {type(exc).__name__}: "
                         f"{error_reason(exc)}", hint=hint, code="bad-keras-file") from exc
    if not isinstance(model, keras.Model):
        raise UsageError(f"{path.name} holds a {type(model).__name__}, not a keras.Model",
                         hint="pass a file written by model.save", code="not-a-model")
    result = keras_model(model, f"Keras model {path.name}", tf)
    result.notes.append("loaded with safe_mode=False (--trust-code)" if trust_code
                        else "loaded with safe_mode=True")
    return result


def check_keras_container(path: Path) -> None:
    """Name a truncated or foreign file before Keras calls it 'File not found' (no
    TensorFlow import)."""
    if path.suffix.lower() in KERAS_SUFFIXES:
        complete = zipfile.is_zipfile(path)
        if complete:
            try:
                with zipfile.ZipFile(path) as archive:
                    complete = "config.json" in archive.namelist()
            except (zipfile.BadZipFile, OSError):
                complete = False
        if not complete:
            raise UsageError(
                f"{path} is not a complete .keras file (a zip archive holding config.json): "
                "truncated or not written by model.save",
                hint="save the model again with model.save('model.keras'), or check that the "
                "file was copied completely", code="bad-keras-file")
        return
    with path.open("rb") as handle:
        if handle.read(len(_HDF5_MAGIC)) != _HDF5_MAGIC:
            raise UsageError(
                f"{path} is not an HDF5 file (truncated or not written by model.save)",
                hint="pass a legacy .h5 model written by model.save('model.h5')",
                code="bad-keras-file")


def is_keras_model(obj) -> bool:
    """A keras.Model (Keras 3) or tf_keras.Model (Keras 2), without importing either."""
    return any(cls.__name__ == "Model" and cls.__module__.split(".")[0] in ("keras", "tf_keras")
               for cls in type(obj).__mro__)


def keras_model(model, what: str, tf) -> TfModel:
    exporter = f"{tf2onnx_label()} (Keras model through a tf.function)"
    try:
        inputs = list(model.inputs or [])
    except AttributeError:  # a subclassed model that has not been built
        inputs = []
    if not inputs:
        def call_unbuilt(feeds: dict[str, Any]):
            values = list(feeds.values())
            return model(values[0] if len(values) == 1 else feeds, training=False)
        return TfModel(call=call_unbuilt, declared=[], what=what, exporter=exporter,
                       inputs_hint="a subclassed Keras model records none")
    structure = None
    with contextlib.suppress(AttributeError, ValueError):
        structure = model.input
    # Dict-structured models are called by their dict's keys; others by input layer names.
    pairs = list(structure.items()) if isinstance(structure, dict) else [
        (_keras_input_name(t), t) for t in inputs]
    declared = [DeclaredInput(name, tuple(t.shape), tf.as_dtype(t.dtype).name)
                for name, t in pairs]
    names = [d.name for d in declared]

    def call(feeds: dict[str, Any]):
        if isinstance(structure, dict):
            return model(feeds, training=False)
        if len(names) == 1:
            return model(feeds[names[0]], training=False)
        return model([feeds[n] for n in names], training=False)

    output_names = None
    with contextlib.suppress(AttributeError):
        output_names = list(model.output_names)
    return TfModel(call=call, declared=declared, what=what, exporter=exporter,
                   output_names=output_names)


def _keras_input_name(tensor) -> str:
    """The InputLayer's name: an unnamed keras.Input's tensor is called keras_tensor_N in
    memory but after save and load it takes its layer's name; the layer name is stable."""
    history = getattr(tensor, "_keras_history", None)
    layer = history[0] if history else None
    return getattr(layer, "name", None) or tensor.name


def load_keras_weights(model, path: Path) -> None:
    """``--weights``: a .weights.h5 file into a keras.Model built from Python."""
    try:
        model.load_weights(str(path))
    except Exception as exc:
        raise UsageError(
            f"cannot load --weights {path.name} into the model: {type(exc).__name__}: "
            f"{error_reason(exc)}",
            hint="pass a file written by model.save_weights('FILE.weights.h5') from this "
            "model's architecture", code="bad-weights") from exc
