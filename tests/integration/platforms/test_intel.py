"""npu:intel: a static-shape OpenVINO IR for the Intel NPU and the command that compiles
it there. No NPU here: the status is `prepared` (it would be checked where OpenVINO lists
an NPU device)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from convertkit.checker.budgets import budget_for
from convertkit.checker.metrics import compare_outputs
from convertkit.ir.runtime import open_session, run_session, session_options
from convertkit.platforms.npu.intel import IntelNpuPlatform, npu_present
from convertkit.spec import Precision, TargetSpec
from tests.models.onnx_models import conv_relu_model

EXPECTED = ("pass",) if npu_present() else ("prepared",)



@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, dict, object]:
    """`convert MODEL -t npu:intel -i x:2x3x16x16` of a model with a dynamic batch."""
    from tests.conftest import run_cli

    folder = tmp_path_factory.mktemp("intel")
    model = conv_relu_model(folder / "dynamic.onnx", batch="batch")
    result = run_cli("convert", str(model), "-t", "npu:intel", "-i", "x:2x3x16x16",
                     out=folder / "out")
    return model, result.report, result


def test_the_ir_has_static_shapes_and_the_compile_command(converted) -> None:
    _, report, result = converted

    assert result.exit_code == 0, result.stderr
    artifact = next(a for a in report["artifacts"] if a["target"] == "npu:intel")
    assert artifact["status"] in EXPECTED and artifact["precision"] == "fp16"
    assert artifact["path"] == "npu-intel/model.xml"
    assert any(line.split()[:2] == ["npu:intel", artifact["status"]]
               for line in result.stdout.splitlines())
    folder = result.out / "npu-intel"
    xml = (folder / "model.xml").read_text()
    parameter = re.search(r'<layer [^>]*type="Parameter".*?</layer>', xml, re.S).group(0)
    assert re.findall(r"<dim>([^<]*)</dim>", parameter) == ["2", "3", "16", "16"]
    assert 'shape="2,3,16,16"' in parameter
    assert "<dim>-1</dim>" not in xml and "?" not in re.findall(r'shape="[^"]*"', xml)
    assert 'element_type="f16"' in xml  # weights stored in fp16 for the NPU
    script = folder / "compile_npu.sh"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert 'compile_model("model.xml", sys.argv[1]).export_model(blob)' in text
    assert '"${1:-NPU}"' in text and "benchmark_app -m model.xml -d NPU" in text
    assert any("compile_npu.sh" in note and "NPU" in note for note in artifact["notes"])
    if artifact["status"] == "prepared":
        assert any("no Intel NPU here" in note for note in artifact["notes"])


def test_the_compile_command_works_and_the_ir_computes_the_model(converted) -> None:
    """compile_npu.sh run as written with the device swapped for the CPU (the only one
    here) exports a blob that imports and runs; the IR, at the f32 hint (the CPU's default
    is bf16), computes what the ONNX model computes within the fp16 budget. A check of the
    IR and of the command, not of the NPU."""
    import openvino as ov

    model, _, result = converted
    folder = result.out / "npu-intel"
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 3, 16, 16), dtype=np.float32)}
    done = subprocess.run(["sh", str(folder / "compile_npu.sh"), "CPU"], capture_output=True,
                          text=True, env=dict(os.environ, PYTHON=sys.executable), timeout=300)
    assert done.returncode == 0, done.stderr
    core = ov.Core()
    try:
        imported = core.import_model((folder / "model.blob").read_bytes(), "CPU")
        assert np.asarray(imported(feeds)[0]).shape == (2, 8, 16, 16)
    finally:
        (folder / "model.blob").unlink(missing_ok=True)
    compiled = core.compile_model(str(folder / "model.xml"), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    metrics = compare_outputs({"y": np.asarray(compiled(feeds)[0])},
                              run_session(open_session(model, session_options()), feeds),
                              budget_for(Precision.FP16))
    assert all(m.within_budget for m in metrics), metrics


def test_int8_quantises_with_nncf(cli, tmp_path: Path) -> None:
    result = cli("convert", str(conv_relu_model(tmp_path / "conv.onnx", batch=1)), "-t",
                 "npu:intel", "--precision", "int8", out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    artifact = next(a for a in result.report["artifacts"] if a["target"] == "npu:intel")
    assert artifact["status"] in EXPECTED and artifact["precision"] == "int8"
    xml = (tmp_path / "out/npu-intel/model.xml").read_text()
    assert "FakeQuantize" in xml or "FakeConvert" in xml
    assert any("NNCF" in note for note in artifact["notes"])


def test_a_dynamic_input_without_i_is_refused_naming_i(cli, tmp_path: Path) -> None:
    model = conv_relu_model(tmp_path / "dynamic.onnx", batch="batch")

    result = cli("convert", str(model), "-t", "npu:intel", out=tmp_path / "out")

    assert result.exit_code == 3
    artifact = next(a for a in result.report["artifacts"] if a["target"] == "npu:intel")
    assert "pass -i x:<numbers>" in artifact["error"]["message"]


def test_a_device_is_refused() -> None:
    (problem,) = IntelNpuPlatform().preflight(None, TargetSpec("npu", "intel", "3720"))

    assert "takes no device" in problem.message
    assert IntelNpuPlatform().preflight(None, TargetSpec("npu", "intel")) == []


def test_preflight_names_an_op_openvino_cannot_convert(cli, tmp_path: Path) -> None:
    # Det has no converter in OpenVINO's ONNX frontend (the cpu:openvino probe finds it).
    graph = helper.make_graph(
        [helper.make_node("Det", ["x"], ["d"]), helper.make_node("Relu", ["d"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    model = tmp_path / "det.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))

    result = cli("inspect", str(model), "-t", "npu:intel")

    assert result.exit_code == 3
    assert "npu:intel  rejected" in result.stdout
    assert "ops not supported at opset 17: Det" in result.stdout
