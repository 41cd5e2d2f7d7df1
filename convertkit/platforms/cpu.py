"""CPU targets. `cpu:ort`: ONNX Runtime with its graph optimisations applied offline,
at fp32 or quantised to int8 (onnxruntime.quantization). OpenVINO is in openvino.py.

A decoder with a KV cache (and int4 for any model) is quantised weight-only instead:
every MatMul with a constant weight becomes a MatMulNBits (com.microsoft) holding its
weight in blocks of WEIGHT_ONLY_BLOCK_SIZE int8 or int4 values with one fp32 scale each
(symmetric), by onnxruntime.quantization's MatMulNBitsQuantizer. Decoding one token reads
every weight once and computes little with it, so its speed is bound by the bytes read:
int4 reads an eighth of fp32's. No calibration: nothing is tuned on samples.
"""

from __future__ import annotations

import json
import logging
import platform
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from convertkit.errors import ConversionError, first_line
from convertkit.ir.info import OnnxInfo, default_opset
from convertkit.ir.io import EXTERNAL_DATA_THRESHOLD_BYTES, load_model, save_model, stored_bytes
from convertkit.ir.opset import convert_opset
from convertkit.ir.preflight import OrtKernelOps, Requirements
from convertkit.ir.runtime import open_session, session_options
from convertkit.platforms import (
    Artifact,
    BuildOptions,
    Platform,
    Problem,
    build_precision,
    is_installed,
)
from convertkit.platforms.calibration import calibration_notes, calibration_samples
from convertkit.platforms.ort_runner import OrtRunner
from convertkit.spec import Family, Precision, TargetSpec

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

# ORT_ENABLE_ALL adds layout transforms (NCHWc) tied to this machine's CPU features; the
# extended level keeps the saved model portable across x86 and ARM CPUs.
OFFLINE_OPTIMIZATION_LEVEL = "ORT_ENABLE_EXTENDED"
LOAD_TIME_OPTIMIZATION_LEVEL = "ORT_ENABLE_ALL"  # int8 (QDQ) models
SESSION_FILE = "session.json"
_CONV_OPS = frozenset({"Conv", "ConvTranspose"})
_MATMUL_OPS = frozenset({"MatMul", "Gemm"})


class OrtCpuPlatform(Platform):
    name: ClassVar[str] = "ort"
    family: ClassVar[Family] = Family.CPU
    is_family_default: ClassVar[bool] = True
    keeps_nodes_in_fp32: ClassVar[bool] = True  # quantize_static's nodes_to_exclude
    description: ClassVar[str] = ("ONNX Runtime, graph optimisations applied offline "
                                  "(fp32; int8 by onnxruntime.quantization, weight-only "
                                  "MatMulNBits for decoders; int4 weight-only)")
    # ONNX Runtime reads models from opset 7 on (onnxruntime.ai/docs/reference/compatibility).
    precisions: ClassVar[tuple[Precision, ...]] = (Precision.FP32, Precision.INT8,
                                                   Precision.INT4)
    requirements: ClassVar[Requirements] = Requirements(
        ops=OrtKernelOps("CPUExecutionProvider"), min_opset=7,
        source="ONNX Runtime's CPU kernel registry and its compatibility page")

    @classmethod
    def is_available(cls) -> bool:
        return is_installed("onnxruntime")

    def preflight(self, model: OnnxInfo, target: TargetSpec) -> list[Problem]:
        problems = []
        if target.device not in (None, "x86", "x86_64", "arm64", "aarch64"):
            problems.append(Problem(f"unknown CPU device {target.device!r}"))
        return problems

    def build(self, onnx_path: Path, target: TargetSpec, out_dir: Path,
              options: BuildOptions) -> Artifact:
        out_dir.mkdir(parents=True, exist_ok=True)
        precision = build_precision(self, target, options)
        if precision == Precision.INT4 or (precision == Precision.INT8
                                           and is_decoder(onnx_path)):
            return _build_weight_only(onnx_path, target, out_dir, precision, options)
        if precision == Precision.INT8:
            # The QDQ model is saved as quantised and optimised at load: ORT_ENABLE_ALL
            # then fuses the Q/DQ pairs into int8 kernels and lays convolutions out for
            # the CPU it runs on (an offline-optimised copy ran ~1.4x slower on ResNet-50).
            model = out_dir / "model.onnx"
            with tempfile.TemporaryDirectory(prefix=".quantize-", dir=out_dir) as scratch:
                notes, calibrated = quantize_int8(onnx_path, model, Path(scratch), options,
                                                  target.device)
            _drop_folded_initializer_inputs(onnx_path, model)
            files = sorted(out_dir.glob("model.onnx*"))
            files.append(_write_session_file(out_dir, LOAD_TIME_OPTIMIZATION_LEVEL, None))
            override = ({"onnxruntime": {
                "nodes_to_exclude": list(options.keep_fp32),
                "how": "onnxruntime.quantization.quantize_static(model_input, model_output, "
                       "reader, quant_format=QuantFormat.QDQ, per_channel=True, "
                       "activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, "
                       f"reduce_range={activations_for(target.device).reduce_range}, "
                       "calibrate_method=CalibrationMethod.MinMax, "
                       "nodes_to_exclude=nodes_to_exclude)"}} if options.keep_fp32 else {})
            return Artifact(str(target), model, Precision.INT8, tuple(files),
                            notes=(*notes, f"graph optimised when loaded, at "
                                   f"{LOAD_TIME_OPTIMIZATION_LEVEL}; load it with the "
                                   f"settings in {SESSION_FILE}"), calibrated=calibrated,
                            override=override)
        files = _optimize_offline(onnx_path, out_dir)
        return Artifact(str(target), files[0], Precision.FP32, tuple(files),
                        notes=(f"graph optimised offline at {OFFLINE_OPTIMIZATION_LEVEL}; "
                               f"load it with the settings in {SESSION_FILE}",))

    def open(self, artifact: Artifact) -> OrtRunner:
        # Load exactly as a user would with session.json (fp32: no second round of
        # optimisation; int8: the fusions happen at load).
        level = "ORT_DISABLE_ALL"
        settings = artifact.path.parent / SESSION_FILE
        if settings.is_file():
            level = json.loads(settings.read_text()).get("graph_optimization_level", level)
        return OrtRunner(artifact.path, level)


