"""Localisation on real models and runtimes: a transformers BERT exported by the dynamo
exporter (its node metadata maps back to the module and the source line), an OpenVINO
IR, and `convert` localising a failed artifact against the hub model."""

from __future__ import annotations

from pathlib import Path

import onnx

from tests.models.onnx_models import consumer_of, random_weight_model, scale_initializer
from tests.plugins import install_plugin, use_plugin

MODELS = "tests/models/torch_models.py"
BERT_INPUTS = ("-i", "input_ids:1x12:int64", "-i", "attention_mask:1x12:int64")
BERT_LAYER = "encoder.layer.1.attention.output.dense"


def _export_tiny_bert(folder: Path) -> Path:
    """The ONNX export the PyTorch adapter writes (dynamo exporter, node metadata kept)."""
    from convertkit.adapters import LowerRequest, lower
    from convertkit.options import ConvertOptions
    from convertkit.spec import SourceRef

    request = LowerRequest(SourceRef.parse(f"{MODELS}:tiny_bert"),
                           ConvertOptions.parse({"inputs": BERT_INPUTS[1::2]}), folder)
    return lower("pytorch", request, log_path=folder / "export.log").onnx_path


def _weight_of_layer(model_path: Path, layer: str) -> tuple[str, str]:
    """(MatMul node, weight initializer) of the Linear named ``layer``."""
    model = onnx.load(str(model_path))
    initializers = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        scopes = next((p.value for p in node.metadata_props
                       if p.key == "pkg.torch.onnx.name_scopes"), "")
        if node.op_type == "MatMul" and f"'{layer}'" in scopes:
            weight = next(name for name in node.input if name in initializers)
            return node.name, weight
    raise AssertionError(f"no MatMul of {layer} in {model_path}")


def test_a_perturbed_bert_layer_is_mapped_back_to_the_module_and_line(cli, tmp_path) -> None:
    export = _export_tiny_bert(tmp_path / "export")
    node_name, weight = _weight_of_layer(export, BERT_LAYER)
    perturbed = scale_initializer(export, tmp_path / "perturbed.onnx", weight, 1.5)

    # The reference is the PyTorch model itself: its outputs come from torch, its
    # intermediates from its own dynamo export.
    result = cli("check", f"{MODELS}:tiny_bert", str(perturbed), *BERT_INPUTS,
                 out=tmp_path / "out")

    assert result.exit_code == 1, result.stderr
    report = result.report
    assert report["source"]["framework"] == "pytorch"
    node = report["artifacts"][0]["localization"]["node"]
    assert node["name"] == node_name
    source = node["source"]
    assert source["layer"] == BERT_LAYER
    assert source["file"].endswith("modeling_bert.py") and source["line"] > 0
    assert f"layer `{BERT_LAYER}` (transformers/models/bert/modeling_bert.py:" in result.stdout
    assert (tmp_path / "out/reference/export.onnx").is_file()
    assert (tmp_path / "out/repro/candidate.onnx").is_file()


def _to_ir(onnx_path: Path, xml_path: Path) -> Path:
    import openvino as ov

    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return xml_path


def test_openvino_ir_is_checked_and_localised(cli, tmp_path) -> None:
    original = random_weight_model("light_squeezenet.onnx", tmp_path / "squeezenet.onnx")
    weight = "fire6/squeeze1x1_w_0"
    perturbed = scale_initializer(original, tmp_path / "perturbed.onnx", weight, 1.5)
    good_ir = _to_ir(original, tmp_path / "good.xml")
    bad_ir = _to_ir(perturbed, tmp_path / "bad.xml")

    same = cli("check", str(original), str(good_ir))
    different = cli("check", str(original), str(bad_ir), out=tmp_path / "out")

    assert same.exit_code == 0, same.stderr
    assert "openvino" in same.stdout
    assert different.exit_code == 1, different.stderr
    localization = different.report["artifacts"][0]["localization"]
    assert localization["node"]["name"] == consumer_of(original, weight).name
    assert localization["compared"] > 50
    repro = localization["repro"]
    assert repro["command"].split()[3].endswith("candidate.xml")
    # The IR's own weights are not in the ONNX subgraph: the repro says it does not
    # reproduce alone rather than claiming it does.
    assert repro["reproduced"] is False and repro["note"]


# A platform plug-in whose build is broken: cpu:ort's build with one weight scaled. The
# builds run in the worker process, so the plug-in is installed as a user would (a
# distribution on PYTHONPATH), not patched into this process.
BROKEN_ORT = """
import numpy, onnx
from onnx import numpy_helper
from convertkit.platforms.cpu import OrtCpuPlatform


class BrokenOrt(OrtCpuPlatform):
    name = "ortbroken"
    is_family_default = False

    def build(self, *args, **kwargs):
        artifact = super().build(*args, **kwargs)
        model = onnx.load(str(artifact.path))
        tensor = next(t for t in model.graph.initializer if t.name == {weight!r})
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * 1.5,
                                                tensor.name))
        onnx.save(model, str(artifact.path))
        return artifact
"""


def test_convert_localises_a_failed_artifact_against_the_hub(tmp_path, monkeypatch) -> None:
    import convertkit

    original = random_weight_model("light_squeezenet.onnx", tmp_path / "squeezenet.onnx")
    weight = "fire4/expand3x3_w_0"
    plugin = install_plugin(tmp_path / "plugin", "broken_ort", BROKEN_ORT.format(
        weight=weight), {"convertkit.platforms": "ortbroken = broken_ort:BrokenOrt"})
    out = tmp_path / "out"

    with use_plugin(plugin, monkeypatch):
        report = convertkit.convert(str(original), out, targets=["cpu:ortbroken"])

    assert report.exit_code == 1
    hub, cpu = report.artifacts
    assert hub.status.value == "pass" and hub.localization is None
    assert cpu.status.value == "fail"
    node = cpu.localization.node
    conv = consumer_of(original, weight)
    # cpu:ort fuses Conv+Relu: the Conv's own output exists on the hub side only, so the
    # first tensor both share is the Relu's, and the Conv is named with it.
    assert node.op_type == "Relu"
    assert node.fused_with == ((conv.name, "Conv"),)
    assert [name for name, _ in node.differing_constants] == [weight]
    assert cpu.localization.only_in_reference > 0
    assert cpu.localization.repro is not None and cpu.localization.repro.reproduced
    assert (out / "repro/cpu-ortbroken/command.sh").is_file()
    assert {"report.json", "report.html", "junit.xml"} <= {p.name for p in out.iterdir()}
    assert str(out / "repro/cpu-ortbroken/reference.onnx") in cpu.localization.repro.command
    # Every path names where the file is once OUT has landed, not the staging folder.
    assert (cpu.localization.reference, cpu.localization.candidate) == (
        "onnx/model.onnx", "cpu-ortbroken/model.onnx")
    for name in ("report.json", "report.html", "junit.xml"):
        assert ".partial-" not in (out / name).read_text(), name
