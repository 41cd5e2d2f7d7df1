"""--inputs-as-nchw: NHWC inputs that are NCHW in the ONNX model, in ``-i``, ``--data`` and
the check feeds, and transposed back to NHWC for TensorFlow's reference run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from convertkit.spec import InputSpec

NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)


def onnx_layout(spec: InputSpec, nchw: Sequence[str]) -> InputSpec:
    """``spec`` (TensorFlow's layout) as the ONNX model has it: NCHW for ``nchw`` inputs."""
    if spec.name not in nchw:
        return spec
    return InputSpec(spec.name, tuple(spec.dims[i] for i in NHWC_TO_NCHW), spec.dtype)


def tensorflow_layout(spec: InputSpec, nchw: Sequence[str]) -> InputSpec:
    """``spec`` (the ONNX model's layout) as TensorFlow has it: NHWC for ``nchw`` inputs."""
    if spec.name not in nchw or len(spec.dims) != 4:
        return spec
    return InputSpec(spec.name, tuple(spec.dims[i] for i in NCHW_TO_NHWC), spec.dtype)


def tensorflow_feeds(feeds: Mapping[str, np.ndarray],
                     nchw: Sequence[str]) -> dict[str, np.ndarray]:
    """The check feeds as TensorFlow takes them: NCHW inputs transposed back to NHWC."""
    return {name: np.ascontiguousarray(np.transpose(value, NCHW_TO_NHWC)) if name in nchw
            else value for name, value in feeds.items()}


def layout_notes(nchw: Sequence[str]) -> list[str]:
    if not nchw:
        return []
    return [f"--inputs-as-nchw: input(s) {', '.join(nchw)} are NCHW in the ONNX model and in "
            "check/inputs.npz; the TensorFlow reference ran on them transposed to NHWC"]
