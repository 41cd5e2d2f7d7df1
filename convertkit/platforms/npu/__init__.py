"""NPU targets, one module per toolchain. Toolchains that pin their own protobuf, numpy,
onnx or Python (RKNN, QNN, Sophgo) run in sealed virtual environments (convertkit.toolchains):
the platform class here runs in the main process and hands files to a ``*_step`` module
that runs inside the toolchain's environment. Ascend and Intel NPU build nothing here:
they prepare the inputs for a toolchain on another machine (status ``prepared``)."""

from __future__ import annotations

from pathlib import Path

from convertkit.platforms import Problem
from convertkit.spec import TargetSpec

TABLES = Path(__file__).parent / "tables"


def device_problems(target: TargetSpec, known: tuple[str, ...], what: str) -> list[Problem]:
    """A problem when ``target`` names a device outside ``known`` (lower case)."""
    if target.device is None or target.device.lower() in known:
        return []
    return [Problem(f"unknown {what} {target.device!r} (known: {', '.join(known)})")]
