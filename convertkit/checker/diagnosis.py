"""Where a failed artifact first leaves its budget, and a repro that shows it.

Both sides run one sample (the one where the failure is worst) with every intermediate
tensor exposed; localize.py finds the first diverging node, source_map.py maps it back to
the model's code where the exporter recorded it, and repro.py writes the smallest
subgraph that still diverges, with its inputs and the command that checks it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from convertkit.checker.localize import Localization, TensorSource, locate_divergence
from convertkit.checker.metrics import worst_sample
from convertkit.checker.repro import ReproError, write_repro
from convertkit.checker.runners import OnnxTensors, OpenVinoTensors
from convertkit.errors import ConvertkitError
from convertkit.ir.io import load_model
from convertkit.reports.record import ArtifactResult

log = logging.getLogger(__name__)

REPRO_DIR = Path("repro")


@dataclass(frozen=True)
class TensorSide:
    """One side of a comparison, as localisation sees it: how to show its intermediate
    tensors (None: it cannot), and the ONNX or IR file a repro can cut (None: none)."""

    tensors: Callable[[], TensorSource] | None
    model_path: Path | None = None


def localize(result: ArtifactResult, reference: TensorSide, candidate: TensorSide,
             feeds: Mapping[str, np.ndarray], reference_values: dict[str, np.ndarray] | str,
             candidate_outputs: Mapping[str, np.ndarray] | None, folder: Path,
             shown_as: Path | None) -> ArtifactResult:
    """``result`` with where it diverges first on ``feeds`` (``reference_values``: every
    tensor of the reference on them, or why they could not be had), and a repro written
    into ``folder`` (named ``shown_as`` to the user; None: no repro)."""
    if reference.tensors is None or candidate.tensors is None:
        why = ("the reference cannot show its intermediate tensors" if reference.tensors is None
               else "this artifact cannot show its intermediate tensors here")
        return replace(result, notes=(*result.notes, f"not localised: {why}"))
    if isinstance(reference_values, str):
        return replace(result, notes=(*result.notes, f"not localised: {reference_values}"))
    assert result.budget is not None
    reference_tensors, candidate_tensors = reference.tensors(), candidate.tensors()
    candidate_values = run_all(candidate_tensors, feeds)
    if isinstance(candidate_values, str):
        return replace(result, notes=(*result.notes, f"not localised: {candidate_values}"))
    localization = locate_divergence(reference_tensors, candidate_tensors, reference_values,
                                     candidate_values, result.budget,
                                     candidate_outputs=candidate_outputs)
    if shown_as is not None:
        localization = _with_repro(localization, reference, candidate, reference_values,
                                   candidate_values, result, folder, shown_as)
    return replace(result, localization=localization)


def _with_repro(localization: Localization, reference: TensorSide, candidate: TensorSide,
                reference_values: dict[str, np.ndarray],
                candidate_values: dict[str, np.ndarray], result: ArtifactResult,
                folder: Path, shown_as: Path) -> Localization:
    if localization.node is None:
        return localization
    if reference.model_path is None or candidate.model_path is None:
        return localization.with_repro(None, "no repro: it needs an ONNX reference and an "
                                             "ONNX or OpenVINO candidate")
    assert result.budget is not None
    try:
        repro = write_repro(folder, shown_as, reference.model_path, candidate.model_path,
                            localization.node, reference_values, candidate_values,
                            result.budget)
    except ReproError as exc:
        return localization.with_repro(None, f"no repro: {exc}")
    return localization.with_repro(repro)


def run_all(tensors: TensorSource, feeds: Mapping[str, np.ndarray],
            ) -> dict[str, np.ndarray] | str:
    """Every tensor of ``tensors`` on ``feeds``, or why they could not be had."""
    try:
        return tensors.run_all(feeds)
    except ConvertkitError as exc:
        log.debug("exposing the tensors of %s failed", tensors.label, exc_info=True)
        return f"{tensors.label} did not run with its tensors exposed: {exc.message}"


def repro_dirs(targets: Sequence[str]) -> dict[str, Path]:
    """OUT/repro for a single candidate, OUT/repro/<target> when there are several."""
    if len(targets) == 1:
        return {targets[0]: REPRO_DIR}
    return {t: REPRO_DIR / _folder_name(t) for t in targets}


def localize_against_hub(result: ArtifactResult, staging: Path, hub_model: Path,
                         samples: Sequence[Mapping[str, np.ndarray]],
                         shown_as: Path) -> ArtifactResult:
    """For `convert`: ``result``, a failed ONNX or OpenVINO artifact, localised against
    the hub ONNX model (which passed). Writes OUT/repro/<target>/."""
    path = staging / str(result.path)
    suffix = path.suffix.lower()
    if suffix not in (".onnx", ".xml") or (suffix == ".onnx" and _is_ep_context(path)):
        return replace(result, notes=(*result.notes, "not localised: this artifact cannot "
                                      "show its intermediate tensors here"))
    reference = TensorSide(lambda: OnnxTensors(staging / hub_model), staging / hub_model)
    sample = worst_sample(result.outputs)
    candidate = TensorSide((lambda: OnnxTensors(path)) if suffix == ".onnx"
                           else (lambda: OpenVinoTensors(path)), path)
    repro_dir = REPRO_DIR / _folder_name(result.target)
    return localize(result, reference, candidate, samples[sample],
                    _hub_tensors(staging / hub_model, sample, samples[sample]), None,
                    staging / repro_dir, shown_as / repro_dir)


# Every tensor of the hub model on one sample, computed once per worker process.
_HUB_TENSORS: dict[tuple[Path, int], dict[str, np.ndarray] | str] = {}


def _hub_tensors(hub: Path, sample: int, feeds: Mapping[str, np.ndarray],
                 ) -> dict[str, np.ndarray] | str:
    if (hub, sample) not in _HUB_TENSORS:
        _HUB_TENSORS[hub, sample] = run_all(OnnxTensors(hub), feeds)
    return _HUB_TENSORS[hub, sample]


def _folder_name(target: str) -> str:
    return target.replace(":", "-").replace("@", "-")


def _is_ep_context(path: Path) -> bool:
    """A context-binary model (EPContext nodes, e.g. QNN's): only its own execution
    provider can run it, so its intermediate tensors cannot be shown here."""
    model = load_model(path, load_external_data=False)
    return any(node.op_type == "EPContext" for node in model.graph.node)
