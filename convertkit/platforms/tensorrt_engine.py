"""TensorRT engines for `gpu:tensorrt`: find a builder, build, run, or write the trtexec
command for a machine that has TensorRT.

Builders, in order: `tensorrt` on a machine with an NVIDIA GPU (it builds for that GPU);
`tensorrt_rtx`, which builds ahead of time without a GPU for the compute capabilities it
knows (SM75, SM80, SM86, SM89, SM120...; no SM90). Both take strongly typed networks:
the ONNX model's own types decide the precision (TensorRT 11 removed --fp16).

int8 is explicit quantisation, the form TensorRT recommends (its implicit-quantisation
calibrators are deprecated): a QDQ ONNX model (``quantize_qdq``) whose QuantizeLinear /
DequantizeLinear pairs say which tensors are int8. Layers the model leaves without Q/DQ
(mixed precision's kept layers) run at the model's float precision: that is per-layer
precision in a strongly typed network, with no builder flag or layer API involved.

Verified here (no GPU): finding builders, the trtexec script, the QDQ model (run in ONNX
Runtime), and tensorrt_rtx 1.7 building engines ahead of time from fp32, fp16 and QDQ
models (sm89, sm120; sm75 refuses the fp32 Gemm of the digits test model). Building with
`tensorrt` on a GPU and EngineRunner are written to TensorRT's documented Python API but
have not run on a GPU; nor has any engine, so int8 accuracy on a GPU is unverified.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import importlib.util
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from convertkit.errors import ConversionError, first_line
from convertkit.platforms import BuildOptions, Runner
from convertkit.safe_text import printable, shell_quote

TRTEXEC_SCRIPT = "trtexec.sh"
KEPT_LAYERS_FILE = "kept_layers.json"
_SHOWN_KEPT_LAYERS = 40
# onnxruntime.quantization.quantize_static's extra_options for a QDQ model as TensorRT
# takes it (docs.nvidia.com/deeplearning/tensorrt, "Working with Quantized Types").
QDQ_EXTRA_OPTIONS: dict[str, Any] = {
    # TensorRT quantises symmetrically: int8 zero points are 0.
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    # TensorRT's DequantizeLinear takes int8/fp8/int4, not the int32 bias ONNX Runtime
    # writes by default (the parser rejects it); a float bias is fused into the layer.
    "QuantizeBias": False,
    # Per-channel weights along the output channels: axis 0 for Conv (the default), the
    # last axis of a MatMul's [..., K, N] weight.
    "QDQOpTypePerChannelSupportToAxis": {"MatMul": -1},
}
QDQ_HOW = ("onnxruntime.quantization.quantize_static(model_input, model_output, reader, "
           "quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8, "
           "weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax, "
           f"nodes_to_exclude=nodes_to_exclude, extra_options={QDQ_EXTRA_OPTIONS!r}); "
           "the engine is built strongly typed from it: layers without Q/DQ run at the "
           "model's float precision")


@dataclass(frozen=True)
class Builder:
    """The TensorRT module that can build here (None: none can), and why or why not."""

    module: ModuleType | None
    kind: str  # "tensorrt" | "tensorrt_rtx" | ""
    reason: str
    gpu_sm: int | None = None  # the compute capability of the GPU present


def find_builder(sm: int | None) -> Builder:
    """The builder for compute capability ``sm`` (None: the GPU present, or tensorrt_rtx's
    default portable set)."""
    gpu_sm = cuda_compute_capability()
    reasons = []
    if importlib.util.find_spec("tensorrt") is not None:
        if gpu_sm is None:
            reasons.append("tensorrt is installed but needs a GPU to build")
        elif sm is not None and sm != gpu_sm:
            reasons.append(f"tensorrt builds for the GPU present (sm{gpu_sm}), not sm{sm}")
        else:
            module = _import("tensorrt", reasons)
            if module is not None:
                return Builder(module, "tensorrt", f"for the GPU present (sm{gpu_sm})", gpu_sm)
    if importlib.util.find_spec("tensorrt_rtx") is not None:
        module = _import("tensorrt_rtx", reasons)
        if module is not None:
            known = sorted(int(name[2:]) for name in module.ComputeCapability.__members__
                           if name.startswith("SM"))
            if sm is None or sm in known:
                return Builder(module, "tensorrt_rtx",
                               f"ahead of time for sm{sm}" if sm else "for its default GPUs",
                               gpu_sm)
            reasons.append(f"tensorrt_rtx builds for {', '.join(f'sm{k}' for k in known)}, "
                           f"not sm{sm}")
    if not reasons:
        reasons.append("neither tensorrt nor tensorrt_rtx is installed")
    return Builder(None, "", "; ".join(reasons), gpu_sm)


def build_engine(builder: Builder, onnx_path: Path, engine_path: Path,
                 sm: int | None) -> list[str]:
    """Parse ``onnx_path`` and write the serialised engine; the notes to report."""
    trt = builder.module
    assert trt is not None
    logger = _error_collector(trt)
    trt_builder = trt.Builder(logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # TensorRT 10.x needs it, 11.x and RTX ignore it
        flags |= 1 << int(strongly_typed)
    network = trt_builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise ConversionError(f"TensorRT's ONNX parser rejects the model: {errors[:400]}",
                              hint="try another --opset, or see `trtexec --verbose`",
                              code="tensorrt-parse-failed")
    config = trt_builder.create_builder_config()
    if builder.kind == "tensorrt_rtx" and sm is not None:
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, f"SM{sm}"), 0)
    serialized = trt_builder.build_serialized_network(network, config)
    if serialized is None:
        # The builder says why only through its logger (tensorrt_rtx for sm75: "Cannot
        # compile operation 'node_linear' for Turing (SM75): FP32 GEMM is not supported").
        why = "; ".join(getattr(logger, "errors", ()))[:400]
        raise ConversionError("TensorRT could not build an engine for the model"
                              + (f": {why}" if why else ""),
                              hint="rerun with --debug, or run trtexec.sh --verbose",
                              code="tensorrt-build-failed")
    engine_path.write_bytes(bytes(serialized))
    where = (f"ahead of time for sm{sm}" if builder.kind == "tensorrt_rtx" and sm else
             "for TensorRT-RTX's default GPUs (Ampere and later)"
             if builder.kind == "tensorrt_rtx" else f"for the GPU present (sm{builder.gpu_sm})")
    return [f"engine built by {builder.kind} {trt.__version__} {where}, strongly typed "
            "(precision from the ONNX model's types)"]


def write_trtexec_script(out_dir: Path, model_path: Path, sm: int | None,
                         int8_kept: Sequence[str] | None = None) -> Path:
    """trtexec.sh: the command that builds the engine from the model beside it.
    ``int8_kept``: for a QDQ model (int8), the layers left without Q/DQ (may be empty)."""
    target = (f"# Run it on a machine with a GPU of compute capability {sm // 10}.{sm % 10} "
              f"(sm{sm}).\n" if sm else "# Run it on the machine with the target GPU.\n")
    script = out_dir / TRTEXEC_SCRIPT
    script.write_text(
        "#!/bin/sh\n"
        "# Builds model.engine from the ONNX model beside this script with TensorRT's trtexec\n"
        "# (TensorRT 10.12 or later). The network is strongly typed: the precision is the\n"
        "# model's own (fp16 where convertkit converted it), which is why there is no --fp16\n"
        "# (TensorRT 11 removed it).\n"
        + (_int8_comment(int8_kept) if int8_kept is not None else "")
        + target +
        "set -e\n"
        'cd "$(dirname "$0")"\n'
        f"trtexec {shell_quote(f'--onnx={model_path.name}')} --saveEngine=model.engine "
        "--stronglyTyped \"$@\"\n", encoding="utf-8")
    script.chmod(0o755)
    return script


def _int8_comment(kept: Sequence[str]) -> str:
    lines = ["int8: model.onnx is a QDQ model (explicit quantisation): its QuantizeLinear/",
             "DequantizeLinear pairs mark the tensors TensorRT computes in int8 (symmetric,",
             "zero points 0, per-channel weights). --stronglyTyped makes TensorRT 10.x follow",
             "them exactly; do not add --int8 or --fp16 (precision flags are not for strongly",
             "typed networks)."]
    if kept:
        shown = [f"  {printable(name)}" for name in kept[:_SHOWN_KEPT_LAYERS]]
        more = len(kept) - _SHOWN_KEPT_LAYERS
        lines += [f"Kept out of int8: {len(kept)} layer(s) carry no Q/DQ and run at the "
                  "model's float", "precision (fp32), because pure int8 missed its accuracy "
                  "budget and convertkit's", "mixed-precision search kept them "
                  f"({KEPT_LAYERS_FILE}, mixed_precision.json):", *shown,
                  *([f"  and {more} more, all in {KEPT_LAYERS_FILE}"] if more > 0 else [])]
    else:
        lines.append("Every layer the quantiser quantises is int8: none is kept at fp32.")
    return "".join(f"# {line}\n" for line in lines)


def quantize_qdq(onnx_path: Path, quantized: Path, scratch: Path,
                 options: BuildOptions) -> tuple[str, ...]:
    """Quantise ``onnx_path`` into ``quantized``, a QDQ model as TensorRT takes it
    (QDQ_EXTRA_OPTIONS), calibrated (MinMax) on the calibration samples, leaving the nodes
    in ``options.keep_fp32`` without Q/DQ; the notes to report. Unlike cpu:ort's
    quantize_int8 there is no quant_pre_process (gpu:tensorrt takes static shapes only, and
    the hub model is already optimised) and no dynamic quantisation (TensorRT has none)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from convertkit.ir.io import EXTERNAL_DATA_THRESHOLD_BYTES, stored_bytes
    from convertkit.platforms.calibration import calibration_notes, calibration_samples
    from convertkit.platforms.cpu import calibration_reader, raise_to_qdq_opset

    onnx_path, notes = raise_to_qdq_opset(onnx_path, scratch)
    samples = calibration_samples(options, onnx_path, "int8 calibration")
    try:
        quantize_static(str(onnx_path), str(quantized), calibration_reader(samples),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        use_external_data_format=(stored_bytes(onnx_path)
                                                  > EXTERNAL_DATA_THRESHOLD_BYTES),
                        nodes_to_exclude=list(options.keep_fp32),
                        extra_options=dict(QDQ_EXTRA_OPTIONS))
    except Exception as exc:
        raise ConversionError(
            f"onnxruntime.quantization failed: {first_line(exc)}",
            hint="build gpu:tensorrt at fp16 instead, or report the model to onnxruntime",
            code="quantization-failed") from exc
    notes.append(f"int8: explicit quantisation for TensorRT, a QDQ model (symmetric int8 "
                 f"activations and per-channel weights, zero points 0, float biases, MinMax "
                 f"calibration on {len(samples)} sample(s)); the strongly typed engine "
                 "follows its Q/DQ")
    if options.keep_fp32:
        notes.append(f"int8: {len(options.keep_fp32)} layer(s) carry no Q/DQ and run at the "
                     f"model's float precision (fp32), listed in {KEPT_LAYERS_FILE}: "
                     + ", ".join(options.keep_fp32))
    notes.extend(calibration_notes(options))
    return tuple(notes)


