"""Calibration samples for the platforms that quantise (int8) or search for fp16-safe nodes.

The pipeline hands every platform the same samples (``BuildOptions.calibration_path``,
checker/samples.py): ``--calib-data``, or the half of ``--data`` the check never grades,
else generated samples drawn from another seed than the check's. Generated values
calibrate worse than real ones, and the platforms say so in their notes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx

from convertkit.checker.inputs import cast_feeds
from convertkit.checker.samples import (
    CALIBRATION_SEED,
    GENERATED_SAMPLES,
    generate_samples,
    load_samples,
)
from convertkit.errors import ConversionError
from convertkit.platforms import BuildOptions

log = logging.getLogger(__name__)

GENERATED_CALIBRATION_NOTE = ("calibrated on generated inputs (seeded random values): a smoke "
                              "test, not evidence; real samples calibrate better, pass "
                              "--data or --calib-data")


def calibration_samples(options: BuildOptions, model_path: Path,
                        purpose: str) -> list[dict[str, np.ndarray]]:
    """The calibration samples for the model at ``model_path``, one dict of feeds per
    sample, cast to the model's input types. ``purpose`` names what they are for in errors
    ("int8 calibration"). Without a calibration file (a platform built on its own),
    samples are generated from the calibration seed (checker/samples.py)."""
    model = onnx.load(str(model_path), load_external_data=False)
    if options.calibration_path is None:
        from convertkit.ir.info import describe

        return generate_samples(describe(model).input_specs(), model, CALIBRATION_SEED,
                                GENERATED_SAMPLES)
    samples = load_samples(options.calibration_path)
    initializers = {t.name for t in model.graph.initializer}
    wanted = {i.name: _dtype_name(i.type.tensor_type.elem_type) for i in model.graph.input
              if i.name not in initializers}
    missing = sorted(set(wanted) - set(samples[0])) if samples else sorted(wanted)
    if missing:
        raise ConversionError(
            f"{purpose}: the calibration samples have no array for {', '.join(missing)}",
            hint="name each array in the .npz after the model input it feeds",
            code="no-calibration-data",
        )
    return [cast_feeds(sample, wanted) for sample in samples]


def calibration_notes(options: BuildOptions) -> tuple[str, ...]:
    """For a build that calibrated (int8): the warning that generated inputs calibrate
    worse than real ones, logged and returned as a note, unless the inputs were real."""
    if options.calibration_is_real:
        return ()
    log.warning("int8 %s", GENERATED_CALIBRATION_NOTE)
    return (GENERATED_CALIBRATION_NOTE,)


def _dtype_name(elem_type: int) -> str:
    """numpy's name for an ONNX element type ("" for one numpy lacks)."""
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError):
        return ""
