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
"""

from __future__ import annotations

import contextlib
import enum
import logging
import re
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from convertkit.adapters import Adapter, Lowered, LowerRequest, make_check_feeds
from convertkit.adapters.python_source import load_python_object, source_mentions
from convertkit.checker.inputs import read_data, save_arrays, specs_from_data
from convertkit.dependencies import require
from convertkit.errors import ConversionError, ConvertkitError, UsageError
from convertkit.spec import DTYPES, InputSpec, SourceRef

if TYPE_CHECKING:
    import onnx

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
KERAS_SUFFIXES = {".keras"}
H5_SUFFIXES = {".h5", ".hdf5"}
TFLITE_SUFFIXES = {".tflite"}
GRAPH_DEF_SUFFIXES = {".pb"}
PYTHON_PACKAGES = ("tensorflow", "keras", "tf_keras")
DEFAULT_SIGNATURE = "serving_default"
# tf2onnx's default is 15; 17 gives LayerNormalization and is what NPU toolchains take.
DEFAULT_OPSET = 17
NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# Graph nodes that are never a model's output.
_NOT_OUTPUTS = {"Const", "NoOp", "Placeholder", "PlaceholderWithDefault", "Assert",
                "SaveV2", "RestoreV2", "Assign", "AssignVariableOp", "VarHandleOp"}
_TF2ONNX_LOGGER = "tf2onnx"


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


@dataclass(frozen=True)
class DeclaredInput:
    """An input as the source records it, in TensorFlow's layout. ``dims`` is None when the
    rank is unknown; a None axis is dynamic."""

    name: str
    dims: tuple[int | None, ...] | None
    dtype: str


@dataclass
class _TfModel:
    """A loaded source as one callable: check inputs by name in, structured outputs out."""

    call: Callable[[dict[str, Any]], Any]
    declared: list[DeclaredInput]  # empty: the source records no inputs, -i is needed
    what: str  # for messages: "SavedModel signature 'serving_default'"
    exporter: str  # the route to ONNX, for the report
    output_names: list[str] | None = None  # preferred names (a Keras model's output layers)
    notes: list[str] = field(default_factory=list)
    inputs_hint: str = ""  # what to pass with -i when the source records no inputs
    # What ``call`` needs alive: a loaded SavedModel's functions refer to its variables,
    # which TensorFlow deletes with the object.
    owner: Any = None


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
            raise _not_a_tensorflow_source(request.source)
        check_options(kind, request)
        if kind is SourceKind.KERAS:
            _check_keras_container(request.source.path)  # before TensorFlow's 4 s import
        tf = _import_tensorflow()
        if kind is SourceKind.TFLITE:
            return _lower_tflite(request, tf)
        model = _load(kind, request, tf)
        specs = resolve_inputs(model.declared, _user_specs(request, model.declared),
                               request.options.inputs_as_nchw, model.what, model.inputs_hint)
        onnx_specs = [onnx_layout(s, request.options.inputs_as_nchw) for s in specs]

        function, output_names = _trace(model, specs, request, tf)
        opset, opset_notes = _tf2onnx_opset(request.options.opset)
        _convert_function(function, specs, output_names, request, opset, tf)
        _finish_onnx(request.export_path, onnx_specs, output_names)

        feeds = make_check_feeds(request, onnx_specs, request.export_path)
        names, reference = _reference(model, feeds, specs, request, tf)
        if names != output_names:
            raise ConversionError(
                f"{model.what} returned outputs {names} when run, {output_names} when traced",
                hint="the model's outputs must not depend on how it is called",
                code="output-mismatch")
        save_arrays(request.feeds_path, feeds)
        save_arrays(request.reference_path, reference)
        return Lowered(
            framework=self.name, onnx_path=request.export_path, feeds_path=request.feeds_path,
            reference_path=request.reference_path, exporter=model.exporter,
            inputs=tuple(onnx_specs), output_names=tuple(output_names),
            notes=tuple(model.notes + opset_notes + _layout_notes(request.options.inputs_as_nchw)),
            nchw_inputs=tuple(request.options.inputs_as_nchw),
        )


# --- what the source is (no TensorFlow import) --------------------------------------------

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


def _not_a_tensorflow_source(source: SourceRef) -> UsageError:
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


# --- inputs (no TensorFlow import) --------------------------------------------------------

def onnx_layout(spec: InputSpec, nchw: Sequence[str]) -> InputSpec:
    """``spec`` (TensorFlow's layout) as the ONNX model has it: NCHW for ``nchw`` inputs."""
    if spec.name not in nchw:
        return spec
    return InputSpec(spec.name, tuple(spec.dims[i] for i in NHWC_TO_NCHW), spec.dtype)


def tensorflow_layout(spec: InputSpec, nchw: Sequence[str]) -> InputSpec:
    """``spec`` (the ONNX model's layout) as TensorFlow has it: NHWC for ``nchw`` inputs."""
    if spec.name not in nchw or len(spec.dims) != 4:
        return spec
    return InputSpec(spec.name, tuple(spec.dims[i] for i in NCHW_TO_NHWC), spec.dtype)


def declared_spec(declared: DeclaredInput) -> InputSpec:
    """A declared input as an InputSpec: unknown axes named (``batch`` first, then
    ``NAME_AXIS``) so they stay dynamic in the ONNX model."""
    assert declared.dims is not None
    stem = re.sub(r"\W", "_", declared.name)
    dims = tuple(
        d if d is not None else ("batch" if axis == 0 else f"{stem}_{axis}")
        for axis, d in enumerate(declared.dims))
    return InputSpec(declared.name, dims, declared.dtype)


def resolve_inputs(declared: Sequence[DeclaredInput], user: Sequence[InputSpec],
                   nchw: Sequence[str], where: str, inputs_hint: str = "") -> list[InputSpec]:
    """The inputs to convert with, in TensorFlow's layout: the source's own, each fixed by
    the user's ``-i`` of the same name, or the user's alone when the source records none.
    ``user`` is in the ONNX model's layout (NCHW for the ``nchw`` inputs)."""
    user_tf = [tensorflow_layout(s, nchw) for s in user]
    if not declared:
        if not user_tf:
            raise UsageError(
                f"{where} does not record its input shapes",
                hint="declare each input with -i NAME:DIMS[:DTYPE]"
                + (f" ({inputs_hint})" if inputs_hint else "") + ", or pass --data FILE.npz",
                code="inputs-required")
        specs = list(user_tf)
    else:
        known = [d.name for d in declared]
        unknown = [s.name for s in user_tf if s.name not in known]
        if unknown:
            raise UsageError(
                f"-i names input(s) {', '.join(unknown)} that {where} does not have "
                f"(its inputs: {', '.join(known)})",
                hint="use the model's input names with -i", code="unknown-input")
        given = {s.name: s for s in user_tf}
        specs = [_fit(d, given.get(d.name), nchw) for d in declared]
    for spec in specs:
        if spec.dtype not in DTYPES:
            raise ConversionError(
                f"input {spec.name} of {where} has dtype {spec.dtype}, which the check "
                "cannot feed", hint=f"inputs must be one of: {', '.join(DTYPES)}",
                code="unsupported-input-dtype")
    names = [s.name for s in specs]
    for name in nchw:
        if name not in names:
            raise UsageError(
                f"--inputs-as-nchw names {name}, which is not an input of {where} "
                f"(its inputs: {', '.join(names)})",
                hint="name an NHWC image input", code="unknown-input")
        rank = len(next(s for s in specs if s.name == name).dims)
        if rank != 4:
            raise UsageError(
                f"--inputs-as-nchw {name}: the input has rank {rank}, not 4 (NHWC)",
                hint="only rank-4 NHWC inputs can be made NCHW", code="bad-layout")
    return specs


def _fit(declared: DeclaredInput, user: InputSpec | None, nchw: Sequence[str]) -> InputSpec:
    if user is None:
        if declared.dims is None:
            raise UsageError(
                f"input {declared.name} does not record its shape (unknown rank)",
                hint=f"declare it with -i {declared.name}:DIMS:{declared.dtype}",
                code="inputs-required")
        return declared_spec(declared)
    if user.dtype != declared.dtype and user.dtype != "float32":
        # float32 is -i's default: a user who wrote no dtype gets the declared one.
        raise UsageError(
            f"-i {user.name} asks for {user.dtype}, but the model's input is {declared.dtype}",
            hint=f"drop the dtype or write -i {user.name}:DIMS:{declared.dtype}",
            code="input-mismatch")
    if declared.dims is None:
        return InputSpec(user.name, user.dims, declared.dtype)
    expected = declared_spec(declared)
    layout = " (NCHW, as --inputs-as-nchw makes it)" if user.name in nchw else ""
    shown = onnx_layout(expected, nchw)
    if len(user.dims) != len(declared.dims):
        raise UsageError(
            f"-i {user.name} has {len(user.dims)} dims, the model's input has "
            f"{len(declared.dims)}: {_dims_text(shown.dims)}{layout}",
            hint=f"give -i {user.name} in the model's shape{layout}", code="input-mismatch")
    dims: list[int | str] = []
    for axis, (want, got) in enumerate(zip(declared.dims, user.dims, strict=True)):
        if want is not None and got != want:
            hint = "only dynamic axes (names) can be given a size with -i"
            if user.name not in nchw and _fits_as_nchw(declared.dims, user.dims):
                hint = (f"-i {user.name} looks NCHW and the model takes NHWC: add "
                        f"--inputs-as-nchw {user.name} to make the ONNX input NCHW")
            raise UsageError(
                f"-i {onnx_layout(user, nchw)} does not fit the model's input "
                f"{_dims_text(shown.dims)}{layout}: axis {axis} is fixed at {want}",
                hint=hint, code="input-mismatch")
        dims.append(got)
    return InputSpec(user.name, tuple(dims), declared.dtype)


def _fits_as_nchw(declared: Sequence[int | None], user: Sequence[int | str]) -> bool:
    if len(declared) != 4 or len(user) != 4:
        return False
    nhwc = [user[i] for i in NCHW_TO_NHWC]
    return all(want is None or want == got for want, got in zip(declared, nhwc, strict=True))


def _dims_text(dims: Sequence[int | str]) -> str:
    return "x".join(str(d) for d in dims)


def _user_specs(request: LowerRequest, declared: Sequence[DeclaredInput]) -> list[InputSpec]:
    """-i, or the shapes of --data's arrays for a source that records no inputs (both in
    the ONNX layout). A source's own dynamic axes stay dynamic with --data."""
    if request.options.inputs or request.options.data is None or declared:
        return list(request.options.inputs)
    return specs_from_data(read_data(request.options.data))


def _layout_notes(nchw: Sequence[str]) -> list[str]:
    if not nchw:
        return []
    return [f"--inputs-as-nchw: input(s) {', '.join(nchw)} are NCHW in the ONNX model and in "
            "check/inputs.npz; the TensorFlow reference ran on them transposed to NHWC"]


def graph_sinks(nodes: Sequence[tuple[str, str, Sequence[str]]], limit: int = 8) -> list[str]:
    """Likely outputs of a GraphDef given as (name, op, inputs): nodes nothing consumes."""
    consumed = {re.sub(r":\d+$", "", name.lstrip("^")) for _, _, inputs in nodes
                for name in inputs}
    return [name for name, op, _ in nodes
            if name not in consumed and op not in _NOT_OUTPUTS][:limit]


def output_key(path: Sequence[str | int]) -> str:
    """The name of one output: ``output`` alone, dict keys as they are, positions as
    ``output_N`` (the PyTorch adapter's convention)."""
    name = ".".join(str(p) for p in path) or "output"
    return f"output_{name}" if name[0].isdigit() else name


def describe_unsupported(ops: Sequence[tuple[str, str]], limit: int = 4) -> str:
    """'Svd (node model/svd), Lgamma (node lg)' from (node, op) pairs, one per op type."""
    seen: dict[str, str] = {}
    for node, op in ops:
        seen.setdefault(op, node)
    parts = [f"{op} (node {node})" for op, node in seen.items()]
    shown = ", ".join(parts[:limit])
    return shown + (f" and {len(parts) - limit} more" if len(parts) > limit else "")


# --- loading ------------------------------------------------------------------------------

def _import_tensorflow():
    tf = require("tensorflow", name="tensorflow", extra="tensorflow",
                 needed_for="needed for TensorFlow sources")
    # The converter: fail here, not after loading the model.
    require("tf2onnx", name="tf2onnx", extra="tensorflow",
            needed_for="needed for TensorFlow sources")
    return tf


def _import_keras():
    return require("keras", name="keras", extra="tensorflow",
                   needed_for="needed for .keras and .h5 files")


def _load(kind: SourceKind, request: LowerRequest, tf) -> _TfModel:
    source = request.source
    if kind is SourceKind.PYTHON:
        return _load_python(source, request, tf)
    assert source.path is not None
    if kind is SourceKind.SAVED_MODEL:
        folder = source.path.parent if source.path.is_file() else source.path
        return _load_saved_model(folder, request.options.signature, tf)
    if kind is SourceKind.KERAS:
        return _load_keras_file(source.path, request.options.trust_code, tf)
    return _load_graph_def(source.path, request.options.output_names, tf)


def _load_saved_model(folder: Path, signature: str | None, tf) -> _TfModel:
    if not is_saved_model(folder):
        raise _not_a_tensorflow_source(SourceRef(str(folder), folder, None, None))
    try:
        loaded = tf.saved_model.load(str(folder))
    except Exception as exc:
        raise UsageError(
            f"cannot load SavedModel {folder}: {type(exc).__name__}: {_first_line(exc)}",
            hint="pass a complete folder written by tf.saved_model.save or model.export "
            "(saved_model.pb and variables/)", code="bad-saved-model") from exc
    return _from_trackable(loaded, signature, f"SavedModel {folder.name}", tf)


def _from_trackable(obj, signature: str | None, what: str, tf) -> _TfModel:
    """A SavedModel (or any tf.Module): its signature, else the tf.function asked for, else
    __call__."""
    signatures = {k: v for k, v in dict(getattr(obj, "signatures", None) or {}).items()
                  if not k.startswith("_")}
    functions = _tf_functions(obj, tf)
    # A loaded SavedModel has .signatures (maybe empty); a Python tf.Module has none.
    unsigned = f"{what} has no serving signature: " if hasattr(obj, "signatures") else ""
    if signatures and (signature is None or signature in signatures or
                       signature not in functions):
        name = choose_signature(list(signatures), signature, what, list(functions))
        model = _signature_model(signatures[name], f"{what} signature '{name}'")
        if len(signatures) > 1:
            model.notes.append(f"signature '{name}' of {', '.join(sorted(signatures))}")
    elif signature is not None:
        if signature not in functions:
            raise UsageError(
                f"{what} has no signature or tf.function named {signature!r}",
                hint=f"pass --signature with one of: {', '.join(functions) or '(none)'}",
                code="unknown-signature")
        model = _function_model(functions[signature], f"{what}.{signature}", tf)
    elif "__call__" in functions:
        model = _function_model(functions["__call__"], f"{what}.__call__", tf)
        if unsigned:
            model.notes.append(f"{unsigned}converted its __call__")
    elif len(functions) == 1:
        name, function = next(iter(functions.items()))
        model = _function_model(function, f"{what}.{name}", tf)
        if unsigned:
            model.notes.append(f"{unsigned}converted its tf.function {name}")
    else:
        raise _no_signature(what, functions)
    model.owner = obj
    return model


def _no_signature(what: str, functions: Mapping[str, Any]) -> UsageError:
    return UsageError(
        f"{what} has no serving signature and no tf.function __call__",
        hint=("pick one of its tf.functions with --signature: " + ", ".join(functions))
        if functions else "give the module a tf.function __call__ with an input_signature",
        code="no-signature")


def choose_signature(available: Sequence[str], requested: str | None, where: str,
                     functions: Sequence[str] = ()) -> str:
    """``--signature`` if given, else serving_default, else the only one."""
    if requested is not None:
        if requested in available:
            return requested
        others = f"; tf.functions: {', '.join(sorted(functions))}" if functions else ""
        names = ", ".join(sorted(available))
        raise UsageError(
            f"{where} has no signature {requested!r} (signatures: {names}{others})",
            hint=f"pass --signature with one of: {names}",
            code="unknown-signature")
    if DEFAULT_SIGNATURE in available:
        return DEFAULT_SIGNATURE
    if len(available) == 1:
        return available[0]
    raise UsageError(
        f"{where} has several signatures and none is {DEFAULT_SIGNATURE}: "
        f"{', '.join(sorted(available))}", hint="pick one with --signature NAME",
        code="signature-required")


def _tf_functions(obj, tf) -> dict[str, Any]:
    """The tf.functions an object holds, by attribute name (``__call__`` included)."""
    found = {}
    names = ["__call__", *(n for n in dir(obj) if not n.startswith("_"))]
    for name in names:
        if name in ("signatures", "submodules", "trainable_variables", "variables"):
            continue
        try:
            value = getattr(obj, name)
        except Exception:  # properties of half-built modules raise anything
            continue
        if isinstance(value, tf.types.experimental.GenericFunction):
            found[name] = value
    return found


def _signature_model(function, what: str) -> _TfModel:
    _, keyword = function.structured_input_signature
    declared = [_declared(name, spec) for name, spec in keyword.items()]
    return _TfModel(call=lambda feeds: function(**feeds), declared=declared, what=what,
                    exporter=f"{_tf2onnx_label()} ({what})")


def _function_model(function, what: str, tf, concrete=None) -> _TfModel:
    """A tf.function: its input signature, or its one traced signature (a restored
    function), else the user's -i."""
    if concrete is None and getattr(function, "input_signature", None) is not None:
        concrete = function.get_concrete_function()
    elif concrete is None:
        traced = list(getattr(function, "concrete_functions", None) or [])  # restored ones
        if len(traced) == 1:
            concrete = traced[0]
    exporter = f"{_tf2onnx_label()} (tf.function {what})"
    if concrete is None:
        parameters = _parameters(function)
        return _TfModel(call=_keyword_or_positional(function, parameters), declared=[],
                        what=what, exporter=exporter,
                        inputs_hint="it takes: " + (", ".join(parameters) or "x"))
    structure = concrete.structured_input_signature
    leaves = tf.nest.flatten(structure)
    specs = [leaf for leaf in leaves if isinstance(leaf, tf.TensorSpec)]
    placeholders = [t.name.split(":")[0] for t in concrete.inputs[:len(specs)]]
    names = [spec.name or placeholders[i] for i, spec in enumerate(specs)]
    declared = [_declared(name, spec) for name, spec in zip(names, specs, strict=True)]

    def call(feeds: dict[str, Any]):
        values = iter(feeds[name] for name in names)
        filled = [next(values) if isinstance(leaf, tf.TensorSpec) else leaf for leaf in leaves]
        args, kwargs = tf.nest.pack_sequence_as(structure, filled)
        return function(*args, **kwargs)

    return _TfModel(call=call, declared=declared, what=what, exporter=exporter)


def _parameters(function) -> list[str]:
    import inspect

    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in signature.parameters.values() if p.kind in kinds]