def write_kept_layers(out_dir: Path, kept: Sequence[str]) -> Path:
    """kept_layers.json: the ONNX nodes the QDQ model leaves in float, and why."""
    path = out_dir / KEPT_LAYERS_FILE
    path.write_text(json.dumps({
        "precision": "int8", "kept_in": "fp32", "layers": list(kept),
        "why": ("the pure int8 build missed its accuracy budget; convertkit's mixed-precision "
                "search kept these layers out of int8 (mixed_precision.json)" if kept else
                "nothing kept: every layer the quantiser quantises is int8"),
        "how": QDQ_HOW}, indent=2) + "\n")
    return path


def _error_collector(trt: ModuleType) -> Any:
    """A TensorRT logger that keeps the errors (``.errors``) for the exception it raises,
    and prints warnings and worse as trt.Logger(WARNING) does."""

    class Collector(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity <= trt.ILogger.Severity.ERROR:
                self.errors.append(msg)
            if severity <= trt.ILogger.Severity.WARNING:
                print(f"[TRT] {msg}", file=sys.stderr, flush=True)  # into logs/build.log

    return Collector()


@functools.cache
def cuda_compute_capability() -> int | None:
    """The compute capability of GPU 0 as a number (89 for 8.9), through the CUDA driver
    library; None without a driver or a GPU."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or not count.value:
        return None
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
    if (cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, 0) != 0
            or cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, 0) != 0):
        return None
    return major.value * 10 + minor.value


def has_cuda_device() -> bool:
    return cuda_compute_capability() is not None


class EngineRunner(Runner):
    """Runs a serialised engine on GPU 0, with torch's CUDA tensors for the buffers.
    Unverified: written to TensorRT's Python API (execute_async_v3), not yet run on a GPU."""

    def __init__(self, engine_path: Path) -> None:
        self.engine_path = engine_path
        self._context = None
        self._engine = None

    def __enter__(self) -> EngineRunner:
        trt = _runtime_module()
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        self._engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise ConversionError(f"TensorRT cannot load {self.engine_path.name}",
                                  hint="build the engine on this GPU (trtexec.sh)",
                                  code="runtime-load-failed")
        self._context = self._engine.create_execution_context()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._context = self._engine = None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        trt = _runtime_module()
        engine, context = self._engine, self._context
        assert engine is not None and context is not None, "use the runner inside a with block"
        buffers, outputs = [], {}
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                value = np.ascontiguousarray(np.asarray(feeds[name]).astype(dtype))
                context.set_input_shape(name, value.shape)
                tensor = torch.from_numpy(value).cuda()
            else:
                shape = tuple(context.get_tensor_shape(name))
                tensor = torch.empty(shape, dtype=torch.from_numpy(np.zeros(0, dtype)).dtype,
                                     device="cuda")
                outputs[name] = tensor
            buffers.append(tensor)
            context.set_tensor_address(name, tensor.data_ptr())
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise ConversionError("TensorRT failed to run the engine", code="runtime-failed")
        stream.synchronize()
        return {name: tensor.cpu().numpy().astype(np.float32)
                if tensor.dtype == torch.float16 else tensor.cpu().numpy()
                for name, tensor in outputs.items()}


def _runtime_module() -> ModuleType:
    for name in ("tensorrt", "tensorrt_rtx"):
        if importlib.util.find_spec(name) is not None:
            return importlib.import_module(name)
    raise ConversionError("TensorRT is not installed", code="missing-tensorrt")


def _import(name: str, reasons: list[str]) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # the registry's stub packages raise on import
        reasons.append(f"{name} does not import ({type(exc).__name__}: {str(exc)[:120]})")
        return None