def _build_weight_only(onnx_path: Path, target: TargetSpec, out_dir: Path,
                       precision: Precision, options: BuildOptions) -> Artifact:
    """int8 or int4 weights in MatMulNBits, loaded at LOAD_TIME_OPTIMIZATION_LEVEL."""
    bits = 4 if precision == Precision.INT4 else 8
    model = out_dir / "model.onnx"
    notes = quantize_weights(onnx_path, model, bits, options.keep_fp32)
    files = sorted(out_dir.glob("model.onnx*"))
    files.append(_write_session_file(out_dir, LOAD_TIME_OPTIMIZATION_LEVEL, None))
    override = ({"onnxruntime": {
        "nodes_to_exclude": list(options.keep_fp32),
        "how": f"MatMulNBitsQuantizer(model, bits={bits}, "
               f"block_size={WEIGHT_ONLY_BLOCK_SIZE}, is_symmetric=True, "
               f"accuracy_level={WEIGHT_ONLY_ACCURACY_LEVEL}, "
               "nodes_to_exclude=nodes_to_exclude)"}} if options.keep_fp32 else {})
    return Artifact(str(target), model, precision, tuple(files),
                    notes=(*notes, f"graph optimised when loaded, at "
                           f"{LOAD_TIME_OPTIMIZATION_LEVEL}; load it with the settings in "
                           f"{SESSION_FILE}"), override=override)


def _optimize_offline(onnx_path: Path, out_dir: Path) -> list[Path]:
    """Apply ORT's graph optimisations while loading ``onnx_path`` and save the result as
    out_dir/model.onnx, with session.json naming the settings that load it."""
    optimized = out_dir / "model.onnx"
    options = session_options(OFFLINE_OPTIMIZATION_LEVEL, optimized_path=optimized)
    files = [optimized]
    if stored_bytes(onnx_path) > EXTERNAL_DATA_THRESHOLD_BYTES:
        data_name = optimized.name + ".data"
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", data_name)
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        files.append(out_dir / data_name)
    open_session(onnx_path, options)  # optimising happens while the session loads
    _drop_folded_initializer_inputs(onnx_path, optimized)
    files.append(_write_session_file(out_dir, "ORT_DISABLE_ALL", OFFLINE_OPTIMIZATION_LEVEL))
    return files


def _write_session_file(out_dir: Path, level: str, applied_offline: str | None) -> Path:
    settings = {
        "providers": ["CPUExecutionProvider"],
        "graph_optimization_level": level,
        "optimizations_applied_offline": applied_offline,
        "intra_op_num_threads": 0,
        "python": "sess = onnxruntime.InferenceSession('model.onnx', so, "
                  "providers=['CPUExecutionProvider']) with so.graph_optimization_level = "
                  f"onnxruntime.GraphOptimizationLevel.{level}",
    }
    path = out_dir / SESSION_FILE
    path.write_text(json.dumps(settings, indent=2) + "\n")
    return path


