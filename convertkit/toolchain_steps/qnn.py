"""The QNN steps that run inside the qnn toolchain environment (convertkit.toolchains):
quantise, compile a QNN context binary, run it in the HTP simulator.

Imports only the stdlib, numpy, onnx, onnxruntime, onnxruntime_qnn and convertkit.errors:
the environment holds nothing else of convertkit's dependencies.

The QNN execution provider is an onnxruntime plug-in (onnxruntime-qnn >= 2.0): it is
registered as a library, then added for its devices. On x86-64 its HTP backend
(libQnnHtp.so) is Qualcomm's simulator of the Hexagon NPU, emulating the HTP generation of
the ``soc_model`` it is given. Every session here disables CPU fallback
(``session.disable_cpu_ep_fallback``), so a node the HTP backend does not take fails the
build instead of running quietly on the CPU.

Samples come and go as convertkit's sample files (checker/samples.py): one .npz whose
arrays are named ``NNNNNN/NAME``, the sample's 6-digit index and the input or output name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from convertkit.errors import ConversionError, first_line
from convertkit.sample_files import load_samples, save_samples

EP_NAME = "QNNExecutionProvider"
CONTEXT_MODEL = "model_ctx.onnx"
QDQ_MODEL = "model.qdq.onnx"
PREPROCESSED_MODEL = "preprocessed.onnx"
FALLBACK_REFUSED = "fallback to CPU EP has been explicitly disabled"


def build(payload: dict[str, Any]) -> dict[str, Any]:
    """Quantise (int8) and compile ``payload["model"]`` into a context-binary model.

    payload: model, out_dir, precision ("int8" | "fp16"), soc_model (int), calibration
    (a samples file; int8 only), keep_fp32 (int8 only: the nodes left out of QDQ, which
    the HTP then computes in fp16), htp_fp16 (whether the HTP runs float ops at fp16).
    Returns the context model, the files written, the QAIRT
    SDK version the binary was built with, and notes."""
    out_dir = Path(payload["out_dir"])
    precision = payload["precision"]
    notes: list[str] = []
    source = Path(payload["model"])
    if precision == "int8":
        source, notes = _quantize(source, out_dir, load_samples(payload["calibration"]),
                                  payload.get("keep_fp32") or [])
    context_model = out_dir / CONTEXT_MODEL
    options = _session_options(fallback=False)
    options.add_session_config_entry("ep.context_enable", "1")
    options.add_session_config_entry("ep.context_file_path", str(context_model))
    options.add_session_config_entry("ep.context_embed_mode", "0")  # the binary in a .bin
    htp_fp16 = _htp_fp16(payload)
    _add_qnn(options, payload["soc_model"], htp_fp16)
    ort = _onnxruntime()
    try:
        session = ort.InferenceSession(str(source), sess_options=options)
    except Exception as exc:
        raise _compile_error(exc, source, payload["soc_model"], htp_fp16) from exc
    del session  # the context model is written when the session is created
    if not context_model.is_file():
        raise ConversionError(
            "the QNN execution provider wrote no context-binary model",
            hint="the full output is in qnn.log beside the artifact", code="qnn-no-context")
    context = _context_node(context_model)
    binary = out_dir / context["ep_cache_context"]
    return {
        "context_model": str(context_model),
        "files": [str(p) for p in (context_model, binary, source) if p.is_file()],
        "sdk_version": context["ep_sdk_version"],
        "notes": notes,
    }


def run(payload: dict[str, Any]) -> dict[str, Any]:
    """Run the context model ``payload["context_model"]`` on every sample of
    ``payload["feeds"]`` and write their outputs to ``payload["outputs"]`` (samples files),
    loading the context binary once. Proves first that every node is an EPContext node of
    the QNN execution provider and that the session placed every one of them on it."""
    context_model = Path(payload["context_model"])
    _context_node(context_model)
    options = _session_options(fallback=False)
    options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    _add_qnn(options, payload["soc_model"], _htp_fp16(payload))
    ort = _onnxruntime()
    try:
        session = ort.InferenceSession(str(context_model), sess_options=options)
    except Exception as exc:
        raise ConversionError(f"the HTP simulator could not load {context_model.name}: "
                              f"{_first_line(exc)}", code="qnn-load-failed") from exc
    elsewhere = [f"{node.op_type} on {subgraph.ep_name}"
                 for subgraph in session.get_provider_graph_assignment_info()
                 if subgraph.ep_name != EP_NAME for node in subgraph.get_nodes()]
    if elsewhere:
        raise ConversionError("not every node runs on the QNN HTP backend: "
                              + ", ".join(elsewhere), code="qnn-not-on-npu")
    samples = load_samples(payload["feeds"])
    names = [output.name for output in session.get_outputs()]
    results: dict[int, dict[str, np.ndarray]] = {}
    for index, feeds in enumerate(samples):
        # The last line of the log names what crashed when the simulator dies (SIGSEGV seen).
        print(f"running {context_model.name} in the QNN HTP simulator "
              f"(soc_model {payload['soc_model']}), sample {index + 1} of {len(samples)}",
              flush=True)
        try:
            values = session.run(names, feeds)
        except Exception as exc:
            raise ConversionError(f"the HTP simulator failed to run the model on sample "
                                  f"{index}: {_first_line(exc)}", code="qnn-run-failed") from exc
        results[index] = dict(zip(names, values, strict=True))
    save_samples(payload["outputs"], [results[i] for i in sorted(results)])
    return {"outputs": names, "samples": len(samples)}


def _htp_fp16(payload: dict[str, Any]) -> bool:
    """Whether the HTP computes the float ops at fp16: every fp16 build, and an int8 build
    that keeps nodes out of QDQ (mixed precision). Payloads without ``htp_fp16`` (older
    artifacts) follow the precision."""
    return bool(payload.get("htp_fp16", payload["precision"] == "fp16"))


def _quantize(model: Path, out_dir: Path, samples: list[dict[str, np.ndarray]],
              keep: list[str]) -> tuple[Path, list[str]]:
    """QDQ int8 (uint8 activations and weights, the HTP's native 8-bit types) with the
    QNN configuration of onnxruntime.quantization, calibrated on ``samples``; the nodes
    ``keep`` names stay float (nodes_to_exclude)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._samples = iter(samples)

        def get_next(self) -> dict | None:
            return next(self._samples, None)

    notes = []
    preprocessed = out_dir / PREPROCESSED_MODEL
    quantized = out_dir / QDQ_MODEL
    try:
        if _qnn_preprocess(model, preprocessed):
            notes.append("qnn_preprocess_model fused op patterns for QNN before quantising")
            model = preprocessed
        config = get_qnn_qdq_config(str(model), _Reader(), activation_type=QuantType.QUInt8,
                                    weight_type=QuantType.QUInt8,
                                    nodes_to_exclude=list(keep) or None)
        quantize(str(model), str(quantized), config)
    except Exception as exc:
        raise ConversionError(
            f"onnxruntime.quantization (QNN configuration) failed: {_first_line(exc)}",
            hint="build at fp16 instead (--precision fp16), or try another --opset",
            code="quantization-failed") from exc
    finally:
        preprocessed.unlink(missing_ok=True)
    notes.append(f"int8: QDQ (uint8 activations and weights, MinMax calibration on "
                 f"{len(samples)} sample(s)) by onnxruntime.quantization's QNN configuration")
    if keep:
        notes.append(f"int8: {len(keep)} node(s) left out of QDQ (nodes_to_exclude), computed "
                     f"in fp16 by the HTP (enable_htp_fp16_precision): {', '.join(keep)}")
    return quantized, notes


def _qnn_preprocess(model: Path, preprocessed: Path) -> bool:
    """qnn_preprocess_model (ORT graph clean-up, fusions into ops QNN has: Gelu,
    LayerNormalization...) into ``preprocessed``; whether it changed anything. Its
    save_and_reload_optimize_model raises TypeError on any model with metadata_props
    (``dict.update`` of protobuf entries; onnxruntime 1.32), so they are set aside for the
    call and put back after."""
    import onnx
    from onnxruntime.quantization.execution_providers.qnn import qnn_preprocess_model

    proto = onnx.load(str(model))
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    del proto.metadata_props[:]
    if not qnn_preprocess_model(proto, str(preprocessed)):
        return False
    if metadata:
        result = onnx.load(str(preprocessed))
        merged = {entry.key: entry.value for entry in result.metadata_props}
        onnx.helper.set_model_props(result, {**metadata, **merged})
        onnx.save(result, str(preprocessed))
    return True


def _compile_error(exc: Exception, model: Path, soc_model: int,
                   htp_fp16: bool) -> ConversionError:
    """The error for a failed compile: when CPU fallback was refused, the nodes the HTP
    backend left for the CPU, found by opening the model again with fallback allowed."""
    if FALLBACK_REFUSED not in str(exc):
        return ConversionError(f"the QNN HTP compile failed: {_first_line(exc)}",
                               hint="the full output is in qnn.log beside the artifact",
                               code="qnn-compile-failed")
    options = _session_options(fallback=True)
    options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    _add_qnn(options, soc_model, htp_fp16)
    try:
        session = _onnxruntime().InferenceSession(str(model), sess_options=options)
        left = [(node.op_type, node.name)
                for subgraph in session.get_provider_graph_assignment_info()
                if subgraph.ep_name != EP_NAME for node in subgraph.get_nodes()]
    except Exception:
        left = []
    return ConversionError(
        "the QNN HTP backend does not take every node"
        + (f"; left for the CPU: {_census(left)}" if left else ""),
        hint="replace those operators in the model, or choose another target; "
        "CPU fallback stays off so that a pass means the whole model ran on the NPU",
        code="unsupported-op")


def _census(nodes: list[tuple[str, str]]) -> str:
    """``2 BatchNormalization (n106, n121), 4 DequantizeLinear (...)``: op types by count,
    the quantisation nodes last (they are left over because their consumer was)."""
    by_type: dict[str, list[str]] = {}
    for op_type, name in nodes:
        by_type.setdefault(op_type, []).append(name or "unnamed")
    order = sorted(by_type, key=lambda op: (op in ("QuantizeLinear", "DequantizeLinear"),
                                            -len(by_type[op])))
    parts = []
    for op_type in order:
        names = by_type[op_type]
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        parts.append(f"{len(names)} {op_type} ({shown})")
    return "; ".join(parts)


def _context_node(context_model: Path) -> dict[str, str]:
    """The attributes of the one EPContext node of ``context_model``; an error unless the
    model is exactly one QNN EPContext node."""
    import onnx

    graph = onnx.load(str(context_model), load_external_data=False).graph
    nodes = [(node.op_type, node.domain) for node in graph.node]
    if nodes != [("EPContext", "com.microsoft")]:
        raise ConversionError(
            f"{context_model.name} is not a single QNN EPContext node: "
            + ", ".join(op for op, _ in nodes), code="qnn-partial-context")
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in graph.node[0].attribute}
    text = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in attributes.items()}
    if text.get("source") != EP_NAME:
        raise ConversionError(f"{context_model.name} was not written by {EP_NAME}",
                              code="qnn-partial-context")
    return text


def _onnxruntime():
    import onnxruntime
    import onnxruntime_qnn

    if not any(d.ep_name == EP_NAME for d in onnxruntime.get_ep_devices()):
        onnxruntime.register_execution_provider_library(EP_NAME,
                                                        onnxruntime_qnn.get_library_path())
    return onnxruntime


def _session_options(*, fallback: bool):
    options = _onnxruntime().SessionOptions()
    options.add_session_config_entry("session.disable_cpu_ep_fallback",
                                     "0" if fallback else "1")
    return options


def _add_qnn(options, soc_model: int, htp_fp16: bool) -> None:
    ort = _onnxruntime()
    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    provider_options = {"backend_type": "htp", "soc_model": str(soc_model)}
    if htp_fp16:
        # Float ops (the fp16 model's, or an int8 model's nodes kept out of QDQ) run at
        # fp16 on the HTP; this needs soc_model set.
        provider_options["enable_htp_fp16_precision"] = "1"
    options.add_provider_for_devices(devices, provider_options)


def _first_line(exc: BaseException) -> str:
    """The first line of ``exc`` without onnxruntime's "[ONNXRuntimeError] : 1 : FAIL : "."""
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", first_line(exc))
