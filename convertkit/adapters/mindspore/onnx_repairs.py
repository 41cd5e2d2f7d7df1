"""Repairs of the ONNX model MindSpore's own exporter (``mindspore.onnx.export``, 2.10)
writes, each named for the case it fixes (``repair_onnx``): a ``StridedSlice`` that takes
index -1 of an axis (``y[:, -1, :]`` after an LSTM) is written as a Slice with ends 0, an
empty slice that the following Squeeze cannot remove, so onnx.checker and ONNX Runtime
reject the model; stacks written as sequences; and the Erf markers that the rewrites
(rewrites.py) wrote become Erf again. Also ``rename_io``. Framework-free: onnx and numpy.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

# Erf has an ONNX op but no mapping in MindSpore's exporter: it is exported as a multiply
# by this constant (rewrites.py), and the multiply turned back into Erf here.
ERF_MARKER = np.float32(-0.000123456789)
_INT64_MAX = np.iinfo(np.int64).max


def repair_onnx(model: onnx.ModelProto, *, rewritten: bool) -> list[str]:
    """Repair, in place, what MindSpore's exporter writes wrongly, and with ``rewritten``
    (exported under export_rewrites) restore what the rewrites stood in for. Returns the
    repairs made, in words (empty when the model needed none)."""
    repairs = []
    restored = _restore_erf(model) if rewritten else 0
    if restored:
        repairs.append(f"{restored} Erf op(s) restored from convertkit's export markers")
    stacks = _stacks_as_concat(model)
    if stacks:
        repairs.append(
            f"{stacks} stack(s) written as SequenceConstruct + ConcatFromSequence (ops.stack) "
            "rewritten as Unsqueeze + Concat: onnxslim cannot constant-fold a sequence")
    fixed = _repair_last_index_slices(model)
    if fixed:
        repairs.append(
            f"{fixed} Slice(s) taking index -1 (StridedSlice, e.g. y[:, -1, :]) were written "
            "with ends 0, an empty slice its Squeeze rejects: ends set to the end of the axis")
    return repairs


def _stacks_as_concat(model: onnx.ModelProto) -> int:
    """MindSpore writes ops.stack as SequenceConstruct feeding ConcatFromSequence. That is
    valid ONNX, but when the stacked tensors are constants (XCiT's positional encoding)
    onnxslim's constant folding gets a list back for the sequence and fails. Each such pair
    whose sequence feeds only ConcatFromSequence becomes Unsqueeze (with new_axis) + Concat,
    the same tensor."""
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 11)
    producers = {n.output[0]: n for n in graph.node if n.op_type == "SequenceConstruct"}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    rewritten = 0
    for name, construct in producers.items():
        users = consumers.get(name, [])
        if name in outputs or not users or any(u.op_type != "ConcatFromSequence"
                                               for u in users):
            continue
        for concat in users:
            attributes = {a.name: onnx.helper.get_attribute_value(a) for a in concat.attribute}
            axis = int(attributes["axis"])
            parts = list(construct.input)
            new_nodes = []
            if int(attributes.get("new_axis", 0)):
                unsqueezed = []
                for index, part in enumerate(parts):
                    out = f"{concat.output[0]}__unsqueeze_{index}"
                    if opset >= 13:
                        axes = f"{concat.output[0]}__axes"
                        if index == 0:
                            graph.initializer.append(numpy_helper.from_array(
                                np.array([axis], np.int64), axes))
                        node = onnx.helper.make_node("Unsqueeze", [part, axes], [out],
                                                     name=out)
                    else:
                        node = onnx.helper.make_node("Unsqueeze", [part], [out], name=out,
                                                     axes=[axis])
                    new_nodes.append(node)
                    unsqueezed.append(out)
                parts = unsqueezed
            new_nodes.append(onnx.helper.make_node(
                "Concat", parts, list(concat.output), name=concat.name or concat.output[0],
                axis=axis))
            position = list(graph.node).index(concat)
            graph.node.remove(concat)
            for offset, node in enumerate(new_nodes):
                graph.node.insert(position + offset, node)
            rewritten += 1
        graph.node.remove(construct)
    return rewritten


def _repair_last_index_slices(model: onnx.ModelProto) -> int:
    """MindSpore lowers an integer index of a StridedSlice to Slice(starts=i, ends=i+1)
    followed by Squeeze on that axis; for i = -1 that is ends = 0, an empty slice. Only
    Slices feeding a Squeeze of the same axes (an index, not a range) are touched."""
    graph = model.graph
    constants = _constant_arrays(graph)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    fixed = 0
    for node in graph.node:
        if node.op_type != "Slice" or len(node.input) < 4:
            continue
        starts, ends, axes = (constants.get(n) for n in node.input[1:4])
        steps = constants.get(node.input[4]) if len(node.input) > 4 and node.input[4] else None
        if starts is None or ends is None or axes is None or starts.shape != ends.shape:
            continue
        squeezed = _squeezed_axes(consumers.get(node.output[0], []), constants)
        if squeezed is None or set(axes.tolist()) - squeezed:
            continue
        bad = (starts == -1) & (ends == 0)
        if steps is not None:
            bad &= steps > 0
        if not bad.any():
            continue
        repaired = np.where(bad, _INT64_MAX, ends).astype(ends.dtype)
        name = f"{node.name or node.output[0]}__ends_repaired"
        graph.initializer.append(numpy_helper.from_array(repaired, name))
        node.input[2] = name
        fixed += 1
    return fixed


def _restore_erf(model: onnx.ModelProto) -> int:
    """Turn each multiply by ERF_MARKER (written for Erf by export_rewrites) into Erf.
    MindSpore writes the scalar as a Constant, usually through a Cast."""
    graph = model.graph
    scalars: dict[str, float] = {}
    for tensor in graph.initializer:
        if int(np.prod(tensor.dims)) == 1:
            scalars[tensor.name] = float(numpy_helper.to_array(tensor).ravel()[0])
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensor = node.attribute[0].t
            if int(np.prod(tensor.dims)) == 1:
                scalars[node.output[0]] = float(numpy_helper.to_array(tensor).ravel()[0])
        elif node.op_type == "Cast" and node.input and node.input[0] in scalars:
            scalars[node.output[0]] = scalars[node.input[0]]
    markers = {name for name, value in scalars.items() if np.float32(value) == ERF_MARKER}
    if not markers:
        return 0
    restored = 0
    for node in graph.node:
        if node.op_type != "Mul" or not markers & set(node.input):
            continue
        others = [name for name in node.input if name not in markers]
        if len(others) != 1:
            continue
        node.op_type = "Erf"
        del node.input[:]
        node.input.append(others[0])
        restored += 1
    used = {name for node in graph.node for name in node.input}
    for node in [n for n in graph.node if n.op_type == "Cast" and n.output[0] in markers]:
        if node.output[0] not in used:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] in markers]:
        if node.output[0] not in used:
            graph.node.remove(node)
    if markers & {name for node in graph.node for name in node.input}:
        from convertkit.errors import ConversionError

        raise ConversionError(
            "an Erf exported through convertkit's marker could not be restored",
            hint="report the model; MindSpore's output is in logs/export.log",
            code="export-failed")
    return restored


def _squeezed_axes(nodes: list[onnx.NodeProto],
                   constants: dict[str, np.ndarray]) -> set[int] | None:
    """The axes the Squeeze consuming a Slice's output removes (None unless it is the one
    consumer and a Squeeze with known axes)."""
    if len(nodes) != 1 or nodes[0].op_type != "Squeeze":
        return None
    squeeze = nodes[0]
    for attribute in squeeze.attribute:
        if attribute.name == "axes":
            return set(attribute.ints)
    if len(squeeze.input) > 1 and squeeze.input[1] in constants:
        return set(constants[squeeze.input[1]].ravel().tolist())
    return None


def _constant_arrays(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer
              if t.data_type == onnx.TensorProto.INT64}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensor = node.attribute[0].t
            if tensor.data_type == onnx.TensorProto.INT64:
                arrays[node.output[0]] = numpy_helper.to_array(tensor)
    return arrays


def rename_io(model: onnx.ModelProto, input_names: list[str],
              output_names: list[str]) -> None:
    """Name the graph's inputs and outputs (in order) after the source's, in place.
    MindSpore names them after its graph nodes ("18-Default/fc-Dense/..."), which the
    check's feeds and references do not know."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    mapping = {}
    for value, name in zip(inputs, input_names, strict=False):
        if value.name != name:
            mapping[value.name] = name
            value.name = name
    _rename_uses(graph, mapping)
    taken = {i.name for i in graph.input} | initializers
    renamed: dict[str, str] = {}
    for value, name in zip(graph.output, output_names, strict=True):
        old = value.name
        if old == name:
            taken.add(name)
            continue
        if old in renamed:  # the same tensor returned twice
            graph.node.append(onnx.helper.make_node("Identity", [renamed[old]], [name],
                                                    name=f"{name}__output"))
        elif old in taken or not _rename_producer(graph, old, name):
            graph.node.append(onnx.helper.make_node("Identity", [old], [name],
                                                    name=f"{name}__output"))
        else:
            _rename_uses(graph, {old: name})
            renamed[old] = name
        value.name = name
        taken.add(name)


def _rename_producer(graph: onnx.GraphProto, old: str, new: str) -> bool:
    for node in graph.node:
        for index, name in enumerate(node.output):
            if name == old:
                node.output[index] = new
                return True
    return False


def _rename_uses(graph: onnx.GraphProto, mapping: dict[str, str]) -> None:
    if not mapping:
        return
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in mapping:
                node.input[index] = mapping[name]
    for info in graph.value_info:
        if info.name in mapping:
            info.name = mapping[info.name]
