"""The RKNN steps that run inside the rknn toolchain's environment (rknn-toolkit2).

rknn-toolkit2 simulates only a model it built from ONNX in the same process (a .rknn
loaded from file cannot run without a board), so every step builds from the ONNX with
the same configuration: ``build`` writes the .rknn and, when given the evaluation samples,
runs them all in the simulator right away; ``simulate`` builds again and runs other
samples; ``analyse`` builds again and runs the toolkit's per-layer accuracy analysis on one.

Samples come and go as convertkit's sample files (checker/samples.py): one .npz whose
arrays are named ``NNNNNN/NAME``, the sample's 6-digit index and the input or output name.

Runs in the toolchain's environment: imports only the standard library, numpy, the
toolkit and convertkit.errors (see convertkit.toolchains).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from convertkit.errors import ConversionError
from convertkit.sample_files import load_samples, save_samples

TOOLKIT = "rknn-toolkit2"
LOG_HINT = "the toolkit's full output is in the artifact folder's rknn.log"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# One row of error_analysis.txt: "[Conv] name  0.99997 | 0.43635   0.99999 | 0.16215";
# layers fused into the next one are listed without numbers.
_ANALYSIS_ROW = re.compile(r"^\[(?P<op>[^\]]+)\]\s+(?P<layer>\S+)\s+(?P<cos>\S+)\s*\|\s*"
                           r"(?P<euc>\S+)\s+(?P<single_cos>\S+)\s*\|\s*(?P<single_euc>\S+)\s*$")
# A layer key of a .quantization.cfg ("    conv2d:"), and the suffix RKNN gives the layers
# it lowers one ONNX op into ("_mm", "-rs"; not "_1", another tensor).
_CFG_LAYER = re.compile(r"^    (?P<name>[^\s:][^:]*):\s*$")
_LOWERED_SUFFIX = re.compile(r"[-_][A-Za-z][\w-]*")


def build(payload: dict[str, Any]) -> dict[str, Any]:
    """Build ``payload["onnx"]`` for ``payload["chip"]`` and write ``payload["rknn"]``;
    with ``payload["feeds"]`` (a samples file) also simulate every sample into
    ``payload["outputs"]`` (a samples file)."""
    with _built(payload) as rknn:
        _call(rknn.export_rknn, "export_rknn", payload["rknn"])
        simulated = bool(payload.get("feeds"))
        if simulated:
            _simulate(rknn, payload)
    return {"toolkit": _toolkit_version(), "simulated": simulated}


def simulate(payload: dict[str, Any]) -> dict[str, Any]:
    """Build as ``build`` does (no .rknn written) and simulate every sample of
    ``payload["feeds"]`` into ``payload["outputs"]``."""
    with _built(payload) as rknn:
        _simulate(rknn, payload)
    return {"toolkit": _toolkit_version()}


def analyse(payload: dict[str, Any]) -> dict[str, Any]:
    """Build as ``build`` does and run the toolkit's accuracy_analysis on the first sample
    of ``payload["feeds"]`` in the simulator: per layer, the cosine and euclidean distance
    of the simulated output from the float ("golden") one, accumulated over the layers
    before it (``*_entire``) and for the layer alone. Returns the rows, worst single-layer
    cosine first (then largest single-layer euclidean distance)."""
    work = Path(payload["work_dir"])
    work.mkdir(parents=True, exist_ok=True)
    arrays = _load_inputs(payload)[0]
    paths = []
    for index, value in enumerate(arrays):
        path = work / f"input_{index}.npy"
        np.save(path, value)
        paths.append(str(path))
    with _built(payload) as rknn:
        _call(rknn.accuracy_analysis, "accuracy_analysis", inputs=paths,
              output_dir=str(work / "analysis"))
    report = work / "analysis" / "error_analysis.txt"
    if not report.is_file():
        raise ConversionError("rknn-toolkit2's accuracy_analysis wrote no error_analysis.txt",
                              hint=LOG_HINT, code="rknn-analysis-failed")
    rows = [row for row in parse_error_analysis(report.read_text(errors="replace"))
            if row["op"] != "Input"]
    # The file prints 5 decimals: at fp16 most cosines read 1.00000, and the euclidean
    # distance tells the layers apart.
    rows.sort(key=_worst_first)
    return {"rows": rows, "report": str(report)}


def parse_error_analysis(text: str) -> list[dict[str, Any]]:
    """The layers of rknn-toolkit2's error_analysis.txt, in file order."""
    rows = []
    for line in text.splitlines():
        match = _ANALYSIS_ROW.match(line.strip())
        if match is None:
            continue
        try:
            numbers = {key: float(match[key]) for key in
                       ("cos", "euc", "single_cos", "single_euc")}
        except ValueError:
            continue
        rows.append({"layer": match["layer"], "op": match["op"],
                     "cosine": numbers["single_cos"], "euclidean": numbers["single_euc"],
                     "cosine_entire": numbers["cos"], "euclidean_entire": numbers["euc"]})
    return rows


