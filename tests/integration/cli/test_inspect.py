"""`convertkit inspect` and `convertkit targets --ops` on real models."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from convertkit.ir.info import iter_nodes

LIGHT_MODELS = Path(onnx.__file__).parent / "backend/test/data/light"
MODELS = "tests/models/torch_models.py"


def _census(model: onnx.ModelProto) -> dict[str, int]:
    return dict(Counter(n.op_type for n in iter_nodes(model.graph)))


def test_inspect_light_model_census_matches_the_graph(cli) -> None:
    path = LIGHT_MODELS / "light_inception_v2.onnx"

    result = cli("inspect", str(path), "--json")

    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert {o["op_type"]: o["count"] for o in report["ops"]} == _census(onnx.load(str(path)))
    assert report["opset"] == 9 and report["ir_version"] == 3
    assert report["inputs"] == [{"name": "data_0", "dims": [1, 3, 224, 224],
                                 "dtype": "float32"}]
    assert report["targets"]["onnx"]["verdict"] == "accepted"
    assert report["targets"]["cpu:ort"]["verdict"] == "accepted"


def test_inspect_lowers_a_transformers_model_first(cli) -> None:
    result = cli("inspect", f"{MODELS}:tiny_bert", "-i", "input_ids:batchx12:int64",
                 "-t", "cpu", "--json")

    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    census = {o["op_type"]: o["count"] for o in report["ops"]}
    assert census["LayerNormalization"] == 5  # embeddings + 2 per layer, 2 layers
    assert report["inputs"][0]["dims"] == ["batch", 12]
    assert sorted(report["targets"]) == ["cpu:openvino", "cpu:ort"]  # `cpu`: every candidate
    text = cli("inspect", f"{MODELS}:tiny_bert", "-i", "input_ids:batchx12:int64")
    assert "LayerNormalization" in text.stdout and "[batch, 12]" in text.stdout


def _image_decoder_model(path: Path) -> Path:
    """ImageDecoder is in the ONNX standard (opset 20) but ONNX Runtime has no CPU kernel."""
    graph = helper.make_graph(
        [helper.make_node("ImageDecoder", ["encoded"], ["image"], pixel_format="RGB")],
        "decode", [helper.make_tensor_value_info("encoded", TensorProto.UINT8, ["n"])],
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["h", "w", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_a_target_lacking_an_op_rejects_it_by_name(cli, tmp_path: Path) -> None:
    model = _image_decoder_model(tmp_path / "decoder.onnx")

    every = cli("inspect", str(model))
    named = cli("inspect", str(model), "-t", "cpu:ort")

    # Without -t every verdict is shown and only the ONNX model itself is judged.
    assert every.exit_code == 0
    lines = every.stdout.splitlines()
    assert any(line.strip().startswith("onnx") and "accepted" in line for line in lines)
    assert re.search(r"cpu:ort\s+rejected", every.stdout)
    assert named.exit_code == 3
    assert "ops not supported at opset 20: ImageDecoder" in named.stdout


def test_convert_of_a_model_with_an_op_no_runtime_has_exits_3_naming_it(cli, tmp_path: Path
                                                                       ) -> None:
    model = _image_decoder_model(tmp_path / "decoder.onnx")

    result = cli("convert", str(model), "-t", "cpu:ort", "--data", str(_encoded(tmp_path)),
                 out=tmp_path / "out")

    assert result.exit_code == 3, result.stderr
    assert "ImageDecoder" in result.stderr
    assert result.report["status"] == "error"


def _encoded(tmp_path: Path) -> Path:
    import numpy as np

    np.savez(tmp_path / "data.npz", encoded=np.zeros(4, dtype=np.uint8))
    return tmp_path / "data.npz"


def test_impossible_opset_conversion_is_a_preflight_verdict(cli, tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("LayerNormalization", ["x", "scale"], ["y"], axis=-1)], "ln",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor("scale", TensorProto.FLOAT, [4], [1.0] * 4)])
    path = tmp_path / "ln.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))

    inspected = cli("inspect", str(path), "--opset", "13")
    converted = cli("convert", str(path), "--opset", "13", out=tmp_path / "out")

    assert inspected.exit_code == 3
    assert "LayerNormalization: first defined in opset 17" in inspected.stdout
    assert converted.exit_code == 3
    assert "LayerNormalization: first defined in opset 17" in converted.stderr
    assert "Traceback" not in converted.stderr


def test_targets_ops_prints_the_op_table(cli) -> None:
    result = cli("targets", "--ops", "cpu:ort")

    assert result.exit_code == 0
    assert "kernel registry" in result.stdout
    conv = next(line for line in result.stdout.splitlines() if line.split()[1:2] == ["Conv"])
    assert conv.startswith("ai.onnx") and "+" in conv
    assert "ImageDecoder" not in result.stdout