def _keyword_or_positional(function, parameters: list[str]):
    def call(feeds: dict[str, Any]):
        if set(feeds) <= set(parameters):
            return function(**feeds)
        return function(*feeds.values())
    return call


def _declared(name: str, spec) -> DeclaredInput:
    dims = None if spec.shape.rank is None else tuple(spec.shape.as_list())
    return DeclaredInput(name, dims, spec.dtype.name)


def _load_keras_file(path: Path, trust_code: bool, tf) -> _TfModel:
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
                         f"{_first_line(exc)}", hint=hint, code="bad-keras-file") from exc
    if not isinstance(model, keras.Model):
        raise UsageError(f"{path.name} holds a {type(model).__name__}, not a keras.Model",
                         hint="pass a file written by model.save", code="not-a-model")
    result = _keras_model(model, f"Keras model {path.name}", tf)
    result.notes.append("loaded with safe_mode=False (--trust-code)" if trust_code
                        else "loaded with safe_mode=True")
    return result


def _check_keras_container(path: Path) -> None:
    """Name a truncated or foreign file before Keras calls it 'File not found'."""
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


def _is_keras_model(obj) -> bool:
    """A keras.Model (Keras 3) or tf_keras.Model (Keras 2), without importing either."""
    return any(cls.__name__ == "Model" and cls.__module__.split(".")[0] in ("keras", "tf_keras")
               for cls in type(obj).__mro__)