def _worst_first(row: dict[str, Any]) -> tuple[float, float, float]:
    """Sort key: lowest cosine, then largest euclidean distance; NaN or Inf is worst."""
    def low(value: float) -> float:
        return value if np.isfinite(value) else -np.inf

    return low(row["cosine"]), low(-row["euclidean"]), low(row["cosine_entire"])


@contextlib.contextmanager
def _built(payload: dict[str, Any]) -> Iterator[Any]:
    """An RKNN object holding the model built from the payload's ONNX and settings."""
    from rknn.api import RKNN

    def configured() -> Any:
        rknn = RKNN(verbose=False)
        config: dict[str, Any] = {"target_platform": payload["chip"]}
        if payload["precision"] == "int8":
            config.update(quantized_dtype="w8a8", quantized_algorithm="normal",
                          quantized_method="channel")
        try:
            _call(rknn.config, "config", **config)
        except BaseException:
            rknn.release()
            raise
        return rknn

    with _errors_collected():
        quantize = payload["precision"] == "int8"
        if quantize and payload.get("keep_float16"):
            with _hybrid_built(configured, payload) as rknn:
                yield rknn
            return
        rknn = configured()
        try:
            _call(rknn.load_onnx, "load_onnx", model=payload["onnx"])
            _call(rknn.build, "build", do_quantization=quantize,
                  dataset=payload.get("dataset") if quantize else None)
            yield rknn
        finally:
            rknn.release()


@contextlib.contextmanager
def _hybrid_built(configured: Any, payload: dict[str, Any]) -> Iterator[Any]:
    """int8 with the layers computing ``payload["keep_float16"]`` (ONNX tensor names) in
    float16: the toolkit's hybrid quantisation. Step 1 quantises the model and writes
    {model}.quantization.cfg into the working directory; the layers go into its
    ``custom_quantize_layers`` section as float16; step 2 builds from the edited cfg,
    in a second RKNN object (step 2 refuses one that loaded the ONNX: "The model already
    exists"). With
    ``payload["cfg_out"]`` the edited cfg is copied there, and ``payload["layers_out"]``
    (JSON) receives the layers kept and the tensors no layer computes."""
    layers_out = payload.get("layers_out")
    with tempfile.TemporaryDirectory(prefix="convertkit-rknn-hybrid-") as scratch:
        first = configured()
        previous = os.getcwd()
        os.chdir(scratch)  # step 1 writes its three files into the working directory
        try:
            _call(first.load_onnx, "load_onnx", model=payload["onnx"])
            _call(first.hybrid_quantization_step1, "hybrid_quantization_step1",
                  dataset=payload["dataset"], proposal=False)
        finally:
            os.chdir(previous)
            first.release()
        stem = Path(payload["onnx"]).stem
        files = {kind: Path(scratch, f"{stem}.{kind}")
                 for kind in ("model", "data", "quantization.cfg")}
        missing = [str(path) for path in files.values() if not path.is_file()]
        if missing:
            raise ConversionError("rknn-toolkit2 hybrid_quantization_step1 wrote no "
                                  + ", ".join(missing), hint=LOG_HINT, code="rknn-failed")
        cfg_path = files["quantization.cfg"]
        cfg = cfg_path.read_text()
        layers, unmatched = hybrid_layers(cfg, payload["keep_float16"])
        if not layers:
            raise ConversionError(
                "no RKNN layer computes the tensors to keep in float16 ("
                + ", ".join(payload["keep_float16"]) + ")", hint=LOG_HINT,
                code="rknn-hybrid-no-layers")
        cfg_path.write_text(with_float16_layers(cfg, layers))
        if payload.get("cfg_out"):
            shutil.copyfile(cfg_path, payload["cfg_out"])
        if layers_out:
            Path(layers_out).write_text(json.dumps({"layers": layers,
                                                    "unmatched": unmatched}))
        rknn = configured()
        try:
            _call(rknn.hybrid_quantization_step2, "hybrid_quantization_step2",
                  model_input=str(files["model"]), data_input=str(files["data"]),
                  model_quantization_cfg=str(cfg_path))
            yield rknn
        finally:
            rknn.release()


def cfg_layers(cfg: str) -> list[str]:
    """The layers of a .quantization.cfg: the keys of its ``quantize_parameters``."""
    layers, inside = [], False
    for line in cfg.splitlines():
        if not line.startswith(" "):
            inside = line.rstrip() == "quantize_parameters:"
            continue
        match = _CFG_LAYER.match(line)
        if inside and match:
            layers.append(match["name"])
    return layers


