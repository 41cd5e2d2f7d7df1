"""Validate an ONNX model and infer its shapes: the entry to the hub."""

from __future__ import annotations

from pathlib import Path

import onnx

from convertkit.errors import ConversionError
from convertkit.ir.io import external_locations, load_model, save_model


def validate_and_infer(source_path: Path, hub_path: Path, *, link: bool = False) -> list[Path]:
    """Check ``source_path`` with the full ONNX checker, infer shapes, and save the result
    at ``hub_path``. Returns the files written.

    A model with external data is checked by path and its shapes inferred on the graph
    alone: its weights never enter memory (models over 2 GB). ``link`` hard-links the data
    files instead of copying them (for convertkit's own scratch files).
    """
    model = load_model(source_path, load_external_data=False)
    external = bool(external_locations(model))
    try:
        if external:
            onnx.checker.check_model(str(source_path), full_check=True)
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
    return save_model(inferred, hub_path, external_from=source_path.parent, link=link)