def _keras_model(model, what: str, tf) -> _TfModel:
    exporter = f"{_tf2onnx_label()} (Keras model through a tf.function)"
    try:
        inputs = list(model.inputs or [])
    except AttributeError:  # a subclassed model that has not been built
        inputs = []
    if not inputs:
        def call_unbuilt(feeds: dict[str, Any]):
            values = list(feeds.values())
            return model(values[0] if len(values) == 1 else feeds, training=False)
        return _TfModel(call=call_unbuilt, declared=[], what=what, exporter=exporter,
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
    return _TfModel(call=call, declared=declared, what=what, exporter=exporter,
                    output_names=output_names)


def _keras_input_name(tensor) -> str:
    """The InputLayer's name: an unnamed keras.Input's tensor is called keras_tensor_N in
    memory but after save and load it takes its layer's name; the layer name is stable."""
    history = getattr(tensor, "_keras_history", None)
    layer = history[0] if history else None
    return getattr(layer, "name", None) or tensor.name


def _load_python(source: SourceRef, request: LowerRequest, tf) -> _TfModel:
    obj = load_python_object(source)
    if callable(obj) and not _is_tf_object(obj, tf):  # a factory, or a model class
        obj = _build(obj, source)
    if _is_keras_model(obj):
        model = _keras_model(obj, source.text, tf)
        if request.options.signature is not None:
            raise UsageError(f"--signature does not apply to a Keras model ({source.text})",
                             hint="drop --signature: a Keras model has one call",
                             code="option-not-applicable")
        if request.options.weights is not None:
            _load_keras_weights(obj, request.options.weights)
            model.notes.append(f"weights loaded from {request.options.weights.name}")
        return model
    if request.options.weights is not None:
        raise UsageError(
            f"--weights applies to Keras models only; {source.text} is a "
            f"{type(obj).__name__}", hint="drop --weights", code="weights-not-applicable")
    is_function = isinstance(obj, tf.types.experimental.GenericFunction)
    is_concrete = isinstance(obj, tf.types.experimental.ConcreteFunction)
    if (is_function or is_concrete) and request.options.signature is not None:
        raise UsageError(f"--signature does not apply to a tf.function ({source.text})",
                         hint="drop --signature", code="option-not-applicable")
    if is_function:
        return _function_model(obj, source.text, tf)
    if is_concrete:
        return _function_model(obj, source.text, tf, concrete=obj)
    if isinstance(obj, tf.__internal__.tracking.AutoTrackable):
        return _from_trackable(obj, request.options.signature, source.text, tf)
    raise UsageError(
        f"{source.text} is a {type(obj).__name__}, not a keras.Model, tf.Module or tf.function",
        hint="name a keras.Model, a tf.Module, a tf.function, or a function returning one",
        code="not-a-model")


def _is_tf_object(obj, tf) -> bool:
    return _is_keras_model(obj) or isinstance(obj, (
        tf.types.experimental.GenericFunction, tf.types.experimental.ConcreteFunction,
        tf.__internal__.tracking.AutoTrackable))


def _build(factory, source: SourceRef):
    try:
        return factory()
    except Exception as exc:
        raise UsageError(
            f"{source.text}() raised {type(exc).__name__}: {_first_line(exc)}",
            hint="the factory must build the model with no arguments",
            code="factory-failed") from exc


def _load_keras_weights(model, path: Path) -> None:
    try:
        model.load_weights(str(path))
    except Exception as exc:
        raise UsageError(
            f"cannot load --weights {path.name} into the model: {type(exc).__name__}: "
            f"{_first_line(exc)}",
            hint="pass a file written by model.save_weights('FILE.weights.h5') from this "
            "model's architecture", code="bad-weights") from exc


def _load_graph_def(path: Path, outputs: Sequence[str], tf) -> _TfModel:
    from google.protobuf.message import DecodeError

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise UsageError(f"{path} is not a frozen GraphDef: {_first_line(exc)}",
                         hint="pass a .pb written from a GraphDef (graph_def.SerializeToString)",
                         code="bad-graph-def") from exc
    nodes = {n.name: n for n in graph_def.node}
    if not nodes:
        raise UsageError(f"{path} holds no graph nodes (empty or not a GraphDef)",
                         hint="pass a frozen GraphDef .pb", code="bad-graph-def")
    sinks = graph_sinks([(n.name, n.op, list(n.input)) for n in graph_def.node])
    if not outputs:
        raise UsageError(
            f"a frozen GraphDef does not say which tensors are its outputs ({path.name})",
            hint="name them with --output, e.g. --output "
            + (" --output ".join(sinks[:2]) if sinks else "logits")
            + (f" (nodes nothing consumes: {', '.join(sinks)})" if sinks else ""),
            code="outputs-required")
    fetches = []
    for name in outputs:
        node_name, _, port = name.partition(":")
        if node_name not in nodes:
            raise UsageError(f"--output {name}: the graph has no node {node_name!r}",
                             hint=f"nodes nothing consumes: {', '.join(sinks) or '(none)'}",
                             code="unknown-output")
        fetches.append(f"{node_name}:{port or 0}")
    placeholders = [nodes[n] for n in _ancestors(nodes, [f.split(":")[0] for f in fetches])
                    if nodes[n].op == "Placeholder"]
    declared = []
    for node in placeholders:
        shape = node.attr["shape"].shape
        dims = None if shape.unknown_rank else tuple(
            None if d.size < 0 else d.size for d in shape.dim)
        declared.append(DeclaredInput(node.name, dims, tf.as_dtype(node.attr["dtype"].type).name))
    if not declared:
        raise UsageError(f"the outputs {', '.join(outputs)} depend on no Placeholder",
                         hint="name outputs computed from the graph's inputs",
                         code="no-inputs")

    def import_graph():
        tf.import_graph_def(graph_def, name="")

    try:
        wrapped = tf.compat.v1.wrap_function(import_graph, [])
        pruned = wrapped.prune([f"{d.name}:0" for d in declared], fetches)
    except Exception as exc:
        raise UsageError(f"TensorFlow cannot import {path.name}: {type(exc).__name__}: "
                         f"{_first_line(exc)}", hint="pass a frozen GraphDef (variables folded "
                         "into constants)", code="bad-graph-def") from exc
    output_names = [f.removesuffix(":0") for f in fetches]
    names = [d.name for d in declared]

    def call(feeds: dict[str, Any]):
        return list(pruned(*[feeds[n] for n in names]))

    return _TfModel(call=call, declared=declared, what=f"frozen graph {path.name}",
                    exporter=f"{_tf2onnx_label()} (frozen GraphDef)",
                    output_names=output_names)


def _ancestors(nodes: Mapping[str, Any], starts: list[str]) -> list[str]:
    """Names of the nodes ``starts`` depend on (themselves included), in graph order."""
    seen: set[str] = set()
    stack = list(starts)
    while stack:
        name = stack.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        stack.extend(re.sub(r":\d+$", "", i.lstrip("^")) for i in nodes[name].input)
    return [name for name in nodes if name in seen]


# --- tracing, converting ------------------------------------------------------------------

def _flatten(structured, preferred: list[str] | None, tf) -> tuple[list[str], list[Any]]:
    """(names, tensors) of a model's (possibly nested) outputs, in a stable order."""
    leaves: list[tuple[list[str | int], Any]] = []

    def walk(value, path):
        if isinstance(value, Mapping):  # sorted, as tf.nest and signatures order them
            for key in sorted(value, key=str):
                walk(value[key], [*path, str(key)])
        elif isinstance(value, (list, tuple)):
            fields = getattr(value, "_fields", None)
            for index, item in enumerate(value):
                walk(item, [*path, fields[index] if fields else index])
        elif isinstance(value, (tf.Tensor, tf.Variable, np.ndarray)):
            leaves.append((path, value))

    walk(structured, [])
    names = [output_key(path) for path, _ in leaves]
    is_positional = not isinstance(structured, Mapping)
    if preferred and is_positional and len(preferred) == len(leaves) \
            and len(set(preferred)) == len(preferred):
        names = list(preferred)
    return names, [value for _, value in leaves]


def _tf_spec(spec: InputSpec, tf):
    shape = [d if isinstance(d, int) else None for d in spec.dims]
    return tf.TensorSpec(shape, tf.as_dtype(spec.dtype), name=_placeholder_name(spec.name))


def _placeholder_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.\-/]", "_", name)
    return cleaned if re.match(r"[A-Za-z0-9.]", cleaned) else f"input{cleaned}"


