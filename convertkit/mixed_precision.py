"""Mixed precision to a budget: which nodes of an int8 build to keep in fp32, and how few.

Backend-neutral. Two parts, both on calibration samples only (never the samples the
verdict grades):

- Sensitivity (``rank_nodes``): the model is quantised once as an ONNX QDQ proxy
  (onnxruntime.quantization, the cpu:ort quantiser), and the proxy and the fp32 model run
  side by side with every intermediate tensor exposed. Each quantised node is scored by
  the signal-to-quantisation-noise ratio (SQNR, dB) it loses: the SQNR of its output
  against fp32, below the worst SQNR of the activations it reads *before* they are
  quantised for it. The loss thus includes the quantisation of its own inputs, which is
  where an activation outlier does its damage (one huge channel sets the int8 scale and
  the others round to zero; the whole-tensor SQNR of that tensor stays high, the loss
  shows at the node that reads it).
- Search (``search``): keep the most sensitive nodes, doubling how many (1, 2, 4...)
  until a build meets its budget, then bisect between the last that failed and the first
  that passed. Keeping a node keeps its activation inputs in fp32 too, and a quantiser
  quantises a tensor wherever its producer is quantised, so keeping a node also keeps the
  producers of its activation inputs (through Relu/Clip, which quantisers fuse into their
  producer): ``keep_closure``. The search stops at ``MAX_KEPT_SHARE`` of the quantisable
  nodes; beyond that it reports failure rather than a model that is mostly fp32.

The caller builds and judges each candidate with its own backend (build_steps.py), so the
same ranking and search serve every backend that can keep named nodes out of int8.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

log = logging.getLogger(__name__)

MAX_KEPT_SHARE = 0.5  # the search keeps at most this share of the quantisable nodes in fp32
SENSITIVITY_SAMPLES = 32  # calibration samples the proxy and fp32 run on, exposed
SQNR_CEILING_DB = 100.0  # an exact tensor (fp32 == proxy) counts as this
# Activations quantisers fuse into the node before them (ORT removes them from QDQ graphs):
# keeping a node keeps these and the node that feeds them.
FUSED_ACTIVATIONS = frozenset({"Relu", "Clip"})
OVERRIDE_FILE = "mixed_precision.json"


@dataclass(frozen=True)
class Sensitivity:
    """One quantised node of the proxy, scored."""

    name: str
    op: str
    loss_db: float  # SQNR lost across the node (its inputs before quantisation -> output)
    sqnr_db: float  # its output's SQNR against fp32


@dataclass(frozen=True)
class SearchOutcome:
    kept: tuple[str, ...]  # nodes kept in fp32 (empty: none met the budget within the cap)
    passed: bool
    trials: tuple[tuple[int, int, bool], ...]  # (top-k ranked, nodes kept, met the budget)
    cap: int  # the most nodes the search could keep


def quantisable_op_types() -> frozenset[str]:
    """The op types onnxruntime.quantization quantises (QDQ and QOperator registries)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return frozenset(QDQRegistry) | frozenset(QLinearOpsRegistry)


def quantisable_nodes(model: onnx.ModelProto) -> list[str]:
    """The names of ``model``'s nodes whose op type the quantiser quantises, in order."""
    types = quantisable_op_types()
    return [node.name for node in model.graph.node if node.op_type in types and node.name]


