"""Adapters and platforms, found through entry points.

Built-in adapters and platforms register exactly like third-party ones (pyproject.toml,
groups ``convertkit.adapters`` and ``convertkit.platforms``). Entry-point metadata is
read without importing anything; a class is imported on first use. Platform and adapter
modules import only numpy, onnx and convertkit at top level, so loading them is cheap.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from convertkit.errors import UsageError, did_you_mean
from convertkit.spec import TargetSpec

if TYPE_CHECKING:
    from convertkit.adapters import Adapter
    from convertkit.platforms import Platform

ADAPTER_GROUP = "convertkit.adapters"
PLATFORM_GROUP = "convertkit.platforms"
ONNX_TARGET = TargetSpec("onnx")  # always built
AUTO_CPU_TARGET = TargetSpec("cpu")  # no toolchain named: pick the fastest that passes


@functools.cache
def _entry_points(group: str) -> dict:
    return {ep.name: ep for ep in entry_points(group=group)}


def adapter_names() -> list[str]:
    return sorted(_entry_points(ADAPTER_GROUP))


@functools.cache
def load_adapter(name: str) -> Adapter:
    points = _entry_points(ADAPTER_GROUP)
    if name not in points:
        raise UsageError(
            f"unknown framework {name!r}",
            hint=did_you_mean(name, points) + f"known: {', '.join(sorted(points))}",
            code="unknown-framework",
        )
    return points[name].load()()


@functools.cache
def load_platforms() -> dict[str, type[Platform]]:
    """Every registered platform class by its public name (the entry-point name)."""
    classes = {}
    for name, point in sorted(_entry_points(PLATFORM_GROUP).items()):
        cls = point.load()
        cls.name = name  # the entry-point name is the public name, whatever the class says
        classes[name] = cls
    return classes


def target_names() -> list[str]:
    """Every target string a user can write: FAMILY and FAMILY:TOOLCHAIN."""
    names = []
    for name, cls in load_platforms().items():
        family = cls.family.value
        if name == family:
            names.append(name)
            continue
        if cls.is_family_default:
            names.append(family)
        names.append(f"{family}:{name}")
    return names


def resolve_target(target: TargetSpec) -> type[Platform]:
    """The platform class a target names, or a UsageError that suggests the closest one."""
    platforms = load_platforms()
    matches = [
        cls for name, cls in platforms.items()
        if cls.family.value == target.family
        and (name == target.toolchain if target.toolchain else
             (cls.is_family_default or name == target.family))
    ]
    if not matches:
        known = target_names()
        raise UsageError(
            f"unknown target {str(target)!r}",
            hint=did_you_mean(str(target).split("@")[0], known)
            + "`convertkit targets` lists every target",
            code="unknown-target",
        )
    return matches[0]


def resolve_targets(targets: Sequence[TargetSpec]) -> dict[TargetSpec, type[Platform]]:
    """`onnx` first, then each target under its full name (`gpu` becomes `gpu:fp16`; `cpu`
    stays: it picks among every CPU platform), duplicates dropped. Unknown targets raise a
    UsageError."""
    resolved: dict[TargetSpec, type[Platform]] = {}
    for target in [ONNX_TARGET, *targets]:
        platform = resolve_target(target)
        if target == AUTO_CPU_TARGET:
            resolved.setdefault(target, platform)  # every CPU platform competes (selection.py)
            continue
        if platform.name != target.family:
            target = TargetSpec(target.family, platform.name, target.device)
        resolved.setdefault(target, platform)
    return resolved