def _trace(model: _TfModel, specs: list[InputSpec], request: LowerRequest, tf):
    """One tf.function over the model, with the inputs' names, shapes and dtypes."""
    names = [s.name for s in specs]
    traced_names: list[str] = []

    def serve(*args):
        structured = model.call(dict(zip(names, args, strict=True)))
        output_names, tensors = _flatten(structured, model.output_names, tf)
        traced_names[:] = output_names
        return tuple(tensors)

    signature = [_tf_spec(s, tf) for s in specs]
    try:
        function = tf.function(serve, input_signature=signature)
        concrete = function.get_concrete_function()
    except ConvertkitError:
        raise
    except Exception as exc:
        raise _rejected(model.what, model.declared, specs, request, exc) from exc
    if not traced_names:
        raise ConversionError(f"{model.what} returned no tensors",
                              hint="return a tensor, or a list or dict of tensors",
                              code="no-outputs")
    if len(set(traced_names)) != len(traced_names):
        raise ConversionError(f"{model.what} has duplicate output names {traced_names}",
                              hint="give each output its own name", code="output-mismatch")
    return concrete, list(traced_names)


def _rejected(what: str, declared: Sequence[DeclaredInput], specs: list[InputSpec],
              request: LowerRequest, exc: BaseException,
              feeds: Mapping[str, np.ndarray] | None = None) -> ConvertkitError:
    """The model failed on its inputs: the user's fault (exit 2) when they gave them."""
    if feeds is not None:
        shapes = ", ".join(f"{name}:{_dims_text(value.shape)}:{value.dtype}"
                           for name, value in feeds.items())
    else:
        shapes = ", ".join(str(onnx_layout(s, request.options.inputs_as_nchw)) for s in specs)
    message = f"{what} rejects inputs {shapes}: {type(exc).__name__}: {_first_line(exc)}"
    if request.options.inputs or request.options.data is not None or not declared:
        return UsageError(message, hint="fix the shapes and dtypes given with -i (or the "
                          "arrays in --data)", code="shape-rejected")
    return ConversionError(message, hint="the model fails on the inputs its own signature "
                           "declares; give concrete sizes with -i", code="shape-rejected")


