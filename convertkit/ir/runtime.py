"""ONNX Runtime sessions on the CPU, shared by the ONNX adapter and the ORT platforms."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from convertkit.dependencies import require
from convertkit.errors import ConversionError, first_line
from convertkit.ir.external_data import checked_external_files

if TYPE_CHECKING:
    import onnxruntime

OPTIMIZATION_LEVELS = ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED",
                       "ORT_ENABLE_ALL")


def import_onnxruntime():
    onnxruntime = require("onnxruntime", name="onnxruntime")
    onnxruntime.set_default_logger_severity(3)
    return onnxruntime


def session_options(level: str = "ORT_DISABLE_ALL", threads: int = 0,
                    optimized_path: Path | None = None) -> onnxruntime.SessionOptions:
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return options


def open_session(model_path: Path, options: onnxruntime.SessionOptions,
                 ) -> onnxruntime.InferenceSession:
    ort = import_onnxruntime()
    checked_external_files(model_path)  # ONNX Runtime follows the locations as written
    try:
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
        raise ConversionError(
            f"ONNX Runtime cannot load {model_path.name}: {first_line(exc)}",
            hint="the model uses an op or type ONNX Runtime's CPU provider lacks; "
            "try another --opset",
            code="runtime-load-failed",
        ) from exc


def run_session(session: onnxruntime.InferenceSession,
                feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    wanted = {i.name for i in session.get_inputs()}
    try:
        values = session.run(names, {k: v for k, v in feeds.items() if k in wanted})
    except Exception as exc:
        raise ConversionError(
            f"ONNX Runtime failed to run the model: {first_line(exc)}",
            hint="check the input shapes (-i) and dtypes against the model's",
            code="runtime-failed",
        ) from exc
    return dict(zip(names, values, strict=True))
