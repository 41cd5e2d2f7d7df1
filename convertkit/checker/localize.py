"""Find the first node where a candidate model leaves the budget of a reference model.

Both models run once with every intermediate tensor exposed (see checker/runners.py). The
tensors present on both sides, matched by name, are compared in the topological order of
the reference; the first node with an output outside the budget is the diverging node.
Tensors that exist on one side only (a runtime fused nodes, a converter inserted casts)
are not compared, and the result says how many there were.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

import numpy as np
import onnx

from convertkit.checker.budgets import Budget
from convertkit.checker.metrics import element_errors

if TYPE_CHECKING:
    from convertkit.checker.source_map import SourceLocation

# How many names of uncompared tensors the report lists (the counts are always complete).
SKIPPED_EXAMPLES = 10
# How far back a diverging node takes in the nodes the candidate fused into it.
MAX_FUSED_NODES = 16


@dataclass(frozen=True)
class GraphNode:
    """One node of the reference graph, in topological order."""

    step: int
    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class TensorSource(Protocol):
    """A model that can show every intermediate tensor (checker/runners.py)."""

    label: str

    def nodes(self) -> list[GraphNode]: ...

    def graph_inputs(self) -> set[str]: ...

    def constants(self) -> dict[str, np.ndarray]: ...

    def locate(self, step: int) -> SourceLocation | None: ...

    def run_all(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class TensorError:
    """How one tensor compares; a point of the error-by-depth curve."""

    step: int  # position of the producing node in the reference's topological order
    node: str
    op_type: str
    tensor: str
    max_abs: float | None  # None: infinite (NaN or Inf on one side only)
    max_rel: float | None
    # The worst element's error as a multiple of what the budget allows there: > 1 leaves
    # the budget. None: infinite.
    budget_ratio: float | None
    within_budget: bool

    def to_dict(self) -> dict:
        return {"step": self.step, "node": self.node, "op_type": self.op_type,
                "tensor": self.tensor, "max_abs": self.max_abs, "max_rel": self.max_rel,
                "budget_ratio": self.budget_ratio, "within_budget": self.within_budget}


@dataclass(frozen=True)
class Repro:
    """The smallest subgraph around the diverging node, written to a folder."""

    folder: str  # as the user will find it
    command: str  # one line that reproduces the mismatch (exits 1)
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    reproduced: bool  # the subgraphs, run on the saved inputs, leave the budget too
    note: str = ""

    def to_dict(self) -> dict:
        return {"folder": self.folder, "command": self.command, "inputs": list(self.inputs),
                "outputs": list(self.outputs), "reproduced": self.reproduced,
                "note": self.note}


@dataclass(frozen=True)
class DivergingNode:
    name: str
    op_type: str
    step: int
    after: TensorError  # its worst output
    before: TensorError | None  # its worst compared input; None when all are graph inputs
    inputs: tuple[str, ...]
    # Weights the node reads that differ between the two models: (name, max abs difference).
    differing_constants: tuple[tuple[str, float | None], ...] = ()
    source: SourceLocation | None = None
    # Nodes just before it whose outputs only the reference has (the candidate fused
    # them into this one): (name, op type), in order. The divergence may start there.
    fused_with: tuple[tuple[str, str], ...] = ()

    @property
    def error_before(self) -> float:
        """Max abs error entering the node (0 when it reads graph inputs only)."""
        if self.before is None:
            return 0.0
        return np.inf if self.before.max_abs is None else self.before.max_abs

    def to_dict(self) -> dict:
        return {
            "name": self.name, "op_type": self.op_type, "step": self.step,
            "output": self.after.tensor, "inputs": list(self.inputs),
            "error_before": self.before.to_dict() if self.before else
            {"max_abs": 0.0, "max_rel": 0.0, "budget_ratio": 0.0, "within_budget": True,
             "tensor": None, "note": "reads model inputs and constants only"},
            "error_after": self.after.to_dict(),
            "differing_constants": [{"name": n, "max_abs": v}
                                    for n, v in self.differing_constants],
            "source": self.source.to_dict() if self.source else None,
            "fused_with": [{"name": n, "op_type": t} for n, t in self.fused_with],
        }


@dataclass(frozen=True)
class Localization:
    reference: str  # the model whose intermediates are the reference
    candidate: str
    node: DivergingNode | None  # None: no compared tensor leaves the budget
    node_count: int  # nodes in the reference graph
    curve: tuple[TensorError, ...] = ()
    compared: int = 0
    only_in_reference: int = 0
    only_in_candidate: int = 0
    skipped_examples: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    repro: Repro | None = None

    @property
    def found(self) -> bool:
        return self.node is not None

    def with_repro(self, repro: Repro | None, note: str = "") -> Localization:
        return replace(self, repro=repro, notes=(*self.notes, note) if note else self.notes)

    def summary(self) -> str:
        """One line for the terminal."""
        if self.node is None:
            return (f"no diverging node found: the {self.compared} tensors present in both "
                    "models are within budget")
        node = self.node
        where = node.source.describe() if node.source else ""
        fused = ", ".join(f"{op} '{name}'" for name, op in node.fused_with[-2:])
        if len(node.fused_with) > 2:
            fused = f"{len(node.fused_with) - 2} more, " + fused
        return (f"first diverging node: {node.op_type} '{node.name}' (step {node.step + 1} of "
                f"{self.node_count}), output '{node.after.tensor}'"
                + (f" (fused in the candidate with {fused})" if fused else "") + ": max abs "
                f"{_number(node.error_before)} before, {_number(node.after.max_abs)} after"
                + (f"; {where}" if where else "")
                + "".join(f"; its input '{name}' differs between the models (max abs "
                          f"{_number(diff)})" for name, diff in node.differing_constants[:2]))

    def to_dict(self) -> dict:
        return {
            "reference": self.reference, "candidate": self.candidate,
            "found": self.found, "summary": self.summary(),
            "node": self.node.to_dict() if self.node else None,
            "node_count": self.node_count, "compared": self.compared,
            "only_in_reference": self.only_in_reference,
            "only_in_candidate": self.only_in_candidate,
            "skipped_examples": list(self.skipped_examples),
            "curve": [p.to_dict() for p in self.curve],
            "notes": list(self.notes),
            "repro": self.repro.to_dict() if self.repro else None,
        }


def topological_order(graph: onnx.GraphProto) -> list[int]:
    """Indices of ``graph.node`` in a topological order, stable where the file's order
    already is one (ONNX requires it; some converters append nodes out of order and
    ONNX Runtime accepts that)."""
    producer = {name: index for index, node in enumerate(graph.node)
                for name in node.output if name}
    waiting = [0] * len(graph.node)
    consumers: dict[int, list[int]] = {}
    for index, node in enumerate(graph.node):
        for upstream in {producer[n] for n in node.input if n in producer} - {index}:
            waiting[index] += 1
            consumers.setdefault(upstream, []).append(index)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for consumer in consumers.get(index, []):
            waiting[consumer] -= 1
            if waiting[consumer] == 0:
                heapq.heappush(ready, consumer)
    if len(order) < len(graph.node):  # a cycle: keep the rest in file order
        placed = set(order)
        order.extend(i for i in range(len(graph.node)) if i not in placed)
    return order


def measure(step: int, node: str, op_type: str, tensor: str, actual: np.ndarray,
            expected: np.ndarray, budget: Budget) -> TensorError:
    if expected.size == 0:
        return TensorError(step, node, op_type, tensor, 0.0, 0.0, 0.0, True)
    errors = element_errors(actual, expected, budget)
    ratio = errors.budget_ratio()
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(errors.diff == 0, 0.0,
                       errors.diff / np.maximum(errors.magnitude, np.finfo(np.float32).tiny))
    return TensorError(step, node, op_type, tensor, _finite(errors.diff.max()),
                       _finite(rel.max()), _finite(ratio), not bool(errors.outside.any()))


def locate_divergence(reference: TensorSource, candidate: TensorSource,
                      reference_values: Mapping[str, np.ndarray],
                      candidate_values: Mapping[str, np.ndarray], budget: Budget,
                      candidate_outputs: Mapping[str, np.ndarray] | None = None,
                      ) -> Localization:
    """Compare the tensors both runs produced, in the reference's topological order.

    ``candidate_outputs``: the candidate's outputs from its plain run (nothing exposed);
    when the exposed run computed them differently, the result says so.
    """
    nodes = reference.nodes()
    notes = []
    if candidate_outputs is not None:
        note = _exposure_changed(candidate_outputs, candidate_values)
        if note:
            notes.append(note)
    curve: list[TensorError] = []
    only_reference: list[str] = []
    produced: set[str] = set()
    for node in nodes:
        for tensor in node.outputs:
            produced.add(tensor)
            expected = reference_values.get(tensor)
            actual = candidate_values.get(tensor)
            if not _comparable(expected) or not _comparable(actual):
                if _comparable(expected):
                    only_reference.append(tensor)
                continue
            if actual.shape != expected.shape:
                only_reference.append(tensor)
                notes.append(f"tensor '{tensor}' has shape {list(actual.shape)} in the candidate "
                             f"and {list(expected.shape)} in the reference: not compared")
                continue
            curve.append(measure(node.step, node.name, node.op_type, tensor, actual, expected,
                                 budget))
    graph_inputs = reference.graph_inputs()
    only_candidate = [name for name in candidate_values
                      if name not in produced and name not in graph_inputs]
    if only_reference:
        notes.append(f"{len(only_reference)} tensor(s) exist in the reference only (fused or "
                     "renamed by the candidate's converter or runtime): not compared")
    if only_candidate:
        notes.append(f"{len(only_candidate)} tensor(s) exist in the candidate only (inserted "
                     "casts, fused nodes): not compared")
    first = next((point for point in curve if not point.within_budget), None)
    diverging = None
    if first is not None:
        diverging = _describe_node(nodes[first.step], first, curve, nodes, reference,
                                   candidate, graph_inputs)
    return Localization(
        reference=reference.label, candidate=candidate.label, node=diverging,
        node_count=len(nodes), curve=tuple(curve), compared=len(curve),
        only_in_reference=len(only_reference), only_in_candidate=len(only_candidate),
        skipped_examples=tuple((only_reference + only_candidate)[:SKIPPED_EXAMPLES]),
        notes=tuple(notes),
    )


def _describe_node(node: GraphNode, first: TensorError, curve: Sequence[TensorError],
                   nodes: Sequence[GraphNode], reference: TensorSource,
                   candidate: TensorSource, graph_inputs: set[str]) -> DivergingNode:
    """The node, the error entering and leaving it. When an input was not compared (the
    candidate fused its producer away), the producers join the node, back to tensors
    that were compared: the error "before" is measured there."""
    by_tensor = {point.tensor: point for point in curve}
    producer = {tensor: upstream for upstream in nodes for tensor in upstream.outputs}
    after = max((p for p in curve if p.step == node.step), key=_badness, default=first)
    region, boundary, seen = [node], [], set()
    frontier = [name for name in node.inputs if name]
    while frontier:
        tensor = frontier.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        upstream = producer.get(tensor)
        if tensor in by_tensor:
            boundary.append(by_tensor[tensor])
        elif (upstream is not None and tensor not in graph_inputs and upstream not in region
              and len(region) < MAX_FUSED_NODES):
            region.append(upstream)
            frontier.extend(name for name in upstream.inputs if name)
    before = max(boundary, key=_badness) if boundary else None
    fused = sorted(region[1:], key=lambda n: n.step)
    return DivergingNode(
        name=node.name, op_type=node.op_type, step=node.step, after=after, before=before,
        inputs=tuple(n for n in node.inputs if n),
        differing_constants=_differing_constants(region, reference, candidate),
        source=reference.locate(node.step),
        fused_with=tuple((n.name, n.op_type) for n in fused),
    )


def _differing_constants(region: Sequence[GraphNode], reference: TensorSource,
                         candidate: TensorSource) -> tuple[tuple[str, float | None], ...]:
    wanted = [name for node in region for name in node.inputs]
    ours = {k: v for k, v in reference.constants().items() if k in wanted}
    if not ours:
        return ()
    theirs = candidate.constants()
    differing = []
    for name in dict.fromkeys(wanted):
        if name not in ours or name not in theirs:
            continue
        a, b = theirs[name], ours[name]
        if a.shape != b.shape:
            differing.append((name, None))
        elif not np.array_equal(a, b):
            with np.errstate(invalid="ignore", over="ignore"):
                diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            differing.append((name, _finite(np.nanmax(diff)) if diff.size else 0.0))
    return tuple(differing)


def _exposure_changed(plain: Mapping[str, np.ndarray],
                      exposed: Mapping[str, np.ndarray]) -> str:
    worst = 0.0
    changed = []
    for name, value in plain.items():
        other = exposed.get(name)
        if other is None or other.shape != value.shape:
            continue
        if not np.array_equal(value, other, equal_nan=_is_float(value)):
            changed.append(name)
            with np.errstate(invalid="ignore", over="ignore"):
                diff = np.abs(value.astype(np.float64) - other.astype(np.float64))
            worst = max(worst, float(np.nanmax(diff)) if diff.size else 0.0)
    if not changed:
        return ""
    return (f"exposing every tensor changed the candidate's output(s) {', '.join(changed)} "
            f"(max abs {worst:.2e}): the runtime computes differently when intermediates are "
            "kept (it fuses, or casts, around them), so the localisation describes the "
            "exposed run")


def _comparable(value: object) -> bool:
    return isinstance(value, np.ndarray) and (value.dtype.kind in "fiub")


def _is_float(value: np.ndarray) -> bool:
    return value.dtype.kind == "f"


def _badness(point: TensorError) -> float:
    return np.inf if point.budget_ratio is None else point.budget_ratio


def _finite(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _number(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "inf"
    return "0" if value == 0 else f"{value:.2e}"
