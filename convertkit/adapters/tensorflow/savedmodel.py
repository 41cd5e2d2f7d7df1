"""SavedModel folders, and what they share with a tf.Module from Python: picking a serving
signature or a tf.function, and reading the inputs it declares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from convertkit.adapters.tensorflow.export import tf2onnx_label
from convertkit.adapters.tensorflow.inputs import DeclaredInput
from convertkit.adapters.tensorflow.reasons import error_reason
from convertkit.adapters.tensorflow.sources import is_saved_model, not_a_tensorflow_source
from convertkit.adapters.tensorflow.tracing import TfModel
from convertkit.errors import UsageError
from convertkit.spec import SourceRef

DEFAULT_SIGNATURE = "serving_default"


def load_saved_model(folder: Path, signature: str | None, tf) -> TfModel:
    if not is_saved_model(folder):
        raise not_a_tensorflow_source(SourceRef(str(folder), folder, None, None))
    try:
        loaded = tf.saved_model.load(str(folder))
    except Exception as exc:
        raise UsageError(
            f"cannot load SavedModel {folder}: {type(exc).__name__}: {error_reason(exc)}",
            hint="pass a complete folder written by tf.saved_model.save or model.export "
            "(saved_model.pb and variables/)", code="bad-saved-model") from exc
    return from_trackable(loaded, signature, f"SavedModel {folder.name}", tf)


def from_trackable(obj, signature: str | None, what: str, tf) -> TfModel:
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
        model = function_model(functions[signature], f"{what}.{signature}", tf)
    elif "__call__" in functions:
        model = function_model(functions["__call__"], f"{what}.__call__", tf)
        if unsigned:
            model.notes.append(f"{unsigned}converted its __call__")
    elif len(functions) == 1:
        name, function = next(iter(functions.items()))
        model = function_model(function, f"{what}.{name}", tf)
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


def _signature_model(function, what: str) -> TfModel:
    _, keyword = function.structured_input_signature
    declared = [_declared(name, spec) for name, spec in keyword.items()]
    return TfModel(call=lambda feeds: function(**feeds), declared=declared, what=what,
                   exporter=f"{tf2onnx_label()} ({what})")


def function_model(function, what: str, tf, concrete=None) -> TfModel:
    """A tf.function: its input signature, or its one traced signature (a restored
    function), else the user's -i."""
    if concrete is None and getattr(function, "input_signature", None) is not None:
        concrete = function.get_concrete_function()
    elif concrete is None:
        traced = list(getattr(function, "concrete_functions", None) or [])  # restored ones
        if len(traced) == 1:
            concrete = traced[0]
    exporter = f"{tf2onnx_label()} (tf.function {what})"
    if concrete is None:
        parameters = _parameters(function)
        return TfModel(call=_keyword_or_positional(function, parameters), declared=[],
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

    return TfModel(call=call, declared=declared, what=what, exporter=exporter)


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
    """A tf.TensorSpec as a DeclaredInput."""
    dims = None if spec.shape.rank is None else tuple(spec.shape.as_list())
    return DeclaredInput(name, dims, spec.dtype.name)
