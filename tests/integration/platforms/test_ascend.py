"""npu:ascend: Huawei CANN/ATC is not installable here, so the build prepares an ATC-ready
ONNX model (static shapes, opset 9-18, IR version 8, only listed operators) and the atc
command (status `prepared`). Where `atc` is on PATH the .om is built (status `built`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnx
import pytest

from convertkit.platforms.npu.ascend import AscendPlatform, soc_version
from convertkit.spec import TargetSpec
from tests.models.onnx_models import conv_relu_model, random_weight_model

HAS_ATC = shutil.which("atc") is not None
EXPECTED = "built" if HAS_ATC else "prepared"


@pytest.fixture(scope="module")
def squeezenet(tmp_path_factory) -> Path:
    """The onnx package's SqueezeNet (opset 9, IR 3, input data_0 1x3x224x224)."""
    return random_weight_model("light_squeezenet.onnx",
                               tmp_path_factory.mktemp("ascend") / "squeezenet.onnx")



def _artifact(result, target: str) -> dict:
    return next(a for a in result.report["artifacts"] if a["target"] == target)


def test_prepares_the_atc_ready_model_and_the_atc_command(cli, squeezenet: Path,
                                                          tmp_path: Path) -> None:
    result = cli("convert", str(squeezenet), "-t", "npu:ascend@310P3", out=tmp_path / "out")

    # `prepared` is not a failure: the hub model passed its check and nothing else ran.
    assert result.exit_code == 0, result.stderr
    artifact = _artifact(result, "npu:ascend@310p3")
    assert artifact["status"] == EXPECTED and artifact["precision"] == "fp16"
    assert result.report["status"] == "pass"
    assert any(line.split()[:2] == ["npu:ascend@310p3", EXPECTED]
               for line in result.stdout.splitlines())
    folder = tmp_path / "out/npu-ascend-310p3"
    script = folder / "atc.sh"
    command = ("atc --model=model.onnx --framework=5 --output=model --soc_version=Ascend310P3 "
               "--input_shape=data_0:1,3,224,224 --precision_mode=force_fp16 \"$@\"")
    assert command in script.read_text().splitlines()
    assert os.access(script, os.X_OK)
    assert any("atc.sh" in note and "--soc_version=Ascend310P3" in note
               for note in artifact["notes"])
    model = onnx.load(str(folder / "model.onnx"))
    assert model.ir_version <= 8  # ATC reads ONNX 1.12 models (IR version 8)
    assert 9 <= model.opset_import[0].version <= 18
    if not HAS_ATC:
        assert artifact["path"] == "npu-ascend-310p3/model.onnx"
        assert any("not installed here" in note for note in artifact["notes"])
        assert not (folder / "model.om").exists()