def hybrid_layers(cfg: str, tensors: list[str]) -> tuple[list[str], list[str]]:
    """The cfg's layers that compute ``tensors`` (ONNX tensor names), and the tensors no
    layer computes (folded into a neighbour). RKNN names a layer after the ONNX tensor it
    computes, with a suffix where it lowered the op into several (Gemm ``linear`` becomes
    ``linear_mm``, a Relu after it ``relu_4-rs``); a numeric suffix is another tensor."""
    known = cfg_layers(cfg)
    layers: list[str] = []
    unmatched: list[str] = []
    for tensor in tensors:
        found = [layer for layer in known if layer == tensor or (
            layer.startswith(tensor) and _LOWERED_SUFFIX.fullmatch(layer[len(tensor):]))]
        layers.extend(layer for layer in found if layer not in layers)
        if not found:
            unmatched.append(tensor)
    return layers, unmatched


def with_float16_layers(cfg: str, layers: list[str]) -> str:
    """``cfg`` with its ``custom_quantize_layers`` section listing ``layers`` as float16
    (and whatever it listed before)."""
    lines = cfg.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if line.startswith("custom_quantize_layers:")), None)
    if start is None:
        raise ConversionError("the .quantization.cfg has no custom_quantize_layers section",
                              hint=LOG_HINT, code="rknn-hybrid-cfg")
    end = start + 1
    while end < len(lines) and lines[end].startswith(" "):
        end += 1
    existing = lines[start].split(":", 1)[1].strip()
    kept = [] if existing == "{}" else [line for line in lines[start + 1:end]]
    kept.extend(f"    {layer}: float16" for layer in layers)
    return "\n".join([*lines[:start], "custom_quantize_layers:", *kept, *lines[end:]]) + "\n"


def _simulate(rknn: Any, payload: dict[str, Any]) -> None:
    """Every sample of ``payload["feeds"]`` through one simulator, outputs to
    ``payload["outputs"]``."""
    samples = _load_inputs(payload)
    _call(rknn.init_runtime, "init_runtime (simulator)")
    results: dict[int, dict[str, np.ndarray]] = {}
    for index, arrays in enumerate(samples):
        # rknn takes 4-D inputs as NHWC unless told the data is NCHW, as the ONNX model's is.
        formats = ["nchw" if value.ndim == 4 else "nhwc" for value in arrays]
        outputs = _call(rknn.inference, "inference (simulator)", inputs=arrays,
                        data_format=formats, returns_status=False)
        if outputs is None or len(outputs) != len(payload["output_names"]):
            raise ConversionError(
                f"the rknn-toolkit2 simulator returned {0 if outputs is None else len(outputs)} "
                f"outputs for a model with {len(payload['output_names'])}",
                hint=LOG_HINT, code="rknn-simulation-failed")
        for name, shape, value in zip(payload["output_names"], payload["output_shapes"],
                                      outputs, strict=True):
            value = np.asarray(value)
            if shape is not None and value.size == int(np.prod(shape)):
                value = value.reshape(shape)
            results.setdefault(index, {})[name] = value
    save_samples(payload["outputs"], [results[i] for i in sorted(results)])


def _load_inputs(payload: dict[str, Any]) -> list[list[np.ndarray]]:
    """Each sample of ``payload["feeds"]`` as its arrays in model input order."""
    samples = load_samples(payload["feeds"])
    names = payload["input_names"]
    missing = sorted({name for sample in samples for name in names if name not in sample})
    if missing or not samples:
        raise ConversionError(f"the inputs have no array for {', '.join(missing or names)}",
                              hint="name each array after the model input it feeds",
                              code="missing-input")
    return [[np.ascontiguousarray(sample[name]) for name in names] for sample in samples]


def _call(function: Any, what: str, *args: Any, returns_status: bool = True,
          **kwargs: Any) -> Any:
    """Call an RKNN method: they log an error and return -1 (or None), or raise with the
    toolkit's traceback as the message. Either way, a ConversionError naming the step and
    the toolkit's own last error line."""
    try:
        result = function(*args, **kwargs)
    except Exception as exc:  # the toolkit raises bare ValueError/RuntimeError...
        raise ConversionError(f"rknn-toolkit2 {what} failed: {_last_line(str(exc))}",
                              hint=LOG_HINT, code="rknn-failed") from exc
    if (result != 0) if returns_status else (result is None):
        raise ConversionError(f"rknn-toolkit2 {what} failed: "
                              f"{_ERRORS[-1] if _ERRORS else 'no error message'}",
                              hint=LOG_HINT, code="rknn-failed")
    return result


_ERRORS: list[str] = []


class _ErrorCollector(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            message = _ANSI.sub("", record.getMessage()).strip()
            if message:
                _ERRORS.append(_last_line(message))


@contextlib.contextmanager
def _errors_collected() -> Iterator[None]:
    """Keep the toolkit's error messages (its logger `rknnLogger`) for error messages."""
    handler = _ErrorCollector()
    logger = logging.getLogger("rknnLogger")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _last_line(text: str) -> str:
    lines = [_ANSI.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    return lines[-1][:400] if lines else "(no message)"


def _toolkit_version() -> str:
    try:
        return importlib.metadata.version(TOOLKIT)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
