"""Which kind of TensorFlow source a path names, and which options each kind takes, from
names and folder contents alone (no TensorFlow import)."""

from __future__ import annotations

import enum
from pathlib import Path

from convertkit.adapters import LowerRequest
from convertkit.errors import UsageError
from convertkit.spec import SourceRef

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
KERAS_SUFFIXES = {".keras"}
H5_SUFFIXES = {".h5", ".hdf5"}
TFLITE_SUFFIXES = {".tflite"}
GRAPH_DEF_SUFFIXES = {".pb"}
# A FILE.py:NAME source belongs to TensorFlow when its file imports one of these.
PYTHON_PACKAGES = ("tensorflow", "keras", "tf_keras")


class SourceKind(enum.StrEnum):
    SAVED_MODEL = "SavedModel"
    KERAS = "Keras file"
    TFLITE = "TFLite model"
    GRAPH_DEF = "frozen GraphDef"
    PYTHON = "Python object"


# The LowerRequest options each kind of source takes; the rest are refused, not ignored.
OPTIONS_BY_KIND: dict[SourceKind, frozenset[str]] = {
    SourceKind.SAVED_MODEL: frozenset({"signature", "inputs_as_nchw"}),
    SourceKind.KERAS: frozenset({"trust_code", "inputs_as_nchw"}),
    SourceKind.TFLITE: frozenset({"signature", "inputs_as_nchw"}),
    SourceKind.GRAPH_DEF: frozenset({"output_names", "inputs_as_nchw"}),
    SourceKind.PYTHON: frozenset({"signature", "weights", "inputs_as_nchw"}),
}
_OPTION_FLAGS = {"signature": "--signature", "output_names": "--output",
                 "inputs_as_nchw": "--inputs-as-nchw", "trust_code": "--trust-code",
                 "weights": "--weights"}
_OPTION_USES = {
    "signature": "picks a SavedModel or TFLite signature, or a tf.Module's tf.function",
    "output_names": "names the output tensors of a frozen GraphDef (.pb)",
    "trust_code": "lets a .keras or .h5 file run the Python code it holds (Lambda layers)",
    "weights": "loads a .weights.h5 file into the Keras model a FILE.py:NAME returns",
    "inputs_as_nchw": "",
}


def source_kind(source: SourceRef) -> SourceKind | None:
    """Which kind of TensorFlow source ``source`` is, from its name and folder contents."""
    if source.is_python_object:
        return SourceKind.PYTHON
    path = source.path
    if path is None:
        return None
    if path.is_dir():
        return SourceKind.SAVED_MODEL if is_saved_model(path) else None
    suffix = path.suffix.lower()
    if path.name in SAVED_MODEL_FILES:
        return SourceKind.SAVED_MODEL
    if suffix in KERAS_SUFFIXES or suffix in H5_SUFFIXES:
        return SourceKind.KERAS
    if suffix in TFLITE_SUFFIXES:
        return SourceKind.TFLITE
    if suffix in GRAPH_DEF_SUFFIXES:
        return SourceKind.GRAPH_DEF
    return None


def is_saved_model(folder: Path) -> bool:
    return any((folder / name).is_file() for name in SAVED_MODEL_FILES)


def not_a_tensorflow_source(source: SourceRef) -> UsageError:
    path = source.path
    if path is not None and path.is_dir():
        present = sorted(p.name for p in path.iterdir())[:8]
        return UsageError(
            f"{path} is not a SavedModel: it has no saved_model.pb "
            f"(it holds: {', '.join(present) or 'nothing'})",
            hint="pass the folder written by tf.saved_model.save or model.export",
            code="not-a-saved-model")
    return UsageError(
        f"{source.text} is not a TensorFlow source the tensorflow adapter reads",
        hint="pass a SavedModel folder, a .keras, .h5, .tflite or frozen GraphDef .pb file, "
        "or FILE.py:NAME",
        code="unknown-source")


def check_options(kind: SourceKind, request: LowerRequest) -> None:
    """Refuse the options that do not apply to this kind of source, naming what they do."""
    options = request.options
    given = {
        "signature": options.signature is not None, "output_names": bool(options.output_names),
        "inputs_as_nchw": bool(options.inputs_as_nchw), "trust_code": options.trust_code,
        "weights": options.weights is not None,
    }
    for option, is_given in given.items():
        if is_given and option not in OPTIONS_BY_KIND[kind]:
            flag = _OPTION_FLAGS[option]
            raise UsageError(
                f"{flag} does not apply to a {kind.value} source ({request.source.text})",
                hint=f"drop {flag}: it {_OPTION_USES[option]}",
                code="option-not-applicable")
