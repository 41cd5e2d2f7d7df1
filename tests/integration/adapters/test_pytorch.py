"""The PyTorch adapter end to end through the CLI, on real models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convertkit.checker.samples import load_samples

MODELS = "tests/models/torch_models.py"


def _outputs(report: dict, target: str = "onnx") -> dict:
    artifact = next(a for a in report["artifacts"] if a["target"] == target)
    return artifact["metrics"]


def test_small_cnn_passes_onnx_and_cpu(cli, tmp_path: Path) -> None:
    result = cli("convert", f"{MODELS}:small_cnn", "-i", "x:batchx3x16x16", "-t", "cpu:ort",
                 out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    report = result.report
    assert report["status"] == "pass"
    assert [a["target"] for a in report["artifacts"]] == ["onnx", "cpu:ort"]
    assert all(a["status"] == "pass" for a in report["artifacts"])
    assert report["source"]["exporter"] == "torch.onnx (dynamo)"
    assert report["source"]["inputs"][0]["dims"] == ["batch", 3, 16, 16]
    assert (tmp_path / "out/cpu-ort/model.onnx").is_file()
    assert (tmp_path / "out/cpu-ort/session.json").is_file()
    assert _outputs(report, "cpu:ort")["output"]["max_abs"] < 1e-4
    assert "cpu:ort" in result.stdout and "pass" in result.stdout


def test_tiny_bert_token_ids_stay_inside_the_embedding_table(cli, tmp_path: Path) -> None:
    result = cli("convert", f"{MODELS}:tiny_bert", "-i", "input_ids:1x12:int64",
                 "-i", "attention_mask:1x12:int64", out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    outputs = _outputs(result.report)
    assert set(outputs) == {"last_hidden_state", "pooler_output"}
    feeds = load_samples(tmp_path / "out/check/inputs.npz")
    ids = np.stack([sample["input_ids"] for sample in feeds])
    assert ids.dtype == np.int64 and ids.max() < 1000
    assert ids.max() > 1  # drawn from the whole table, not from the [0, 2) default


def test_dict_and_tuple_outputs_get_stable_names(cli, tmp_path: Path) -> None:
    result = cli("convert", f"{MODELS}:dict_outputs", "-i", "x:2x8", "-i", "y:2x4",
                 "-t", "cpu:ort", out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    assert result.report["source"]["outputs"] == ["scores", "parts.0", "parts.1"]
    assert set(_outputs(result.report, "cpu:ort")) == {"scores", "parts.0", "parts.1"}


def test_hf_model_output_classifier(cli, tmp_path: Path) -> None:
    result = cli("convert", f"{MODELS}:tiny_bert_classifier", "-i", "input_ids:2x8:int64",
                 out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    assert result.report["source"]["outputs"] == ["logits"]


def test_torchscript_file(cli, tmp_path: Path) -> None:
    import torch

    from tests.models.torch_models import small_cnn

    scripted = torch.jit.trace(small_cnn().eval(), torch.randn(1, 3, 16, 16))
    torch.jit.save(scripted, str(tmp_path / "model.pt"))

    result = cli("convert", str(tmp_path / "model.pt"), "-i", "x:1x3x16x16", "-t", "cpu:ort",
                 out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    assert result.report["source"]["framework"] == "pytorch"
    assert all(a["status"] == "pass" for a in result.report["artifacts"])


def test_exported_program_reads_its_own_input_shapes(cli, tmp_path: Path) -> None:
    import torch

    from tests.models.torch_models import small_cnn

    program = torch.export.export(small_cnn().eval(), (torch.randn(2, 3, 16, 16),))
    torch.export.save(program, str(tmp_path / "model.pt2"))

    result = cli("convert", str(tmp_path / "model.pt2"), out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    assert result.report["source"]["inputs"] == [
        {"name": "x", "dims": [2, 3, 16, 16], "dtype": "float32"}]


def test_factory_with_state_dict_weights(cli, tmp_path: Path) -> None:
    import torch

    from tests.models.torch_models import small_cnn

    trained = small_cnn()
    torch.manual_seed(1)
    for parameter in trained.parameters():
        parameter.data.normal_()
    torch.save(trained.state_dict(), tmp_path / "weights.pth")

    result = cli("convert", f"{MODELS}:small_cnn", "-i", "x:1x3x16x16",
                 "--weights", str(tmp_path / "weights.pth"), out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    references = load_samples(tmp_path / "out/check/reference.npz")
    for feeds, reference in zip(load_samples(tmp_path / "out/check/inputs.npz"), references,
                                strict=True):
        expected = trained.eval()(torch.from_numpy(feeds["x"])).detach().numpy()
        np.testing.assert_allclose(reference["output"], expected, rtol=1e-5, atol=1e-5)


def test_random_op_model_fails_the_check(cli, tmp_path: Path) -> None:
    result = cli("convert", f"{MODELS}:NoisyModel", "-i", "x:4x16", out=tmp_path / "out")

    assert result.exit_code == 1
    report = result.report
    assert report["status"] == "fail"
    metric = _outputs(report)["output"]
    assert metric["within_budget"] is False and metric["max_abs"] > 1e-3


def test_unsupported_operator_in_both_exporters_exits_3(cli, tmp_path: Path) -> None:
    result = cli("convert", f"{MODELS}:SvdModel", "-i", "x:4x4", out=tmp_path / "out")

    assert result.exit_code == 3
    assert "linalg_svd" in result.stderr
    assert "dynamo:" in result.stderr and "torchscript:" in result.stderr
    assert result.report["status"] == "error"
    assert result.report["error"]["code"] == "unsupported-op"


def test_sys_exit_inside_the_exporter_is_exit_3_not_a_dead_cli(cli, tmp_path: Path) -> None:
    result = cli("convert", f"{MODELS}:ExitsDuringExport", "-i", "x:2x2", out=tmp_path / "out")

    assert result.exit_code == 3, result.stderr
    assert "error:" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([f"{MODELS}:raising_factory", "-i", "x:1x3"], "config file missing"),
        ([f"{MODELS}:not_a_model", "-i", "x:1x3"], "not an nn.Module"),
        ([f"{MODELS}:no_such_name", "-i", "x:1x3"], "no attribute 'no_such_name'"),
        ([f"{MODELS}:small_cnn", "-i", "x:1x5x16x16"], "rejects inputs"),
        ([f"{MODELS}:small_cnn"], "-i NAME:DIMS"),
        ([f"{MODELS}:tiny_bert", "-i", "pixels:1x12:int64"], "not parameters of forward"),
    ],
)
def test_bad_model_inputs_exit_2_without_output(cli, tmp_path: Path, args, needle) -> None:
    result = cli("convert", *args, out=tmp_path / "out")

    assert result.exit_code == 2, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))  # no staging folder left behind


def test_a_one_input_module_takes_any_input_name(cli, tmp_path: Path) -> None:
    """nn.Sequential's forward calls its parameter `input`; `-i x:...` names the ONNX input
    x. The file imports torch on one line with another module: detected all the same."""
    import onnx

    (tmp_path / "seq.py").write_text(
        "import os, torch\n\n\ndef build():\n    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())\n")

    result = cli("convert", f"{tmp_path / 'seq.py'}:build", "-i", "x:batchx4",
                 out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    assert result.report["source"]["framework"] == "pytorch"
    assert result.report["source"]["inputs"][0]["name"] == "x"
    model = onnx.load(str(tmp_path / "out/onnx/model.onnx"))
    assert [i.name for i in model.graph.input] == ["x"]


def test_weights_that_do_not_fit_exit_2(cli, tmp_path: Path) -> None:
    import torch

    torch.save({"unrelated.weight": torch.zeros(2)}, tmp_path / "w.pth")

    result = cli("convert", f"{MODELS}:small_cnn", "-i", "x:1x3x16x16",
                 "--weights", str(tmp_path / "w.pth"), out=tmp_path / "out")

    assert result.exit_code == 2
    assert "does not fit the model" in result.stderr


def test_pickled_module_is_not_mistaken_for_torchscript(cli, tmp_path: Path) -> None:
    import torch

    from tests.models.torch_models import small_cnn

    torch.save(small_cnn().state_dict(), tmp_path / "model.pt")

    result = cli("convert", str(tmp_path / "model.pt"), "-i", "x:1x3x16x16",
                 out=tmp_path / "out")

    assert result.exit_code == 2
    assert "torch.save" in result.stderr and "--weights" in result.stderr
