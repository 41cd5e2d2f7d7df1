"""The ONNX hub inside `convert`: optimisation, opset conversion, shape fixing, big models."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import convertkit
from convertkit.checker.samples import load_samples
from convertkit.ir import optimize as optimize_module
from tests.plugins import install_plugin, use_plugin

LIGHT_MODELS = Path(onnx.__file__).parent / "backend/test/data/light"


def test_optimisation_drops_nodes_and_is_checked(cli, tmp_path: Path) -> None:
    result = cli("convert", str(LIGHT_MODELS / "light_squeezenet.onnx"), out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    optimization = result.report["source"]["onnx"]["optimization"]
    assert optimization["nodes_after"] < optimization["nodes_before"] == 105
    hub = onnx.load(str(tmp_path / "out/onnx/model.onnx"))
    assert len(hub.graph.node) == optimization["nodes_after"]
    assert result.report["artifacts"][0]["status"] == "pass"


def test_no_optimize_keeps_the_exported_graph(cli, tmp_path: Path) -> None:
    result = cli("convert", str(LIGHT_MODELS / "light_squeezenet.onnx"), "--no-optimize",
                 out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    assert result.report["source"]["onnx"]["optimization"] is None
    assert len(onnx.load(str(tmp_path / "out/onnx/model.onnx")).graph.node) == 105


def _scale_first_initializer(model: onnx.ModelProto) -> onnx.ModelProto:
    """A broken 'optimisation': doubles the largest weight."""
    largest = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    largest.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(largest) * 2, largest.name))
    return model


def test_an_optimisation_that_changes_results_is_a_failed_check(tmp_path: Path,
                                                                monkeypatch) -> None:
    """The worker's hub and check steps, run in this process with a broken pass added
    (no pass convertkit ships is known to change results): the hub fails its check, and
    the note blames the optimisation, since the export as written passes."""
    from convertkit.build_steps import (
        HUB_MODEL,
        BuildContext,
        build_and_check_step,
        build_hub_step,
    )
    from convertkit.options import ConvertOptions
    from convertkit.platforms import BuildOptions
    from convertkit.records import decode
    from convertkit.spec import InputSpec

    model = _dynamic_cnn(tmp_path / "m.onnx")
    recorded = convertkit.convert(str(model), tmp_path / "recorded", inputs=["x:2x3x8x8"],
                                  optimize=False)  # its check inputs and reference outputs
    assert recorded.exit_code == 0
    staging = tmp_path / "staging"
    (staging / ".work").mkdir(parents=True)
    shutil.copy(model, staging / ".work/lowered.onnx")
    exported = staging / ".work/exported.onnx"
    monkeypatch.setattr(optimize_module, "PASSES",
                        [*optimize_module.PASSES, ("broken test pass", _scale_first_initializer)])

    hub = build_hub_step({"staging": str(staging), "lowered": str(staging / ".work/lowered.onnx"),
                          "exported": str(exported), "opset": None, "optimize": True})
    context = BuildContext(staging, (InputSpec.parse("x:2x3x8x8"),),
                           tmp_path / "recorded/check/inputs.npz",
                           tmp_path / "recorded/check/reference.npz", None, ConvertOptions(),
                           BuildOptions(), {})
    result = decode(build_and_check_step({
        "context": context.to_payload(), "target": "onnx", "platform": "onnx",
        "precision": "fp32", "out_dir": str(staging / HUB_MODEL.parent),
        "exported": str(exported), "localize_in": None}))

    assert "broken test pass" in str(hub["hub"])
    assert result.status == "fail"
    assert any("graph optimisation changed the results" in n for n in result.notes)


def test_opset_down_conversion_of_a_real_model_is_checked(cli, tmp_path: Path) -> None:
    up = cli("convert", str(LIGHT_MODELS / "light_inception_v1.onnx"), "--opset", "17",
             "--no-optimize", out=tmp_path / "at17")
    at17 = tmp_path / "model17.onnx"
    shutil.copy(tmp_path / "at17/onnx/model.onnx", at17)

    down = cli("convert", str(at17), "--opset", "13", "-t", "cpu:ort", out=tmp_path / "at13")

    assert up.exit_code == 0, up.stderr
    assert up.report["source"]["onnx"]["opset"] == 17
    assert down.exit_code == 0, down.stderr
    assert down.report["source"]["onnx"]["opset"] == 13
    assert "opset converted from 17 to 13" in down.report["source"]["notes"]
    assert [a["status"] for a in down.report["artifacts"]] == ["pass", "pass"]


# Stands for an NPU toolchain's demands (static shapes, an old opset) while running on
# ONNX Runtime, so the prepared model is really checked; a plug-in, as builds run in the
# worker process.
STATIC_OPSET13 = """
from typing import ClassVar
from convertkit.ir.preflight import OrtKernelOps, Requirements
from convertkit.platforms.cpu import OrtCpuPlatform


