"""gpu:tensorrt: an engine where a builder can build it, else the prepared ONNX model and
the trtexec command (status `prepared`). No GPU here: an engine is `built`, never `pass`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import onnx
from onnx import TensorProto

from convertkit.platforms.gpu import TensorRtPlatform
from convertkit.platforms.tensorrt_engine import find_builder
from convertkit.spec import TargetSpec
from tests.models.onnx_models import conv_relu_model


def test_without_a_builder_for_the_gpu_it_writes_the_trtexec_bundle(cli, tmp_path: Path) -> None:
    # sm90 (H100): tensorrt_rtx cannot build for it, and tensorrt needs that GPU present.
    expected = "prepared" if find_builder(90).module is None else "built"

    result = cli("convert", str(conv_relu_model(tmp_path / "conv.onnx")), "-t", "gpu:tensorrt@sm90",
                 out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    artifact = next(a for a in result.report["artifacts"] if a["target"] == "gpu:tensorrt@sm90")
    assert artifact["status"] == expected
    folder = tmp_path / "out/gpu-tensorrt-sm90"
    script = (folder / "trtexec.sh").read_text()
    assert ("trtexec --onnx=model.onnx --saveEngine=model.engine --stronglyTyped \"$@\""
            in script.splitlines())
    model = onnx.load(str(folder / "model.onnx"))
    assert {t.data_type for t in model.graph.initializer} == {TensorProto.FLOAT16}
    if expected == "prepared":
        assert artifact["path"] == "gpu-tensorrt-sm90/model.onnx"
        assert any("trtexec.sh" in note for note in artifact["notes"])


def test_tensorrt_rtx_builds_ahead_of_time_and_reports_built(cli, tmp_path: Path) -> None:
    has_rtx = importlib.util.find_spec("tensorrt_rtx") is not None

    result = cli("convert", str(conv_relu_model(tmp_path / "conv.onnx")), "-t", "gpu:tensorrt@sm89",
                 out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    artifact = next(a for a in result.report["artifacts"] if a["target"] == "gpu:tensorrt@sm89")
    engine = tmp_path / "out/gpu-tensorrt-sm89/model.engine"
    if has_rtx:
        assert artifact["status"] == "built"  # never `pass`: no GPU ran it
        assert engine.stat().st_size > 10_000
        assert any("ahead of time for sm89" in note for note in artifact["notes"])
    else:
        assert artifact["status"] == "prepared" and not engine.exists()


def test_a_device_that_is_not_a_compute_capability_is_refused() -> None:
    problems = TensorRtPlatform().preflight(None, TargetSpec("gpu", "tensorrt", "h100"))

    assert len(problems) == 1 and "smNN" in problems[0].message
