"""Turn an adapter's export into the hub model every target starts from: validated,
converted to the requested opset, optimised, shape-inferred."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from convertkit.ir.info import default_opset
from convertkit.ir.io import external_locations, load_model, save_model
from convertkit.ir.opset import convert_opset
from convertkit.ir.optimize import OptimizationRecord, optimize
from convertkit.ir.validate import validate_and_infer


@dataclass(frozen=True)
class HubRecord:
    notes: tuple[str, ...]
    optimization: OptimizationRecord | None  # None with --no-optimize

    def to_dict(self) -> dict:
        return {"notes": list(self.notes),
                "optimization": self.optimization.to_dict() if self.optimization else None}


def build_hub(exported: Path, hub: Path, *, opset: int | None = None,
              optimize_graph: bool = True) -> HubRecord:
    """``exported`` (already validated, in convertkit's scratch folder) becomes ``hub``;
    every step's result is validated again, so a pass that writes an invalid model stops
    here. Weights kept in external data (models over 2 GB) stay on disk throughout."""
    model = load_model(exported, load_external_data=False)
    external = bool(external_locations(model))
    notes = []
    source_opset = default_opset(model)
    changed = False
    if opset is not None and opset != source_opset:
        model = convert_opset(model, opset)
        notes.append(f"opset converted from {source_opset} to {opset}")
        changed = True
    record = None
    if optimize_graph and external:
        notes.append("optimisation skipped: the weights are in external data (over 2 GB) "
                     "and optimising would hold them all in memory")
    elif optimize_graph:
        model, record = optimize(model)
        notes.append(f"optimised: {record.nodes_before} -> {record.nodes_after} nodes")
        changed = True
    if not changed:
        save_model(model, hub, external_from=exported.parent, link=True)
        return HubRecord(tuple(notes), None)
    hub.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=hub.parent) as scratch:
        staged = Path(scratch) / "model.onnx"
        save_model(model, staged, external_from=exported.parent, link=True)
        del model
        validate_and_infer(staged, hub, link=True)
    return HubRecord(tuple(notes), record)
