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
from tests.integration.test_mixed_precision import (  # noqa: F401 (fixture)
    outlier,
    pure_fails_and_mixed_passes,
)

TARGET = "npu:qnn"


def test_int8_broken_by_an_outlier_passes_with_a_few_nodes_in_fp16(
        qnn_toolchain: None, cli, outlier, tmp_path) -> None:  # noqa: F811
    artifact, kept = pure_fails_and_mixed_passes(cli, outlier, TARGET, tmp_path, "fp16")
    record = artifact["mixed_precision"]
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