def is_transformer_like(model_path: Path) -> tuple[bool, str]:
    """Whether dynamic quantisation suits the model better than static: MatMul/Gemm carry
    its weights and it has no convolution (BERT, GPT, MLPs). Activations there vary
    per token and per input far more than a few calibration samples show, and dynamic
    quantisation measures them at run time instead. The reason, for the notes."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    census = Counter(node.op_type for node in model.graph.node)
    convs = sum(census[op] for op in _CONV_OPS)
    matmuls = sum(census[op] for op in _MATMUL_OPS)
    if convs:
        return False, f"it has {convs} convolution(s)"
    if not matmuls:
        return False, "it has no MatMul or Gemm"
    return True, f"it is transformer-like ({matmuls} MatMul/Gemm, no convolution)"


def is_decoder(model_path: Path) -> bool:
    """Whether ``model_path`` is a decoder with a KV cache (checker/decode.py)."""
    from convertkit.checker.decode import CacheInputs

    return CacheInputs.of(load_model(model_path, load_external_data=False)) is not None


# Weight-only quantisation (MatMulNBits): weights per scale, and accuracy level 4 (the
# activations quantised to int8 per block inside the kernel, int8 dot products). Measured
# on a random GPT-2-small on 2 cores: block 32 kept the logits at cosine 0.965 in int4
# against 0.955 for block 128; accuracy level 4 decoded 42 tokens/s against 28 at the
# default level (fp32 arithmetic) at the same cosine.
WEIGHT_ONLY_BLOCK_SIZE = 32
WEIGHT_ONLY_ACCURACY_LEVEL = 4


def quantize_weights(onnx_path: Path, quantized: Path, bits: int,
                     keep_fp32: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Quantise the constant weights of every MatMul of ``onnx_path`` to ``bits`` (8 or 4)
    into MatMulNBits nodes, saved as ``quantized``: symmetric, WEIGHT_ONLY_BLOCK_SIZE
    weights per fp32 scale, activations left in fp32. A Gemm with a constant weight is
    first written as MatMul + Add (GPT-2's Conv1D exports as Gemm), since the quantiser
    takes MatMul only. ``keep_fp32``: nodes left as they are. The notes say what."""
    _import_onnxruntime_tools_without_torch()
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = load_model(onnx_path)
    rewritten = gemm_as_matmul(model, set(keep_fp32))
    try:
        quantizer = MatMulNBitsQuantizer(
            model, bits=bits, block_size=WEIGHT_ONLY_BLOCK_SIZE, is_symmetric=True,
            accuracy_level=WEIGHT_ONLY_ACCURACY_LEVEL, nodes_to_exclude=list(keep_fp32))
        quantizer.process()
    except Exception as exc:
        raise ConversionError(
            f"onnxruntime.quantization could not quantise the weights to int{bits}: "
            f"{first_line(exc)}",
            hint="build at fp32 instead, or report the model to onnxruntime",
            code="quantization-failed") from exc
    result = quantizer.model.model
    count = sum(node.op_type == "MatMulNBits" for node in result.graph.node)
    if not count:
        raise ConversionError(
            f"int{bits} weight-only: the model has no MatMul with a constant weight to "
            "quantise", hint="build at fp32, or int8 for a model with convolutions",
            code="nothing-to-quantize")
    save_model(result, quantized)
    notes = [f"int{bits}: weight-only: {count} MatMul weight(s) in int{bits} MatMulNBits "
             f"(onnxruntime.quantization.MatMulNBitsQuantizer, symmetric, "
             f"{WEIGHT_ONLY_BLOCK_SIZE} weights per fp32 scale, accuracy_level "
             f"{WEIGHT_ONLY_ACCURACY_LEVEL}: int8 arithmetic on activations quantised per "
             "block at run time); no calibration, nothing tuned on samples"]
    if rewritten:
        notes.append(f"int{bits}: {rewritten} Gemm(s) with a constant weight written as "
                     "MatMul + Add to be quantised")
    if keep_fp32:
        notes.append(f"int{bits}: {len(keep_fp32)} node(s) kept in fp32 "
                     f"(nodes_to_exclude): {', '.join(keep_fp32)}")
    return tuple(notes)