def test_fp32_keeps_the_origin_dtype_and_dynamic_dims_come_from_i(cli, tmp_path: Path) -> None:
    model = conv_relu_model(tmp_path / "dynamic.onnx", batch="batch")

    result = cli("convert", str(model), "-t", "npu:ascend@ascend910b2", "-i", "x:4x3x16x16",
                 "--precision", "fp32", out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    artifact = _artifact(result, "npu:ascend@ascend910b2")
    assert artifact["status"] == EXPECTED and artifact["precision"] == "fp32"
    assert any(n.startswith("prepared: fix dynamic input dims") for n in artifact["notes"])
    folder = tmp_path / "out/npu-ascend-ascend910b2"
    script = (folder / "atc.sh").read_text()
    assert "--soc_version=Ascend910B2" in script
    assert "--input_shape=x:4,3,16,16" in script
    assert "--precision_mode=must_keep_origin_dtype" in script
    prepared = onnx.load(str(folder / "model.onnx"))
    assert prepared.ir_version == 8  # written as IR 10 by onnx 1.17
    assert any("IR version 10 -> 8" in note for note in artifact["notes"])
    dims = [d.dim_value for d in prepared.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [4, 3, 16, 16]


def test_an_op_outside_the_atc_list_is_rejected_by_name(cli, tmp_path: Path) -> None:
    # Mish (opset 18) is an ONNX op ATC's list does not name; ONNX Runtime runs it.
    model = conv_relu_model(tmp_path / "mish.onnx", extra_op="Mish", opset=18)

    result = cli("convert", str(model), "-t", "npu:ascend", out=tmp_path / "out")

    assert result.exit_code == 3, result.stderr
    artifact = _artifact(result, "npu:ascend")
    assert artifact["status"] == "error"
    assert "ops not supported at opset 18: Mish" in artifact["error"]["message"]
    assert "Mish" in result.stderr and "Conv" not in artifact["error"]["message"]
    assert not (tmp_path / "out/npu-ascend/atc.sh").exists()


def test_a_dynamic_input_without_i_is_refused_naming_i(cli, tmp_path: Path) -> None:
    model = conv_relu_model(tmp_path / "dynamic.onnx", batch="batch")

    result = cli("convert", str(model), "-t", "npu:ascend@310p3", out=tmp_path / "out")

    assert result.exit_code == 3, result.stderr
    message = _artifact(result, "npu:ascend@310p3")["error"]["message"]
    assert "input x has dynamic dims" in message and "pass -i x:<numbers>" in message


def test_inspect_shows_the_verdict(cli, tmp_path: Path) -> None:
    rejected = cli("inspect", str(conv_relu_model(tmp_path / "mish.onnx", extra_op="Mish",
                                              opset=18)), "-t", "npu:ascend")
    accepted = cli("inspect", str(conv_relu_model(tmp_path / "dynamic.onnx", batch="batch")),
                   "-t", "npu:ascend@310b4", "-i", "x:1x3x16x16")

    assert rejected.exit_code == 3
    assert "npu:ascend  rejected" in rejected.stdout and "Mish" in rejected.stdout
    assert accepted.exit_code == 0, accepted.stderr
    assert "accepted after preparation" in accepted.stdout
    assert "fix dynamic input dims from -i: x -> 1x3x16x16" in accepted.stdout


def test_int8_is_refused_as_usage(cli, tmp_path: Path) -> None:
    result = cli("convert", str(conv_relu_model(tmp_path / "conv.onnx")), "-t", "npu:ascend",
                 "--precision", "int8", out=tmp_path / "out")

    assert result.exit_code == 2
    assert "does not build int8" in result.stderr


def test_soc_names_and_the_op_table() -> None:
    platform = AscendPlatform()
    ops = platform.requirements.ops

    assert soc_version("310p3") == "Ascend310P3" == soc_version("ASCEND310P3")
    assert soc_version("910_9391") == "Ascend910_9391"
    assert soc_version("310x") is None
    (problem,) = platform.preflight(None, TargetSpec("npu", "ascend", "310x"))
    assert "unknown Ascend SoC '310x'" in problem.message and "Ascend310P3" in problem.message
    assert platform.preflight(None, TargetSpec("npu", "ascend")) == []
    assert ops.supports("", "Conv", 17) and ops.supports("ai.onnx", "ArgMax", 13)
    assert not ops.supports("", "Conv", 19)  # beyond ATC's opsets
    # Listed for opsets 17-18 only (its per-operator page).
    assert not ops.supports("", "LayerNormalization", 16)
    assert ops.supports("", "LayerNormalization", 17)
    assert not ops.supports("", "QuantizeLinear", 13)
    assert not ops.supports("com.microsoft", "FusedConv", 1)
    assert "CANN 8.0.0" in ops.source and "hiascend.com" in ops.source
    assert platform.requirements.opset_range() == (9, 18)
    assert platform.requirements.static_shapes


@pytest.mark.skipif(HAS_ATC, reason="atc is installed here")
def test_targets_says_ascend_prepares_without_atc(cli) -> None:
    result = cli("targets")

    row = next(line for line in result.stdout.splitlines() if line.startswith("npu:ascend"))
    assert row.split()[1] == "prepares"