def rank_nodes(fp32_path: Path, proxy_path: Path,
               samples: Sequence[Mapping[str, np.ndarray]]) -> list[Sensitivity]:
    """The proxy's quantised nodes, most sensitive first (see the module's docstring).
    ``proxy_path`` is ``fp32_path`` quantised to QDQ, node names kept."""
    fp32 = onnx.load(str(fp32_path))
    proxy = onnx.load(str(proxy_path))
    producers = {out: node for node in proxy.graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in proxy.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    # Each fp32 tensor against the proxy's value of it as its readers see it: dequantised
    # where the proxy quantised it (a quantiser may drop a Relu into its producer's
    # QuantizeLinear, so the value before it is not comparable).
    in_proxy = {out for node in proxy.graph.node for out in node.output} | {
        o.name for o in proxy.graph.output}
    pairs = {name: seen for node in fp32.graph.node for name in node.output if name
             for seen in [_after_quantisation(name, consumers)] if seen in in_proxy}
    sqnr = _paired_sqnr(fp32, proxy, pairs, samples[:SENSITIVITY_SAMPLES])
    names = set(quantisable_nodes(fp32))
    ranked = []
    for node in proxy.graph.node:
        if node.name not in names:
            continue
        sources = [_before_quantisation(name, producers) for name in node.input]
        inputs = [sqnr[name] for name, quantised_input in sources
                  if quantised_input and name in sqnr]
        if not inputs:  # reads no quantised activation: nothing quantised it here
            continue
        outputs = [sqnr[name] for name in (o if o in pairs else
                                           _after_quantisation(o, consumers)
                                           for o in node.output) if name in sqnr]
        if not outputs:
            continue
        worst_in, worst_out = min(inputs), min(outputs)
        ranked.append(Sensitivity(node.name, node.op_type, max(0.0, worst_in - worst_out),
                                  worst_out))
    ranked.sort(key=lambda s: (-s.loss_db, s.sqnr_db))
    return ranked


def _before_quantisation(name: str, producers: Mapping[str, onnx.NodeProto],
                         ) -> tuple[str, bool]:
    """The tensor ``name`` was dequantised from (DequantizeLinear <- QuantizeLinear <- it)
    and True; else ``name`` and False (a weight's DequantizeLinear reads an initializer)."""
    dq = producers.get(name)
    if dq is None or dq.op_type != "DequantizeLinear":
        return name, False
    q = producers.get(dq.input[0])
    if q is None or q.op_type != "QuantizeLinear":
        return name, False
    return q.input[0], True


def _after_quantisation(name: str, consumers: Mapping[str, list[onnx.NodeProto]]) -> str:
    """A node output the quantiser renamed (a graph output: ``X_QuantizeLinear_Input``)
    compares under the name its QuantizeLinear -> DequantizeLinear pair restores."""
    for q in consumers.get(name, []):
        if q.op_type == "QuantizeLinear":
            for dq in consumers.get(q.output[0], []):
                if dq.op_type == "DequantizeLinear":
                    return dq.output[0]
    return name


def _paired_sqnr(fp32: onnx.ModelProto, proxy: onnx.ModelProto, pairs: Mapping[str, str],
                 samples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """{fp32 tensor: SQNR in dB of the proxy's tensor ``pairs[name]`` against it} over
    every sample, for the float tensors; the two models run side by side, one sample at
    a time, so only the running sums are kept (every intermediate of every sample of a
    ResNet-50 would take gigabytes)."""
    from convertkit.ir.io import save_model
    from convertkit.platforms.ort_runner import OrtRunner

    sums: dict[str, list[float]] = {}  # [signal, noise]; noise NaN: shapes differ
    with tempfile.TemporaryDirectory(prefix="convertkit-sensitivity-") as scratch:
        reference_path, proxy_path = Path(scratch, "fp32.onnx"), Path(scratch, "proxy.onnx")
        save_model(_exposing(fp32, pairs), reference_path)
        save_model(_exposing(proxy, set(pairs.values())), proxy_path)
        with OrtRunner(reference_path) as reference, OrtRunner(proxy_path) as quantised:
            for sample in samples:
                expected = reference.run(sample)
                actual = quantised.run(sample)
                for name, seen in pairs.items():
                    ref, got = expected.get(name), actual.get(seen)
                    if not (isinstance(ref, np.ndarray) and ref.dtype.kind == "f"
                            and isinstance(got, np.ndarray) and got.dtype.kind == "f"):
                        continue
                    total = sums.setdefault(name, [0.0, 0.0])
                    if ref.shape != got.shape:
                        total[1] = math.nan
                        continue
                    ref64 = ref.astype(np.float64)
                    total[0] += float(np.dot(ref64.ravel(), ref64.ravel()))
                    difference = ref64 - got
                    total[1] += float(np.dot(difference.ravel(), difference.ravel()))
                del expected, actual
    return {name: _sqnr_of(signal, noise) for name, (signal, noise) in sums.items()}


def _exposing(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs also list the node outputs ``names``
    (untyped: ONNX Runtime takes the type it infers)."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    produced = {out for node in exposed.graph.node for out in node.output}
    for name in names:
        if name in produced and name not in present:
            exposed.graph.output.append(onnx.ValueInfoProto(name=name))
            present.add(name)
    return exposed


def _sqnr_of(signal: float, noise: float) -> float:
    """10 log10(signal power / noise power), in dB, within the ceiling; NaN noise (the
    shapes differed: nothing to compare) counts as exact."""
    if math.isnan(noise):
        return SQNR_CEILING_DB
    if not math.isfinite(noise):
        return -SQNR_CEILING_DB
    if noise == 0.0 or signal == 0.0:
        return SQNR_CEILING_DB if noise == 0.0 else -SQNR_CEILING_DB
    return max(-SQNR_CEILING_DB, min(SQNR_CEILING_DB, 10.0 * math.log10(signal / noise)))


def keep_closure(model: onnx.ModelProto, name: str) -> list[str]:
    """``name`` and what must stay in fp32 with it: the quantisable producers of its
    activation inputs, through the activations quantisers fuse (Relu, Clip)."""
    types = quantisable_op_types()
    initializers = {t.name for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    by_name = {node.name: node for node in model.graph.node}
    kept = [name]
    pending = [i for i in by_name[name].input if i and i not in initializers]
    while pending:
        producer = producers.get(pending.pop())
        if producer is None or producer.op_type not in types or producer.name in kept:
            continue
        kept.append(producer.name)
        if producer.op_type in FUSED_ACTIVATIONS:
            pending.extend(i for i in producer.input[:1] if i and i not in initializers)
    return kept


def search(ranking: Sequence[str], closure: Callable[[str], Sequence[str]], cap: int,
           meets_budget: Callable[[tuple[str, ...]], bool]) -> SearchOutcome:
    """The fewest of ``ranking``'s top nodes (with their closures) to keep in fp32 for
    ``meets_budget`` to hold, keeping at most ``cap`` nodes: doubling, then bisection.
    ``meets_budget`` builds and judges the int8 model with the given nodes kept."""
    trials: dict[int, bool] = {}

    def kept(k: int) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for top in ranking[:k] for n in closure(top)))

    def trial(k: int) -> bool:
        if k not in trials:
            trials[k] = meets_budget(kept(k))
            log.info("mixed precision: top %d ranked, %d kept: %s", k, len(kept(k)),
                     "meets the budget" if trials[k] else "misses it")
        return trials[k]

    within = [k for k in range(1, len(ranking) + 1) if len(kept(k)) <= cap]
    failed, passed = 0, None
    k = 1
    while within and k <= within[-1]:
        if trial(k):
            passed = k
            break
        failed, k = k, k * 2
    if passed is None and within and within[-1] > failed and trial(within[-1]):
        passed = within[-1]
    if passed is not None:
        while passed - failed > 1:
            middle = (failed + passed) // 2
            if trial(middle):
                passed = middle
            else:
                failed = middle
    history = tuple((k, len(kept(k)), ok) for k, ok in sorted(trials.items()))
    if passed is None:
        return SearchOutcome((), False, history, cap)
    return SearchOutcome(kept(passed), True, history, cap)


def node_macs(model: onnx.ModelProto) -> dict[str, int]:
    """Multiply-accumulates per node for Conv, ConvTranspose, Gemm and MatMul, from the
    shapes ONNX shape inference finds (0 where a shape is unknown); other nodes are not
    listed (their arithmetic is small beside these)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    for tensor in model.graph.initializer:
        shapes[tensor.name] = list(tensor.dims)
    macs = {}
    for node in model.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if node.op_type in ("Conv", "ConvTranspose"):
            weight = shapes.get(node.input[1])
            if out and weight:
                # Conv: every output element sums C_in/groups * kernel products.
                per = int(np.prod(weight[1:])) if node.op_type == "Conv" else (
                    int(np.prod(weight[2:])) * weight[0] // max(out[1], 1))
                macs[node.name] = int(np.prod(out)) * per
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0])
            if out and a:
                trans_a = any(at.name == "transA" and at.i for at in node.attribute)
                depth = a[-2] if trans_a and len(a) >= 2 else a[-1]
                macs[node.name] = int(np.prod(out)) * depth
    return macs