def _tf2onnx_opset(requested: int | None) -> tuple[int, list[str]]:
    from tf2onnx import constants

    highest = max(constants.OPSET_TO_IR_VERSION)
    if requested is None:
        return min(DEFAULT_OPSET, highest), []
    if requested > highest:
        return highest, [f"tf2onnx writes opsets up to {highest}: exported at {highest}, "
                         f"converted to {requested} on the hub"]
    return requested, []


def _tf2onnx_label() -> str:
    import tf2onnx

    return f"tf2onnx {tf2onnx.__version__}"


def _convert_function(concrete, specs: list[InputSpec], output_names: list[str],
                      request: LowerRequest, opset: int, tf) -> None:
    from tf2onnx import tf_loader

    inputs = [t.name for t in concrete.inputs[:len(specs)]]
    outputs = [t.name for t in concrete.outputs]
    rename = dict(zip(inputs, [s.name for s in specs], strict=True))
    rename.update(zip(outputs, output_names, strict=True))
    with _Tf2OnnxProblems() as problems:
        try:
            with tf.device("/cpu:0"):
                frozen = tf_loader.from_function(concrete, inputs, outputs)
        except Exception as exc:
            raise ConversionError(
                f"TensorFlow could not freeze the model: {type(exc).__name__}: "
                f"{_first_line(exc)}", hint="the full output is in logs/export.log",
                code="export-failed") from exc

        def process():
            from tf2onnx import tfonnx

            with tf.Graph().as_default() as graph:
                tf.import_graph_def(frozen, name="")
                return tfonnx.process_tf_graph(
                    graph, continue_on_error=False, opset=opset, input_names=inputs,
                    output_names=outputs, tensors_to_rename=rename,
                    inputs_as_nchw=list(request.options.inputs_as_nchw))

        model = _run_tf2onnx(process, problems, request, tf)
    _save(model, request.export_path)


