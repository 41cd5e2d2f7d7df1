"""Frozen GraphDef ``.pb`` files: the outputs named with ``--output``, pruned back to the
Placeholders they depend on."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from convertkit.adapters.tensorflow.export import tf2onnx_label
from convertkit.adapters.tensorflow.inputs import DeclaredInput
from convertkit.adapters.tensorflow.reasons import error_reason
from convertkit.adapters.tensorflow.tracing import TfModel
from convertkit.errors import UsageError

# Graph nodes that are never a model's output.
_NOT_OUTPUTS = {"Const", "NoOp", "Placeholder", "PlaceholderWithDefault", "Assert",
                "SaveV2", "RestoreV2", "Assign", "AssignVariableOp", "VarHandleOp"}


def load_graph_def(path: Path, outputs: Sequence[str], tf) -> TfModel:
    from google.protobuf.message import DecodeError

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise UsageError(f"{path} is not a frozen GraphDef: {error_reason(exc)}",
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
                         f"{error_reason(exc)}", hint="pass a frozen GraphDef (variables folded "
                         "into constants)", code="bad-graph-def") from exc
    output_names = [f.removesuffix(":0") for f in fetches]
    names = [d.name for d in declared]

    def call(feeds: dict[str, Any]):
        return list(pruned(*[feeds[n] for n in names]))

    return TfModel(call=call, declared=declared, what=f"frozen graph {path.name}",
                   exporter=f"{tf2onnx_label()} (frozen GraphDef)",
                   output_names=output_names)


def graph_sinks(nodes: Sequence[tuple[str, str, Sequence[str]]], limit: int = 8) -> list[str]:
    """Likely outputs of a GraphDef given as (name, op, inputs): nodes nothing consumes (no
    TensorFlow import)."""
    consumed = {_node_name(name) for _, _, inputs in nodes for name in inputs}
    return [name for name, op, _ in nodes
            if name not in consumed and op not in _NOT_OUTPUTS][:limit]


def _ancestors(nodes: Mapping[str, Any], starts: list[str]) -> list[str]:
    """Names of the nodes ``starts`` depend on (themselves included), in graph order."""
    seen: set[str] = set()
    stack = list(starts)
    while stack:
        name = stack.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        stack.extend(_node_name(i) for i in nodes[name].input)
    return [name for name in nodes if name in seen]


def _node_name(input_name: str) -> str:
    """The node a GraphDef input refers to: ``^name`` (a control input) and ``name:1``
    (an output port) both name ``name``."""
    return re.sub(r":\d+$", "", input_name.lstrip("^"))