def gemm_as_matmul(model: onnx.ModelProto, keep: set[str] | frozenset[str] = frozenset(),
                   ) -> int:
    """Rewrite, in place, each Gemm of ``model`` whose weight B is an initializer (alpha
    and beta 1, A not transposed) as MatMul (B transposed once, offline, when transB) plus
    Add of C: how many. Nodes named in ``keep`` stay as they are."""
    from onnx import helper, numpy_helper

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    nodes = []
    rewritten = 0
    for node in model.graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.name in keep or node.input[1] not in initializers
                or attributes.get("transA", 0) or attributes.get("alpha", 1.0) != 1.0
                or attributes.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        weight = node.input[1]
        if attributes.get("transB", 0):
            array = numpy_helper.to_array(initializers[weight]).T.copy()
            weight = _unique_name(f"{weight}_transposed", initializers)
            tensor = numpy_helper.from_array(array, weight)
            model.graph.initializer.append(tensor)
            initializers[weight] = tensor
        name = node.name or node.output[0]
        if len(node.input) > 2 and node.input[2]:
            product = f"{node.output[0]}_matmul"
            nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product],
                                          name=f"{name}_MatMul"))
            nodes.append(helper.make_node("Add", [product, node.input[2]], list(node.output),
                                          name=f"{name}_Add"))
        else:
            nodes.append(helper.make_node("MatMul", [node.input[0], weight],
                                          list(node.output), name=name))
        rewritten += 1
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        read = {name for node in model.graph.node for name in node.input}
        unused = [t for t in model.graph.initializer if t.name not in read]
        for tensor in unused:
            model.graph.initializer.remove(tensor)
    return rewritten


def _unique_name(name: str, taken: Mapping[str, object]) -> str:
    candidate, index = name, 0
    while candidate in taken:
        index += 1
        candidate = f"{name}_{index}"
    return candidate


QDQ_MIN_OPSET = 13


def raise_to_qdq_opset(onnx_path: Path, scratch: Path) -> tuple[Path, list[str]]:
    """``onnx_path`` at opset 13 at least (a copy in ``scratch`` when raised), and the note
    saying so: the quantiser writes opset-13 QuantizeLinear/DequantizeLinear (per-channel
    axis, int32 bias) whatever the model's opset (light_resnet50)."""
    model = load_model(onnx_path, load_external_data=False)
    if default_opset(model) >= QDQ_MIN_OPSET:
        return onnx_path, []
    raised = scratch / "opset13.onnx"
    save_model(convert_opset(model, QDQ_MIN_OPSET), raised,
               external_from=onnx_path.parent, link=True)
    return raised, [f"opset raised from {default_opset(model)} to {QDQ_MIN_OPSET} for "
                    "int8 quantisation"]