def _run_tf2onnx(process: Callable[[], Any], problems: _Tf2OnnxProblems,
                 request: LowerRequest, tf) -> onnx.ModelProto:
    from tf2onnx import optimizer

    try:
        with tf.device("/cpu:0"):
            graph = process()
        problems.raise_if_unsupported()
        graph = optimizer.optimize_graph(graph, catch_errors=True)
        return graph.make_model(f"converted from {request.source.text} by convertkit")
    except ConvertkitError:
        raise
    except Exception as exc:
        problems.raise_if_unsupported()
        where = f" at node {problems.failed_node}" if problems.failed_node else ""
        raise ConversionError(
            f"tf2onnx could not convert the model{where}: {type(exc).__name__}: "
            f"{_first_line(exc)}",
            hint="try another --opset; the full output is in logs/export.log",
            code="export-failed") from exc


class _Tf2OnnxProblems(logging.Handler):
    """Collects what tf2onnx logs instead of raising: ops it has no conversion for (it
    leaves them in the graph as TensorFlow ops) and the node whose conversion failed. While
    attached, tf2onnx's INFO lines go to stderr, which is logs/export.log."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.unsupported: list[tuple[str, str]] = []
        self.failed_node: str | None = None
        self._echo = logging.StreamHandler()
        self._echo.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self._level = logging.NOTSET

    def emit(self, record: logging.LogRecord) -> None:
        message = str(record.msg)
        args = record.args if isinstance(record.args, tuple) else ()
        if "is not supported" in message and len(args) >= 2:
            self.unsupported.append((_model_node(str(args[0])), str(args[1])))
        elif message.startswith("Failed to convert node") and args:
            self.failed_node = self.failed_node or _model_node(str(args[0]))

    def __enter__(self) -> _Tf2OnnxProblems:
        logger = logging.getLogger(_TF2ONNX_LOGGER)
        self._level = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(self)
        logger.addHandler(self._echo)
        return self

    def __exit__(self, *exc_info) -> None:
        logger = logging.getLogger(_TF2ONNX_LOGGER)
        logger.removeHandler(self)
        logger.removeHandler(self._echo)
        logger.setLevel(self._level)

    def raise_if_unsupported(self) -> None:
        if self.unsupported:
            raise ConversionError(
                f"tf2onnx has no ONNX conversion for TensorFlow op(s) "
                f"{describe_unsupported(self.unsupported)}",
                hint="replace the op in the model, or try another --opset (tf2onnx writes "
                "opsets up to 18); the full output is in logs/export.log",
                code="unsupported-op")


def _model_node(name: str) -> str:
    """A node's name in the model, without the call of convertkit's own wrapper function
    (inlined as ``PartitionedCall/`` or ``StatefulPartitionedCall/``)."""
    return re.sub(r"^(?:Stateful)?PartitionedCall(?:_\d+)?/", "", name)


def _save(model: onnx.ModelProto, path: Path) -> None:
    from convertkit.ir.io import save_model

    save_model(model, path)


def _finish_onnx(path: Path, specs: list[InputSpec], output_names: list[str]) -> None:
    """Name the dynamic axes as the report does, fix the axes -i fixed, check names and put
    inputs and outputs in the model's order."""
    from convertkit.ir.io import load_model, save_model

    model = load_model(path)
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = {i.name: i for i in graph.input if i.name not in initializers}
    outputs = {o.name: o for o in graph.output}
    expected_inputs = [s.name for s in specs]
    if set(inputs) != set(expected_inputs):
        raise ConversionError(f"tf2onnx wrote inputs {sorted(inputs)}, expected "
                              f"{expected_inputs}", code="input-mismatch")
    if set(outputs) != set(output_names) or len(graph.output) != len(output_names):
        raise ConversionError(f"tf2onnx wrote outputs {list(outputs)}, expected {output_names}",
                              code="output-mismatch")
    for spec in specs:
        shape = inputs[spec.name].type.tensor_type.shape
        if len(shape.dim) != len(spec.dims):
            continue
        for dim, value in zip(shape.dim, spec.dims, strict=True):
            if isinstance(value, int):
                dim.dim_value = value
            else:
                dim.dim_param = value
    # tf2onnx names every unknown axis unk__N, unrelated to the input names above: drop
    # them (and its intermediate shapes) so that shape inference on the hub carries
    # `batch` through to the outputs.
    del graph.value_info[:]
    for output in graph.output:
        for dim in output.type.tensor_type.shape.dim:
            if dim.dim_param.startswith("unk__"):
                dim.ClearField("dim_param")
    ordered_inputs = [inputs[n] for n in expected_inputs] + [
        i for i in graph.input if i.name in initializers]
    ordered_outputs = [outputs[n] for n in output_names]
    for field_, ordered in ((graph.input, ordered_inputs), (graph.output, ordered_outputs)):
        copies = [type(v)() for v in ordered]
        for copy, value in zip(copies, ordered, strict=True):
            copy.CopyFrom(value)
        del field_[:]
        field_.extend(copies)
    save_model(model, path)


