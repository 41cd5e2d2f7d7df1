"""ONNX sources: real models from the onnx package pass through to every CPU target."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

LIGHT_MODELS = Path(onnx.__file__).parent / "backend/test/data/light"


@pytest.mark.parametrize("name", ["light_resnet50", "light_squeezenet", "light_inception_v2"])
def test_onnx_light_models_pass_through_to_cpu(cli, tmp_path: Path, name: str) -> None:
    result = cli("convert", str(LIGHT_MODELS / f"{name}.onnx"), "-t", "cpu:ort",
                 out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    report = result.report
    assert report["source"]["framework"] == "onnx"
    assert [a["status"] for a in report["artifacts"]] == ["pass", "pass"]
    optimized = onnx.load(str(tmp_path / "out/cpu-ort/model.onnx"))
    original = onnx.load(str(LIGHT_MODELS / f"{name}.onnx"))
    assert len(optimized.graph.node) < len(original.graph.node)  # ORT really optimised it
