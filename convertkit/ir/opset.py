"""Opset conversion, up and down, with the ops that cannot make the trip named first."""

from __future__ import annotations

import re

import numpy as np
import onnx
from onnx import defs, helper, numpy_helper

from convertkit.errors import ConversionError, first_line
from convertkit.ir.info import default_opset, iter_nodes

DEFAULT_DOMAINS = ("", "ai.onnx")


def newest_known_opset() -> int:
    """The newest default-domain opset the installed onnx package can check and convert."""
    return defs.onnx_opset_version()


def inexpressible_ops(model: onnx.ModelProto, target: int) -> list[str]:
    """Default-domain ops of ``model`` that have no definition at opset ``target``, as
    readable reasons ("LayerNormalization: first defined in opset 17")."""
    reasons = {}
    for node in iter_nodes(model.graph):
        if node.domain not in DEFAULT_DOMAINS or node.op_type in reasons:
            continue
        try:
            schema = defs.get_schema(node.op_type, target, "")
        except defs.SchemaError:
            first = _first_version(node.op_type)
            reasons[node.op_type] = (f"{node.op_type}: first defined in opset {first}"
                                     if first else f"{node.op_type}: not an ONNX operator")
            continue
        if schema.deprecated:
            reasons[node.op_type] = f"{node.op_type}: deprecated at opset {schema.since_version}"
    return sorted(reasons.values())


def _first_version(op_type: str) -> int | None:
    versions = [s.since_version for s in defs.get_all_schemas_with_history()
                if s.name == op_type and s.domain == ""]
    return min(versions) if versions else None


def convert_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """``model`` at default-domain opset ``target``; a ConversionError names the ops that
    cannot be expressed there, or the converter's own complaint."""
    source = default_opset(model)
    if source == target:
        return model
    if target > newest_known_opset():
        raise ConversionError(
            f"opset {target} is newer than this onnx package knows ({newest_known_opset()})",
            hint=f"pick --opset {newest_known_opset()} or lower", code="opset-too-new")
    blocked = inexpressible_ops(model, target)
    if blocked:
        raise ConversionError(
            f"cannot convert from opset {source} to {target}: " + "; ".join(blocked),
            hint=f"keep opset {source}, or pick an opset where these ops exist",
            code="opset-conversion-failed")
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, target)
    except Exception as exc:  # the converter raises bare RuntimeErrors naming the op
        if target < source:
            # onnx's converter lacks many down-adapters, even where a newer version only
            # widened the types (Relu 14 -> 13). Relabel when every node fits the older
            # schema as it is; the numerical check then judges the result.
            return _relabel_down(model, source, target, exc)
        raise _conversion_failed(source, target, exc) from exc
    _forget_intermediate_types(converted)
    return converted


# Ops whose meaning changed between versions while their inputs and attributes did not.
# Softmax-family before 13 flattens the input to 2-D from `axis` (default 1); from 13 on
# it works along `axis` (default -1). The two agree when axis is the last one.
_SOFTMAX_FAMILY = {"Softmax", "LogSoftmax", "Hardmax"}
# GridSample 20 renamed its modes ("bilinear" -> "linear", "bicubic" -> "cubic").
_CHANGED_MEANING = {"GridSample": 20}


def _relabel_down(model: onnx.ModelProto, source: int, target: int,
                  converter_error: Exception) -> onnx.ModelProto:
    relabelled = onnx.ModelProto()
    relabelled.CopyFrom(model)
    constants = _constants(relabelled.graph)
    misfits = set()
    for node in iter_nodes(relabelled.graph):
        if node.domain not in DEFAULT_DOMAINS:
            continue
        old = defs.get_schema(node.op_type, target, "")
        new = defs.get_schema(node.op_type, source, "")
        if old.since_version == new.since_version:
            continue
        _axes_as_attribute(node, old, constants)
        if not _fits_older_schema(node, old, new, target):
            misfits.add(node.op_type)
    if misfits:
        raise ConversionError(
            f"cannot convert from opset {source} to {target}: onnx's converter failed "
            f"({_first_line(converter_error)}) and these ops changed their inputs or "
            f"attributes in between: {', '.join(sorted(misfits))}",
            hint=f"keep opset {source}, or pick an opset closer to it",
            code="opset-conversion-failed")
    for entry in relabelled.opset_import:
        if entry.domain in DEFAULT_DOMAINS:
            entry.version = target
    _forget_intermediate_types(relabelled)
    try:
        onnx.checker.check_model(relabelled, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise _conversion_failed(source, target, exc) from exc
    return relabelled


def _axes_as_attribute(node: onnx.NodeProto, old: defs.OpSchema,
                       constants: dict[str, np.ndarray]) -> None:
    """Reduce* ops took their axes as an attribute before opset 18 (ReduceSum before 13):
    a constant (or empty) axes input becomes that attribute again."""
    if "axes" not in old.attributes or old.max_input != 1 or len(node.input) < 2:
        return
    name = node.input[1]
    if name and name not in constants:
        return
    axes = [int(a) for a in constants[name].reshape(-1)] if name else []
    noop = next((a for a in node.attribute if a.name == "noop_with_empty_axes"), None)
    if noop is not None and noop.i and not axes:
        return  # reduce nothing: the older op has no way to say it
    if noop is not None:
        node.attribute.remove(noop)
    if axes:
        node.attribute.append(helper.make_attribute("axes", axes))
    del node.input[1:]


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    found = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return found


def _fits_older_schema(node: onnx.NodeProto, old: defs.OpSchema, new: defs.OpSchema,
                       target: int) -> bool:
    """Whether ``node`` means the same under ``old`` as under ``new``. Attributes the node
    leaves unset are written out with the newer default when the older one differs."""
    if not ({a.name for a in node.attribute} <= set(old.attributes)
            and old.min_input <= len(node.input) <= old.max_input
            and old.min_output <= len(node.output) <= old.max_output):
        return False
    if target < _CHANGED_MEANING.get(node.op_type, 0):
        return False
    present = {a.name for a in node.attribute}
    for name, attribute in new.attributes.items():
        if name in present or not attribute.default_value.name:
            continue
        if name in old.attributes and \
                old.attributes[name].default_value != attribute.default_value:
            node.attribute.append(attribute.default_value)
    if node.op_type in _SOFTMAX_FAMILY and target < 13:
        axis = next((a.i for a in node.attribute if a.name == "axis"), None)
        return axis == -1
    return True


def _forget_intermediate_types(model: onnx.ModelProto) -> None:
    """Drop recorded intermediate types: they may belong to the old opset (Dropout's mask
    was float before opset 12, bool after) and shape inference records them anew."""
    del model.graph.value_info[:]


def _conversion_failed(source: int, target: int, exc: Exception) -> ConversionError:
    return ConversionError(
        f"cannot convert from opset {source} to {target}: {_first_line(exc)}",
        hint=f"keep opset {source}, or pick an opset closer to it",
        code="opset-conversion-failed")


def _first_line(exc: Exception) -> str:
    # Drop the C++ source location the converter puts first ("...BaseConverter.h:73:
    # adapter_lookup: Assertion `false` failed: No Adapter From Version $14 for Relu").
    return re.sub(r"^.*?failed: ", "", first_line(exc))[:200]