# --- reference ----------------------------------------------------------------------------

def _tf_feeds(feeds: Mapping[str, np.ndarray], nchw: Sequence[str]) -> dict[str, np.ndarray]:
    """The check feeds as TensorFlow takes them: NCHW inputs transposed back to NHWC."""
    return {name: np.ascontiguousarray(np.transpose(value, NCHW_TO_NHWC)) if name in nchw
            else value for name, value in feeds.items()}


def _reference(model: _TfModel, feeds: Mapping[str, np.ndarray], specs: list[InputSpec],
               request: LowerRequest, tf) -> tuple[list[str], dict[str, np.ndarray]]:
    tf_feeds = {name: tf.constant(value) for name, value in
                _tf_feeds(feeds, request.options.inputs_as_nchw).items()}
    try:
        structured = model.call(tf_feeds)
    except Exception as exc:
        raise _rejected(model.what, model.declared, specs, request, exc, feeds) from exc
    names, values = _flatten(structured, model.output_names, tf)
    return names, {name: _to_numpy(value) for name, value in zip(names, values, strict=True)}


def _to_numpy(value) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.name == "bfloat16":
        array = array.astype(np.float32)
    return array


# --- TFLite -------------------------------------------------------------------------------

@dataclass
class _TfliteModel:
    declared: list[DeclaredInput]
    output_names: list[str]
    rename: dict[str, str]  # flatbuffer tensor name -> input/output name
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    notes: list[str]


