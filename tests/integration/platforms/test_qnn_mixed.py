"""npu:qnn mixed precision (issue 18): the outlier digits CNN of
tests/integration/test_mixed_precision.py, quantised to QDQ by onnxruntime.quantization's
QNN configuration, compiled to a QNN HTP context binary and checked in the HTP simulator
with CPU fallback disabled. Pure int8 runs near chance; the retry leaves the few nodes
around the outlier out of QDQ (nodes_to_exclude), the HTP computes them in fp16, and the
model passes on the held-out images."""

from __future__ import annotations

import json

import pytest

from convertkit.errors import ConversionError
from convertkit.platforms import BuildOptions
from convertkit.platforms.npu.qnn import QnnPlatform
from convertkit.spec import Precision, TargetSpec
from tests.integration.platforms.test_qnn import qnn_toolchain  # noqa: F401 (fixture)
from tests.integration.test_mixed_precision import QUANTISABLE_NODES, _convert, outlier  # noqa: F401

TARGET = "npu:qnn"


def test_int8_broken_by_an_outlier_passes_with_a_few_nodes_in_fp16(
        qnn_toolchain: None, cli, outlier, tmp_path) -> None:  # noqa: F811
    pure = _convert(cli, outlier, TARGET, tmp_path / "pure", "--no-mixed-precision")
    mixed = _convert(cli, outlier, TARGET, tmp_path / "mixed")

    assert pure.exit_code == 1, pure.stderr
    (pure_int8,) = [a for a in pure.report["artifacts"] if a["target"] == TARGET]
    assert pure_int8["status"] == "fail" and pure_int8["mixed_precision"] is None
    assert pure_int8["accuracy"]["drop"] > 10

    assert mixed.exit_code == 0, mixed.stdout + mixed.stderr
    (artifact,) = [a for a in mixed.report["artifacts"] if a["target"] == TARGET]
    assert artifact["status"] == "pass" and artifact["precision"] == "int8"
    accuracy = artifact["accuracy"]  # the 250 held-out images calibration never saw
    assert accuracy["rows"] == 250 and accuracy["drop"] <= 1.0
    record = artifact["mixed_precision"]
    kept = [node["name"] for node in record["kept"]]
    assert record["quantisable_nodes"] == QUANTISABLE_NODES
    assert 0 < len(kept) <= QUANTISABLE_NODES // 4
    assert record["kept_in"] == "fp16" and " nodes in fp16 " in record["summary"]
    override = json.loads((tmp_path / "mixed" / record["override_file"]).read_text())
    assert [node["name"] for node in override["kept"]] == kept
    qnn = override["override"]["qnn"]
    assert qnn["nodes_to_exclude"] == kept and qnn["htp_fp16"] is True
    folder = tmp_path / "mixed" / "npu-qnn"
    settings = json.loads((folder / "qnn.json").read_text())
    assert settings["htp_fp16"] is True and settings["keep_fp32"] == kept
    assert settings["cpu_fallback"] is False
    assert (folder / "model_ctx.onnx").is_file()
    assert any("left out of QDQ (nodes_to_exclude)" in note for note in artifact["notes"])


def test_an_soc_without_fp16_refuses_to_keep_nodes(qnn_toolchain: None,  # noqa: F811
                                                   tmp_path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")  # refused before the model is read
    options = BuildOptions(precision=Precision.INT8, keep_fp32=("conv1",))
    with pytest.raises(ConversionError, match="cannot keep nodes in higher precision"):
        QnnPlatform().build(model, TargetSpec.parse("npu:qnn@sm8350"), tmp_path / "out",
                            options)
