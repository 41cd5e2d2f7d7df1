"""convertkit/registry.py: targets resolve to platforms through entry points."""

from __future__ import annotations

import pytest

from convertkit.errors import UsageError
from convertkit.platforms.cpu import OrtCpuPlatform
from convertkit.platforms.onnx import OnnxPlatform
from convertkit.registry import load_platforms, resolve_target, target_names
from convertkit.spec import TargetSpec


@pytest.mark.parametrize(
    ("text", "platform"),
    [("cpu", OrtCpuPlatform), ("cpu:ort", OrtCpuPlatform), ("cpu@arm64", OrtCpuPlatform),
     ("onnx", OnnxPlatform)],
)
def test_resolve_target(text, platform):
    assert resolve_target(TargetSpec.parse(text)) is platform


@pytest.mark.parametrize("text", ["cpux", "cpu:ortt", "onnx:ort"])
def test_resolve_target_rejects_unknown_targets_with_a_suggestion(text):
    with pytest.raises(UsageError) as caught:
        resolve_target(TargetSpec.parse(text))

    assert caught.value.exit_code == 2
    assert caught.value.code == "unknown-target"
    assert "did you mean" in caught.value.hint
    assert "convertkit targets" in caught.value.hint


def test_resolve_target_suggests_the_closest_name():
    with pytest.raises(UsageError) as caught:
        resolve_target(TargetSpec.parse("cpux"))

    assert "did you mean 'cpu'?" in caught.value.hint


def test_target_names_lists_the_built_in_targets():
    names = target_names()

    assert {"onnx", "cpu", "cpu:ort"} <= set(names)
    assert len(names) == len(set(names))


def test_platform_names_are_the_entry_point_names():
    platforms = load_platforms()

    assert platforms["ort"] is OrtCpuPlatform
    assert platforms["onnx"] is OnnxPlatform
    assert OrtCpuPlatform.name == "ort"