def _lower_tflite(request: LowerRequest, tf) -> Lowered:
    path = request.source.path
    assert path is not None
    model = _load_tflite(path, request.options.signature, tf)
    what = f"TFLite model {path.name}"
    specs = resolve_inputs(model.declared, _user_specs(request, model.declared),
                           request.options.inputs_as_nchw, what)
    onnx_specs = [onnx_layout(s, request.options.inputs_as_nchw) for s in specs]
    opset, opset_notes = _tf2onnx_opset(request.options.opset)

    def process():
        from tf2onnx import tfonnx

        return tfonnx.process_tf_graph(
            None, tflite_path=str(path), continue_on_error=False, opset=opset,
            tensors_to_rename=model.rename, inputs_as_nchw=list(request.options.inputs_as_nchw))

    with _Tf2OnnxProblems() as problems:
        onnx_model = _run_tf2onnx(process, problems, request, tf)
    _save(onnx_model, request.export_path)
    _finish_onnx(request.export_path, onnx_specs, model.output_names)

    feeds = make_check_feeds(request, onnx_specs, request.export_path)
    try:
        outputs = model.run(_tf_feeds(feeds, request.options.inputs_as_nchw))
    except Exception as exc:
        raise _rejected(what, model.declared, specs, request, exc, feeds) from exc
    reference = {name: _to_numpy(outputs[name]) for name in model.output_names}
    save_arrays(request.feeds_path, feeds)
    save_arrays(request.reference_path, reference)
    return Lowered(
        framework=TensorFlowAdapter.name, onnx_path=request.export_path,
        feeds_path=request.feeds_path, reference_path=request.reference_path,
        exporter=f"{_tf2onnx_label()} (TFLite flatbuffer)", inputs=tuple(onnx_specs),
        output_names=tuple(model.output_names),
        notes=tuple(model.notes + opset_notes + _layout_notes(request.options.inputs_as_nchw)),
        nchw_inputs=tuple(request.options.inputs_as_nchw),
    )


def _load_tflite(path: Path, signature: str | None, tf) -> _TfliteModel:
    with _quiet_tflite_warning():
        try:
            interpreter = tf.lite.Interpreter(model_path=str(path))
        except (ValueError, RuntimeError) as exc:
            raise UsageError(f"{path} is not a readable TFLite model: {_first_line(exc)}",
                             hint="pass a .tflite file written by tf.lite.TFLiteConverter",
                             code="bad-tflite") from exc
    signatures = interpreter.get_signature_list()
    notes = ["reference: the TFLite interpreter (tf.lite.Interpreter)"]
    if signatures:
        name = choose_signature(list(signatures), signature, f"TFLite model {path.name}")
        if len(signatures) > 1:
            notes.append(f"signature '{name}' of {', '.join(sorted(signatures))}")
        runner = interpreter.get_signature_runner(name)
        inputs = runner.get_input_details()
        outputs = runner.get_output_details()
        declared = [_tflite_declared(key, detail) for key, detail in inputs.items()]
        rename = {d["name"]: key for key, d in inputs.items()}
        rename.update({d["name"]: key for key, d in outputs.items()})
        return _TfliteModel(declared, list(outputs), rename,
                            lambda feeds: dict(runner(**feeds)), notes)
    if signature is not None:
        raise UsageError(f"TFLite model {path.name} has no signatures",
                         hint="drop --signature", code="unknown-signature")
    input_details = interpreter.get_input_details()
    output_details = interpreter.get_output_details()
    rename = {d["name"]: d["name"].removesuffix(":0") for d in input_details + output_details}
    declared = [_tflite_declared(rename[d["name"]], d) for d in input_details]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for detail in input_details:
            interpreter.resize_tensor_input(detail["index"], feeds[rename[detail["name"]]].shape)
        interpreter.allocate_tensors()
        for detail in input_details:
            interpreter.set_tensor(detail["index"], feeds[rename[detail["name"]]])
        interpreter.invoke()
        return {rename[d["name"]]: interpreter.get_tensor(d["index"]) for d in output_details}

    return _TfliteModel(declared, [rename[d["name"]] for d in output_details], rename, run,
                        notes)


def _tflite_declared(name: str, detail: Mapping[str, Any]) -> DeclaredInput:
    shape = detail.get("shape_signature")
    if shape is None or len(shape) == 0:
        shape = detail["shape"]
    dims = tuple(None if int(d) < 0 else int(d) for d in shape)
    return DeclaredInput(name, dims, np.dtype(detail["dtype"]).name)


@contextlib.contextmanager
def _quiet_tflite_warning() -> Iterator[None]:
    """tf.lite.Interpreter warns that it moves to ai_edge_litert; it still works in 2.21."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        yield


def _first_line(exc: BaseException) -> str:
    return first_line(str(exc)) or type(exc).__name__


def first_line(text: str) -> str:
    """The line of an error message that says what went wrong. TensorFlow's runtime errors
    open with 'Graph execution error:' and a Python stack; the reason comes after it."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].startswith("Graph execution error"):
        node = re.search(r"Detected at node (\S+)", text)
        reason = next((line.strip() for line in lines[1:]
                       if not line[0].isspace() and not line.startswith("Detected at node")),
                      lines[0].strip())
        return (f"{reason} (node {node.group(1)})" if node else reason)[:240]
    return lines[0].strip()[:240]