def calibration_reader(samples: list[dict]) -> Any:
    """onnxruntime.quantization's CalibrationDataReader over ``samples``."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._samples = iter(samples)

        def get_next(self) -> dict | None:
            return next(self._samples, None)

    return Reader()


@dataclass(frozen=True)
class Activations:
    """How static int8 quantises activations for a CPU: uint8 (ONNX Runtime's U8S8
    kernels, which fuse the residual Adds of a QDQ model and keep every convolution in
    int8; with int8 activations ResNet-50's bottleneck-ending and shortcut convolutions
    stayed in fp32, 1.5x over fp32 instead of 3.2-3.9x), with 7-bit weights where the CPU
    may lack VNNI: there U8S8's VPMADDUBSW can saturate (onnxruntime's quantisation
    guide)."""

    reduce_range: bool
    why: str


def activations_for(device: str | None) -> Activations:
    """``device``: the target's (x86, arm64...), or None for this machine."""
    machine = (device or platform.machine()).lower()
    if machine in ("arm64", "aarch64"):
        return Activations(False, "uint8 activations (ARM's U8S8 kernels do not saturate)")
    if device is None and cpu_has_vnni():
        return Activations(False, "uint8 activations (this CPU has VNNI: no U8S8 saturation)")
    return Activations(True, "uint8 activations and 7-bit weights (reduce_range: a CPU "
                       "without VNNI can saturate U8S8 products)")


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU computes int8 dot products with VNNI (AVX512-VNNI, AVX-VNNI or
    AMX), read from /proc/cpuinfo; False where that cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines()
                      if line.startswith("flags")), []))
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def quantize_int8(onnx_path: Path, quantized: Path, scratch: Path,
                  options: BuildOptions, device: str | None = None,
                  ) -> tuple[tuple[str, ...], bool]:
    """Quantise ``onnx_path`` to int8 into ``quantized`` with onnxruntime.quantization:
    quant_pre_process (shape inference, graph clean-up, into ``scratch``), then
    quantize_dynamic for transformer-like models, else quantize_static (QDQ, per-channel
    int8 weights, uint8 activations (``activations_for(device)``), MinMax calibration on
    options.calibration_path). Returns the notes saying which and why, and whether
    calibration samples were used."""
    _import_onnxruntime_tools_without_torch()
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    large = stored_bytes(onnx_path) > EXTERNAL_DATA_THRESHOLD_BYTES
    prepared = scratch / "preprocessed.onnx"
    onnx_path, notes = raise_to_qdq_opset(onnx_path, scratch)
    try:
        quant_pre_process(str(onnx_path), str(prepared), save_as_external_data=large)
    except Exception as exc:  # symbolic shape inference gives up on some graphs
        log.debug("quant_pre_process failed", exc_info=True)
        try:
            quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True,
                              save_as_external_data=large)
        except Exception as second:
            raise ConversionError(
                f"onnxruntime.quantization could not pre-process the model: {second}",
                hint="quantise at fp32 instead (--precision fp32), or try another --opset",
                code="quantization-failed") from second
        notes.append(f"symbolic shape inference skipped before quantising ({first_line(exc)})")
    dynamic, why = is_transformer_like(prepared)
    try:
        if dynamic:
            quantize_dynamic(str(prepared), str(quantized), weight_type=QuantType.QInt8,
                             per_channel=False, use_external_data_format=large,
                             nodes_to_exclude=list(options.keep_fp32))
            notes.append(f"int8: dynamic quantisation (int8 weights, activations quantised at "
                         f"run time) because {why}; static calibration suits such models worse")
            return tuple(notes), False
        samples = calibration_samples(options, prepared, "int8 calibration")
        activations = activations_for(device)
        quantize_static(str(prepared), str(quantized), calibration_reader(samples),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        reduce_range=activations.reduce_range,
                        calibrate_method=CalibrationMethod.MinMax,
                        use_external_data_format=large,
                        nodes_to_exclude=list(options.keep_fp32))
    except ConversionError:
        raise
    except Exception as exc:
        raise ConversionError(
            f"onnxruntime.quantization failed: {first_line(exc)}",
            hint="build at fp32 instead, or report the model to onnxruntime",
            code="quantization-failed") from exc
    notes.append(f"int8: static QDQ quantisation (per-channel int8 weights, "
                 f"{activations.why}, MinMax calibration on {len(samples)} sample(s)) "
                 f"because {why}")
    if options.keep_fp32:
        notes.append(f"int8: {len(options.keep_fp32)} node(s) kept in fp32 "
                     f"(nodes_to_exclude): {', '.join(options.keep_fp32)}")
    notes.extend(calibration_notes(options))
    return tuple(notes), True


def _import_onnxruntime_tools_without_torch() -> None:
    """onnxruntime/tools/__init__.py imports torch whenever torch is installed (2.5 s here,
    and a framework loaded into the convert process) for export helpers that
    quant_pre_process never uses. Import that package once with torch hidden from its
    importlib.util.find_spec check, then restore find_spec."""
    import importlib.util
    import sys

    if "onnxruntime.tools" in sys.modules:
        return
    original = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None):
        return None if name == "torch" else original(name, package)

    importlib.util.find_spec = find_spec
    try:
        import onnxruntime.tools  # noqa: F401
    finally:
        importlib.util.find_spec = original



def _drop_folded_initializer_inputs(original: Path, optimized: Path) -> None:
    """IR 3 models list their initializers among the graph inputs. When ORT folds such an
    initializer away it keeps the input in the saved model, which then demands a feed for
    it (seen on the ONNX package's light_resnet50 and light_squeezenet). Drop inputs that
    were initializers in the original and that nothing reads any more."""
    import onnx

    source = onnx.load(str(original), load_external_data=False)
    real_inputs = {i.name for i in source.graph.input} - {t.name for t in
                                                           source.graph.initializer}
    model = onnx.load(str(optimized), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    read = {name for node in model.graph.node for name in node.input}
    read |= {o.name for o in model.graph.output}
    dangling = [i for i in model.graph.input
                if i.name not in real_inputs and i.name not in initializers and i.name not in read]
    if not dangling:
        return
    for value in dangling:
        model.graph.input.remove(value)
    onnx.save(model, str(optimized))