class StaticOpset13Cpu(OrtCpuPlatform):
    name: ClassVar[str] = "static13"
    is_family_default: ClassVar[bool] = False
    requirements: ClassVar[Requirements] = Requirements(
        ops=OrtKernelOps(), max_opset=13, static_shapes=True, source="test")
"""


def _dynamic_cnn(path: Path) -> Path:
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])],
        "dyn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 8, 8])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _static_platform(folder: Path) -> Path:
    return install_plugin(folder, "static13_plugin", STATIC_OPSET13, {
        "convertkit.platforms": "static13 = static13_plugin:StaticOpset13Cpu"})


def test_static_shape_target_gets_a_fixed_and_converted_model(tmp_path: Path,
                                                              monkeypatch) -> None:
    with use_plugin(_static_platform(tmp_path / "plugin"), monkeypatch):
        report = convertkit.convert(str(_dynamic_cnn(tmp_path / "m.onnx")), tmp_path / "out",
                                    inputs=["x:2x3x8x8"], targets=["cpu:static13"])

    assert report.exit_code == 0
    artifact = report.artifacts[1]
    assert artifact.status == "pass"
    assert "prepared: convert opset 17 -> 13" in artifact.notes
    assert any(n.startswith("prepared: fix dynamic input dims") for n in artifact.notes)
    # The artifact is built from the prepared model (which is then removed).
    assert not (tmp_path / "out/cpu-static13/prepared.onnx").exists()
    prepared = onnx.load(str(tmp_path / "out/cpu-static13/model.onnx"))
    assert next(o.version for o in prepared.opset_import if o.domain in ("", "ai.onnx")) == 13
    assert [d.dim_value for d in prepared.graph.input[0].type.tensor_type.shape.dim] == [
        2, 3, 8, 8]


def test_static_shape_target_without_concrete_dims_is_rejected(tmp_path: Path,
                                                               monkeypatch) -> None:
    with use_plugin(_static_platform(tmp_path / "plugin"), monkeypatch):
        report = convertkit.convert(str(_dynamic_cnn(tmp_path / "m.onnx")), tmp_path / "out",
                                    targets=["cpu:static13"])

    assert report.exit_code == 3
    assert "needs static shapes: pass -i x:" in report.artifacts[1].error["message"]


BIG_ROWS = 524_800  # x 1024 float32 = 2.15 GB, past protobuf's 2 GB limit


@pytest.mark.slow
def test_model_over_2gb_keeps_external_data_at_every_step(cli, tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    if free < 16 * 2**30:
        pytest.skip(f"needs 16 GB free disk for a 2.15 GB model and its copies, has "
                    f"{free / 2**30:.1f} GB")
    # protobuf cannot hold a 2 GB tensor in one message: write the weights as external
    # data directly, as exporters of large models do.
    table = np.ones((BIG_ROWS, 1024), dtype=np.float32)
    table[:, 0] = np.arange(BIG_ROWS, dtype=np.float32)
    table.tofile(tmp_path / "big.weights")
    del table
    tensor = onnx.TensorProto(name="table", data_type=TensorProto.FLOAT, dims=[BIG_ROWS, 1024],
                              data_location=onnx.TensorProto.EXTERNAL)
    tensor.external_data.add(key="location", value="big.weights")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0)], "big",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [4, 1024])], [tensor])
    source = tmp_path / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              str(source))

    result = cli("convert", str(source), "-t", "cpu:ort", out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    for folder in ("onnx", "cpu-ort"):
        assert (tmp_path / f"out/{folder}/model.onnx.data").stat().st_size > 2**31
        assert (tmp_path / f"out/{folder}/model.onnx").stat().st_size < 2**20
    ids = load_samples(tmp_path / "out/check/inputs.npz")[0]["ids"]
    assert ids.max() > 1000  # drawn from the whole table
    rows = load_samples(tmp_path / "out/check/reference.npz")[0]["rows"]
    np.testing.assert_array_equal(rows[:, 0], ids.astype(np.float32))  # the real weights
    assert [a["status"] for a in result.report["artifacts"]] == ["pass", "pass"]
    assert (tmp_path / "big.weights").stat().st_size > 2**31  # the user's file is intact
