"""Validate an ONNX model and infer its shapes: the entry to the hub."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx

from convertkit.errors import ConversionError
from convertkit.ir.io import load_model, needs_external_data, save_model


def validate_and_infer(source_path: Path, hub_path: Path) -> list[Path]:
    """Check ``source_path`` with the full ONNX checker, infer shapes, and save the result
    at ``hub_path`` (with external data when over 2 GB). Returns the files written."""
    model = load_model(source_path)
    big = needs_external_data(model)
    try:
        if big:
            # The in-memory checker and shape inference stop at 2 GB; the path forms don't.
            with tempfile.TemporaryDirectory(dir=hub_path.parent) as scratch:
                staged = Path(scratch, "model.onnx")
                save_model(model, staged)
                onnx.checker.check_model(str(staged), full_check=True)
                onnx.shape_inference.infer_shapes_path(str(staged), str(staged),
                                                       check_type=True, data_prop=True)
                inferred = onnx.load(str(staged))
        else:
            onnx.checker.check_model(model, full_check=True)
            inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True,
                                                         data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ConversionError(
            f"the ONNX model is invalid: {first}",
            hint="the exporter wrote a model that onnx.checker rejects; try another --opset "
            "or exporter, or report the model",
            code="invalid-onnx",
        ) from exc
    return save_model(inferred, hub_path)
