"""GPU targets.

`gpu:fp16` (the family default): an fp16 ONNX model with fp32 inputs and outputs, for
ONNX Runtime's CUDA/TensorRT providers or any fp16-capable runtime. Built with automatic
mixed precision: when the fp16 model breaks its budget, the nodes responsible (values
beyond the fp16 range, overflow to Inf/NaN, or where the error jumps) are kept in fp32
and the search repeats until it passes or nothing is left to keep.

`gpu:tensorrt[@SM]`: a TensorRT engine where a builder is installed (tensorrt with a GPU;
tensorrt_rtx also ahead of time for a compute capability, without a GPU), else the
prepared ONNX model with the `trtexec` command that builds it (status `prepared`). Its
int8 is a QDQ model (explicit quantisation) built strongly typed; mixed precision leaves
the kept layers without Q/DQ, so they run at fp32. Without a GPU the engine does not run
here: whether int8 needs mixed precision, and the search's trials, are judged on ONNX
Runtime running the QDQ model (Platform.proxy_runner), and the engine stays `built`.

Checked here on the CPU only: ONNX Runtime's CPU provider has fp16 kernels for almost no
math ops and computes them in fp32 behind inserted casts, which would hide overflow. The
fp16 check therefore runs an emulation of the artifact: every fp16 tensor rounded to fp16
(overflowing to Inf as on a GPU), the arithmetic inside each op in fp32.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from convertkit.checker.budgets import Budget, budget_for
from convertkit.checker.localize import topological_order
from convertkit.checker.metrics import compare_outputs, element_errors
from convertkit.errors import ConversionError
from convertkit.ir.expose import with_every_output
from convertkit.ir.info import OnnxInfo
from convertkit.ir.io import load_model, save_model
from convertkit.ir.preflight import OrtKernelOps, Requirements
from convertkit.ir.runtime import open_session, run_session, session_options
from convertkit.platforms import (
    Artifact,
    BuildOptions,
    Platform,
    Problem,
    Runner,
    build_precision,
    is_installed,
)
from convertkit.platforms.calibration import calibration_samples
from convertkit.platforms.ort_runner import OrtRunner
from convertkit.spec import Family, Precision, TargetSpec

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
MAX_FALLBACK_ROUNDS = 32
KEPT_NODES_FILE = "fp32_nodes.json"
CPU_CHECK_NOTE = ("checked on CPU (onnxruntime), not on a GPU: fp16 emulated by rounding "
                  "every fp16 tensor to fp16 (Inf beyond 65504), arithmetic inside each op "
                  "in fp32")
_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16}
_SHOWN_KEPT_NODES = 40


@dataclass(frozen=True)
class KeptNode:
    """A node the search kept in fp32, and why."""

    name: str
    op_type: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "op_type": self.op_type, "reason": self.reason}


@dataclass(frozen=True)
class Fp16Result:
    """The outcome of the fp16 search."""

    model: onnx.ModelProto
    kept: tuple[KeptNode, ...]
    rounds: int
    passed: bool | None  # None: no sample inputs, nothing was checked
    stop_reason: str = ""

    def notes(self) -> list[str]:
        notes = ["fp16 weights and activations, fp32 inputs and outputs (keep_io_types)"]
        if self.kept:
            shown = ", ".join(f"{k.name} ({k.op_type}: {k.reason})"
                              for k in self.kept[:_SHOWN_KEPT_NODES])
            more = len(self.kept) - _SHOWN_KEPT_NODES
            notes.append(f"kept in fp32 ({len(self.kept)} node(s)): {shown}"
                         + (f" and {more} more, all in {KEPT_NODES_FILE}" if more > 0 else ""))
        else:
            notes.append("kept in fp32: none")
        if self.passed is True:
            notes.append(f"automatic mixed precision: within the fp16 budget after "
                         f"{self.rounds} round(s)")
        elif self.passed is False:
            notes.append(f"automatic mixed precision stopped after {self.rounds} round(s): "
                         f"{self.stop_reason}")
        return notes


def convert_to_fp16(model: onnx.ModelProto, samples: list[dict[str, np.ndarray]],
                    budget: Budget, scratch: Path,
                    max_rounds: int = MAX_FALLBACK_ROUNDS) -> Fp16Result:
    """Convert ``model`` (fp32) to fp16, keeping in fp32 the nodes that break ``budget``
    on ``samples`` (compared with the fp32 model itself), round after round. With
    ``max_rounds=0`` the plain conversion is returned unchecked."""
    model = _named(model)
    nodes = {node.name: node for node in model.graph.node}
    kept: dict[str, KeptNode] = {}
    if not samples or max_rounds == 0:
        return Fp16Result(_to_fp16(model, set()), (), 0, None)
    feeds = samples[0]
    reference = run_with_intermediates(model, feeds, scratch / "fp32.onnx")
    outputs = [o.name for o in model.graph.output]
    for node in model.graph.node:  # values an fp16 tensor cannot hold
        peak = _peak(reference, [*node.input, *node.output])
        if peak > FP16_MAX:
            kept[node.name] = KeptNode(node.name, node.op_type,
                                       f"values beyond the fp16 range (max |x| {peak:.3g})")
    rounds = 0
    stop = ""
    floats = {n for n, node in nodes.items() if _has_float_output(node, reference)}
    while True:
        rounds += 1
        fp16 = _to_fp16(model, set(kept))
        emulated = emulate_fp16(fp16)
        got = run_with_intermediates(emulated, feeds, scratch / "fp16.onnx")
        metrics = compare_outputs({k: got[k] for k in outputs if k in got},
                                  {k: reference[k] for k in outputs}, budget)
        if all(m.within_budget for m in metrics):
            return Fp16Result(fp16, tuple(kept.values()), rounds, True)
        if rounds >= max_rounds:
            stop = f"still over budget after {max_rounds} rounds"
            break
        if floats <= set(kept):
            stop = "every float node is already kept in fp32"
            break
        culprits = _culprits(model, reference, got, budget, set(kept))
        if not culprits:
            stop = "no single node stands out (the error builds up gradually)"
            break
        kept.update(culprits)
    return Fp16Result(fp16, tuple(kept.values()), rounds, False, stop)


def run_with_intermediates(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                           path: Path) -> dict[str, np.ndarray]:
    """Run ``model`` in ONNX Runtime (CPU, no graph optimisation) with every node output
    exposed; the values by tensor name."""
    save_model(with_every_output(model), path)
    session = open_session(path, session_options("ORT_DISABLE_ALL"))
    wanted = {i.name for i in session.get_inputs()}
    values = run_session(session, {k: v for k, v in feeds.items() if k in wanted})
    return {k: v for k, v in values.items() if isinstance(v, np.ndarray)}


def emulate_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """An fp32 model that computes what ``model`` (fp16) computes on a GPU, as far as
    storage goes: every fp16 tensor becomes fp32 and is rounded through fp16 right after
    the node that makes it (so values beyond 65504 become Inf). ONNX Runtime keeps these
    explicit casts, unlike the ones it inserts around its fp32-only CPU kernels."""
    typed = _elem_types(model)
    emulated = onnx.ModelProto()
    emulated.CopyFrom(model)
    graph = emulated.graph
    for tensor in graph.initializer:
        if tensor.data_type == TensorProto.FLOAT16:
            tensor.CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(tensor).astype(np.float32), tensor.name))
    for value in [*graph.input, *graph.output]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT16:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    del graph.value_info[:]
    nodes = []
    for node in graph.node:
        _widen_attributes(node)
        nodes.append(node)
        for index, name in enumerate(node.output):
            if not name or typed.get(name) != TensorProto.FLOAT16:
                continue
            raw, half = f"{name}__fp32", f"{name}__fp16"
            node.output[index] = raw
            nodes.append(helper.make_node("Cast", [raw], [half], to=TensorProto.FLOAT16,
                                          name=f"{node.name}/round_fp16_{index}"))
            nodes.append(helper.make_node("Cast", [half], [name], to=TensorProto.FLOAT,
                                          name=f"{node.name}/widen_{index}"))
    del graph.node[:]
    graph.node.extend(nodes)
    return emulated


class Fp16GpuPlatform(Platform):
    name: ClassVar[str] = "fp16"
    family: ClassVar[Family] = Family.GPU
    is_family_default: ClassVar[bool] = True
    description: ClassVar[str] = ("fp16 ONNX model with fp32 inputs/outputs, automatic mixed "
                                  "precision (checked on CPU by fp16 emulation)")
    precisions: ClassVar[tuple[Precision, ...]] = (Precision.FP16,)
    # The model runs in ONNX Runtime (CUDA, TensorRT providers) or any ONNX runtime; the
    # CPU provider's registry is the one that can be read here and is what the check uses.
    requirements: ClassVar[Requirements] = Requirements(
        ops=OrtKernelOps("CPUExecutionProvider"), min_opset=7,
        source="ONNX Runtime's CPU kernel registry (the check runs there); GPU providers "
               "run a superset of these ops for fp16")

    @classmethod
    def is_available(cls) -> bool:
        return is_installed("onnxruntime")

    def preflight(self, model: OnnxInfo, target: TargetSpec) -> list[Problem]:
        return []

    def build(self, onnx_path: Path, target: TargetSpec, out_dir: Path,
              options: BuildOptions) -> Artifact:
        build_precision(self, target, options)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "model.onnx"
        result = build_fp16(onnx_path, out_dir, options)
        files = save_model(result.model, path)
        files.append(_write_kept_nodes(out_dir, result))
        return Artifact(str(target), path, Precision.FP16, tuple(files),
                        notes=(*result.notes(), CPU_CHECK_NOTE), calibrated=True)

    def open(self, artifact: Artifact) -> EmulatedFp16Runner:
        return EmulatedFp16Runner(artifact.path)


class EmulatedFp16Runner(Runner):
    """Runs an fp16 ONNX model on the CPU through its fp16 emulation (emulate_fp16)."""

    def __init__(self, model_path: Path) -> None:
        self.model_path = model_path
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._runner: OrtRunner | None = None

    def __enter__(self) -> EmulatedFp16Runner:
        self._scratch = tempfile.TemporaryDirectory(prefix="convertkit-fp16-")
        emulated = Path(self._scratch.name, "emulated.onnx")
        save_model(emulate_fp16(load_model(self.model_path)), emulated)
        self._runner = OrtRunner(emulated, "ORT_DISABLE_ALL").__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            self._runner.__exit__(*exc_info)
        if self._scratch is not None:
            self._scratch.cleanup()
        self._runner = self._scratch = None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._runner is not None, "use the runner inside a with block"
        return self._runner.run(feeds)


def build_fp16(onnx_path: Path, out_dir: Path, options: BuildOptions) -> Fp16Result:
    """The fp16 search on the model at ``onnx_path`` with the build's sample inputs, in a
    scratch folder inside ``out_dir``."""
    model = load_model(onnx_path)
    samples = calibration_samples(options, onnx_path, "the fp16 search")
    with tempfile.TemporaryDirectory(prefix=".fp16-", dir=out_dir) as scratch:
        try:
            return convert_to_fp16(model, samples, budget_for(Precision.FP16), Path(scratch))
        except ConversionError:
            raise
        except Exception as exc:  # the converter's own failures
            raise ConversionError(f"fp16 conversion failed: {type(exc).__name__}: {exc}",
                                  hint="report the model; build gpu:tensorrt at fp32 meanwhile",
                                  code="fp16-conversion-failed") from exc


class TensorRtPlatform(Platform):
    name: ClassVar[str] = "tensorrt"
    family: ClassVar[Family] = Family.GPU
    is_family_default: ClassVar[bool] = False
    description: ClassVar[str] = ("TensorRT engine (tensorrt with a GPU, or tensorrt_rtx ahead of "
                                  "time for @smNN); else the ONNX model and a trtexec command")
    precisions: ClassVar[tuple[Precision, ...]] = (Precision.FP16, Precision.FP32,
                                                   Precision.INT8)
    # int8 is a QDQ model: a layer left without Q/DQ runs at the model's float precision.
    keeps_nodes_in_fp32: ClassVar[bool] = True
    proxy_description: ClassVar[str] = ("ONNX Runtime (CPU) running the QDQ model the engine "
                                        "is built from (model.onnx)")
    requirements: ClassVar[Requirements] = Requirements(
        ops=OrtKernelOps("CPUExecutionProvider"), min_opset=9, static_shapes=True,
        source="TensorRT's ONNX parser reads opsets 9 and later; its op list is not readable "
               "without TensorRT, so ONNX Runtime's CPU registry stands in (the parser "
               "reports what it lacks when the engine is built)")

    # Without tensorrt or tensorrt_rtx it still writes the ONNX model and the trtexec
    # command that builds the engine where TensorRT is (status `prepared`).
    prepares_when_missing: ClassVar[bool] = True

    @classmethod
    def is_available(cls) -> bool:
        return is_installed("tensorrt") or is_installed("tensorrt_rtx")

    def preflight(self, model: OnnxInfo, target: TargetSpec) -> list[Problem]:
        if target.device is not None and _sm_number(target.device) is None:
            return [Problem(f"unknown GPU {target.device!r}: write the compute capability "
                            "as smNN, e.g. gpu:tensorrt@sm89")]
        return []

    def build(self, onnx_path: Path, target: TargetSpec, out_dir: Path,
              options: BuildOptions) -> Artifact:
        from convertkit.platforms import tensorrt_engine

        precision = build_precision(self, target, options)
        out_dir.mkdir(parents=True, exist_ok=True)
        notes: list[str] = []
        model_path = out_dir / "model.onnx"
        override: dict[str, Any] = {}
        if precision == Precision.FP16:
            # TensorRT 11 networks are strongly typed (no --fp16 flag): the precision is
            # the ONNX model's, so the engine is built from the checked fp16 model.
            result = build_fp16(onnx_path, out_dir, options)
            files = save_model(result.model, model_path)
            files.append(_write_kept_nodes(out_dir, result))
            notes.extend(result.notes())
        elif precision == Precision.INT8:
            with tempfile.TemporaryDirectory(prefix=".quantize-", dir=out_dir) as scratch:
                notes.extend(tensorrt_engine.quantize_qdq(onnx_path, model_path, Path(scratch),
                                                          options))
            files = sorted(out_dir.glob("model.onnx*"))
            files.append(tensorrt_engine.write_kept_layers(out_dir, options.keep_fp32))
            if options.keep_fp32:
                override = {"tensorrt": {
                    "nodes_to_exclude": list(options.keep_fp32),
                    "kept_layers_file": tensorrt_engine.KEPT_LAYERS_FILE,
                    "how": tensorrt_engine.QDQ_HOW}}
        else:
            files = save_model(load_model(onnx_path, load_external_data=False), model_path,
                               external_from=onnx_path.parent, link=True)
        sm = _sm_number(target.device) if target.device else None
        builder = tensorrt_engine.find_builder(sm)
        command = tensorrt_engine.write_trtexec_script(
            out_dir, model_path, sm,
            options.keep_fp32 if precision == Precision.INT8 else None)
        files.append(command)
        calibrated = precision in (Precision.FP16, Precision.INT8)
        if builder.module is None:
            notes.append(f"no TensorRT builder here ({builder.reason}): run "
                         f"{command.name} where TensorRT is installed to build the engine")
            return Artifact(str(target), model_path, precision, tuple(files),
                            notes=tuple(notes), is_prepared_only=True,
                            calibrated=calibrated, override=override)
        engine = out_dir / "model.engine"
        notes.extend(tensorrt_engine.build_engine(builder, model_path, engine, sm))
        if precision == Precision.INT8 and not tensorrt_engine.has_cuda_device():
            notes.append("int8 unverified on a GPU: the engine has not run here (no GPU); "
                         "what can run here is the QDQ model it is built from (model.onnx, in "
                         "ONNX Runtime), and only to steer mixed precision")
        files.append(engine)
        return Artifact(str(target), engine, precision, tuple(files), notes=tuple(notes),
                        calibrated=calibrated, override=override)

    def open(self, artifact: Artifact):
        from convertkit.platforms import tensorrt_engine

        if artifact.is_prepared_only or not tensorrt_engine.has_cuda_device():
            return None
        return tensorrt_engine.EngineRunner(artifact.path)

    def proxy_runner(self, artifact: Artifact) -> OrtRunner | None:
        """int8: the QDQ model beside the engine (or the prepared model itself) in ONNX
        Runtime, which computes its Q/DQ as written; fp16/fp32 have no proxy."""
        model = artifact.path.parent / "model.onnx"
        if artifact.precision != Precision.INT8 or not model.is_file():
            return None
        return OrtRunner(model)


def _sm_number(device: str) -> int | None:
    match = re.fullmatch(r"sm_?(\d{2,3})", device.lower())
    return int(match.group(1)) if match else None


def _write_kept_nodes(out_dir: Path, result: Fp16Result) -> Path:
    path = out_dir / KEPT_NODES_FILE
    path.write_text(json.dumps({"kept_in_fp32": [k.to_dict() for k in result.kept],
                                "rounds": result.rounds, "passed": result.passed,
                                "stop_reason": result.stop_reason}, indent=2) + "\n")
    return path


def _to_fp16(model: onnx.ModelProto, kept: set[str]) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    converted = convert_float_to_float16(copy, keep_io_types=True,
                                         node_block_list=sorted(kept) or None)
    return _drop_round_trip_casts(converted)


def _drop_round_trip_casts(model: onnx.ModelProto) -> onnx.ModelProto:
    """The converter casts every kept node's output to fp16 and back to fp32 for a kept
    consumer, which is exactly where a value beyond 65504 overflows: wire the fp32 value
    straight through instead."""
    types = _elem_types(model)
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    renamed: dict[str, str] = {}
    dropped: set[int] = set()
    for node in graph.node:
        if node.op_type != "Cast" or _cast_to(node) != TensorProto.FLOAT:
            continue
        narrowing = producer.get(node.input[0])
        if (narrowing is None or narrowing.op_type != "Cast"
                or _cast_to(narrowing) != TensorProto.FLOAT16
                or types.get(narrowing.input[0]) != TensorProto.FLOAT):
            continue
        renamed[node.output[0]] = narrowing.input[0]
        dropped.add(id(node))
    if not renamed:
        return model
    outputs = {o.name for o in graph.output}
    renamed = {k: v for k, v in renamed.items() if k not in outputs}
    kept_nodes = [n for n in graph.node if not (id(n) in dropped and n.output[0] in renamed)]
    for node in kept_nodes:
        for index, name in enumerate(node.input):
            if name in renamed:
                node.input[index] = renamed[name]
    read = {name for node in kept_nodes for name in node.input} | outputs
    kept_nodes = [n for n in kept_nodes if not (
        n.op_type == "Cast" and _cast_to(n) == TensorProto.FLOAT16
        and n.output[0] not in read and n.name.endswith("_cast_to_fp16_node"))]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    return model


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except (onnx.shape_inference.InferenceError, ValueError):
        inferred = model
    graph = inferred.graph
    types = {t.name: t.data_type for t in graph.initializer}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    for node in graph.node:  # Constant nodes carry their type in the attribute
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    types.setdefault(node.output[0], attr.t.data_type)
    return types


def _widen_attributes(node: onnx.NodeProto) -> None:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT16:
            attr.t.CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(attr.t).astype(np.float32), attr.t.name))
        elif (attr.type == onnx.AttributeProto.INT and attr.name in ("to", "dtype")
              and attr.i == TensorProto.FLOAT16):
            attr.i = TensorProto.FLOAT


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose every top-level node has a unique name (the converter's block list
    and the report name nodes)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    seen: set[str] = set()
    for index, node in enumerate(copy.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)
    return copy


def _peak(values: Mapping[str, np.ndarray], names: list[str]) -> float:
    peak = 0.0
    for name in names:
        value = values.get(name)
        if value is None or not np.issubdtype(value.dtype, np.floating) or value.size == 0:
            continue
        finite = np.abs(value[np.isfinite(value)])
        if finite.size:
            peak = max(peak, float(finite.max()))
    return peak


def _has_float_output(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> bool:
    return any(name in values and np.issubdtype(values[name].dtype, np.floating)
               for name in node.output)


def _culprits(model: onnx.ModelProto, reference: Mapping[str, np.ndarray],
              got: Mapping[str, np.ndarray], budget: Budget,
              kept: set[str]) -> dict[str, KeptNode]:
    """The nodes to keep in fp32 next: every node where Inf/NaN first appears (its inputs
    finite, its output not, while fp32 keeps it finite); failing that, the one node whose
    error grows most over its inputs' error."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output if out}
    overflow: dict[str, KeptNode] = {}
    jumps: list[tuple[float, onnx.NodeProto, float]] = []
    for index in topological_order(graph):
        node = graph.node[index]
        outs = [o for o in node.output if o in got and o in reference
                and np.issubdtype(reference[o].dtype, np.floating)]
        if not outs:
            continue
        ins = [i for i in node.input if i in got and i in reference
               and np.issubdtype(reference[i].dtype, np.floating)]
        new_nonfinite = any(_nonfinite_only_in(got[o], reference[o]) for o in outs)
        inputs_finite = not any(_nonfinite_only_in(got[i], reference[i]) for i in ins)
        if new_nonfinite and inputs_finite and node.name not in kept:
            overflow[node.name] = KeptNode(node.name, node.op_type,
                                           "Inf/NaN in fp16 where fp32 stays finite")
            continue
        ratio_out = max(_ratio(got[o], reference[o], budget) for o in outs)
        ratio_in = max((_ratio(got[i], reference[i], budget) for i in ins), default=0.0)
        if ratio_out > 1.0 and np.isfinite(ratio_out):
            jumps.append((ratio_out - ratio_in, node, ratio_out))
    if overflow:
        return overflow
    for _, node, ratio in sorted((j for j in jumps if j[0] > 0), key=lambda j: -j[0]):
        if node.name not in kept:
            return {node.name: KeptNode(node.name, node.op_type,
                                        f"error jumps to {ratio:.3g}x the fp16 budget")}
        # Kept already and still the worst: what it reads was rounded to fp16 on the way
        # in (cancellation: (x + 1e4) - 1e4), so keep its producers too.
        feeders = {p.name: p for i in node.input if (p := producer.get(i)) is not None
                   and p.name not in kept and _has_float_output(p, reference)}
        if feeders:
            return {name: KeptNode(name, p.op_type, f"feeds {node.name} (kept in fp32), "
                                   f"whose error still jumps to {ratio:.3g}x the fp16 budget")
                    for name, p in feeders.items()}
    return {}


def _nonfinite_only_in(actual: np.ndarray, expected: np.ndarray) -> bool:
    if actual.shape != expected.shape:
        return False
    return bool((~np.isfinite(actual) & np.isfinite(expected)).any())


def _ratio(actual: np.ndarray, expected: np.ndarray, budget: Budget) -> float:
    if actual.shape != expected.shape or actual.size == 0:
        return 0.0
    return element_errors(actual, expected, budget).budget_ratio()

