"""Prepare the hub model for one target: the changes its preflight called for."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from convertkit.ir.io import load_model, save_model
from convertkit.ir.opset import convert_opset
from convertkit.ir.preflight import Preflight
from convertkit.ir.shapes import fix_input_shapes
from convertkit.spec import InputSpec


def prepare(hub_path: Path, plan: Preflight, inputs: Sequence[InputSpec],
            out_path: Path) -> Path:
    """The model a target builds from: ``hub_path`` itself when nothing needs changing,
    else a prepared copy at ``out_path`` (opset converted, dynamic dims fixed)."""
    if plan.target_opset is None and not plan.fix_shapes:
        return hub_path
    model = load_model(hub_path)
    if plan.target_opset is not None:
        model = convert_opset(model, plan.target_opset)
    if plan.fix_shapes:
        fix_input_shapes(model, inputs)
    save_model(model, out_path)
    return out_path
