"""The MindSpore adapter end to end through the CLI, on real models.

MindSpore is never imported in the test process (it cannot share one with paddle):
models come from tests/models/mindspore_models.py, named as SOURCE or run as a script to
write checkpoints and MindIR files. Conversions several tests look at run once per module.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from convertkit.checker.samples import load_samples
from tests.conftest import ROOT, CliResult, run_cli

MODELS = "tests/models/mindspore_models.py"
needs_mindcv = pytest.mark.skipif(importlib.util.find_spec("mindcv") is None,
                                  reason="mindcv is not installed (pip install --no-deps "
                                  "mindcv==0.3.0)")
# What MindSpore prints that must stay in logs/export.log: its C++ call stacks, its log
# lines, and the Cell.__del__ tracebacks of an interpreter shutting down.
NOISE = ("C++ Call Stack", "[WARNING] ME", "Cell.__del__", "Traceback")


def _script(*args: str) -> None:
    done = subprocess.run([sys.executable, str(ROOT / MODELS), *args], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Callable[..., CliResult]:
    """converted(ARGS...): `convertkit convert ARGS` run once per module and reused."""
    cache: dict[tuple[str, ...], CliResult] = {}

    def convert(*args: str) -> CliResult:
        if args not in cache:
            out = tmp_path_factory.mktemp("mindspore") / "out"
            cache[args] = run_cli("convert", *args, out=out)
        return cache[args]

    return convert


def _artifacts(result: CliResult) -> dict[str, dict]:
    return {a["target"]: a for a in result.report["artifacts"]}


def _assert_quiet(result: CliResult) -> None:
    for needle in NOISE:
        assert needle not in result.stderr, result.stderr


# --- start-up and detection: no mindspore imported -----------------------------------------

def test_importing_the_cli_and_the_adapter_loads_no_mindspore() -> None:
    probe = ("import sys, convertkit.cli, convertkit.adapters.mindspore, "
             "convertkit.adapters.mindspore.rewrites, convertkit.adapters.mindspore.onnx_repairs\n"
             "from convertkit.adapters.mindspore import MindSporeAdapter\n"
             "from convertkit.spec import SourceRef\n"
             f"assert MindSporeAdapter().detect(SourceRef.parse({MODELS + ':mlp'!r}))\n"
             "print('mindspore' in sys.modules, 'mindcv' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=ROOT, check=True)

    assert done.stdout.split() == ["False", "False"]


def test_detect_claims_mindir_ckpt_and_python_files_that_use_mindspore(tmp_path: Path) -> None:
    from convertkit.adapters.mindspore import MindSporeAdapter
    from convertkit.spec import SourceRef

    (tmp_path / "net.mindir").write_bytes(b"\0")
    (tmp_path / "net.ckpt").write_bytes(b"\0")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "model.mindir").write_bytes(b"\0")
    (tmp_path / "cell.py").write_text("from mindspore import nn\n\nnet = nn.Dense(2, 2)\n")
    (tmp_path / "zoo.py").write_text("import mindcv\n\nnet = mindcv.create_model('x')\n")
    (tmp_path / "other.py").write_text("import torch\n\nnet = torch.nn.Linear(2, 2)\n")
    adapter = MindSporeAdapter()
    loaded_before = "mindspore" in sys.modules

    claimed = {name: adapter.detect(SourceRef.parse(str(tmp_path / name)))
               for name in ("net.mindir", "net.ckpt", "folder", "cell.py:net", "zoo.py:net",
                            "other.py:net")}
    claimed["mindcv.models:resnet18"] = adapter.detect(SourceRef.parse("mindcv.models:resnet18"))

    assert claimed == {"net.mindir": True, "net.ckpt": True, "folder": True,
                       "cell.py:net": True, "zoo.py:net": True, "other.py:net": False,
                       "mindcv.models:resnet18": True}
    assert ("mindspore" in sys.modules) == loaded_before  # detect imported nothing


# --- mindcv models: MindSpore's exporter fails, convertkit rewrites and passes ---------------

@needs_mindcv
def test_resnet_residual_add_is_rewritten_and_passes(converted) -> None:
    result = converted(f"{MODELS}:resnet18", "-i", "x:1x3x64x64", "-t", "cpu:ort")

    assert result.exit_code == 0, result.stderr
    source = result.report["source"]
    assert source["framework"] == "mindspore"
    assert source["exporter"].endswith("+ convertkit rewrites")
    assert any("InplaceAddExt" in n and n.startswith("native mindspore.onnx.export: failed")
               for n in source["notes"])
    artifacts = _artifacts(result)
    assert list(artifacts) == ["onnx", "cpu:ort"]
    assert all(a["status"] == "pass" for a in artifacts.values())
    assert artifacts["cpu:ort"]["metrics"]["output"]["cosine"] > 0.9999
    _assert_quiet(result)
    # The native failure's full message, C++ call stack and all, is kept in the log.
    log = (result.out / "logs/export.log").read_text()
    assert "Can not find key InplaceAddExt" in log and "C++ Call Stack" in log


@needs_mindcv
def test_vit_unstack_is_rewritten_and_passes(converted) -> None:
    result = converted(f"{MODELS}:vit_tiny", "-i", "x:1x3x32x32", "-t", "cpu:ort")

    assert result.exit_code == 0, result.stderr
    notes = result.report["source"]["notes"]
    assert any("Unstack" in n and "failed" in n for n in notes)
    assert any("2 Unstack primitive(s) as Split + Squeeze" in n for n in notes)
    assert all(a["status"] == "pass" for a in _artifacts(result).values())
    model = onnx.load(str(result.out / "onnx/model.onnx"))
    assert "Split" in {n.op_type for n in model.graph.node}
    _assert_quiet(result)


def test_lstm_last_step_invalid_export_is_repaired_and_passes(converted) -> None:
    result = converted(f"{MODELS}:lstm_last_step", "-i", "x:batchx5x8", "-t", "cpu:ort")

    assert result.exit_code == 0, result.stderr
    source = result.report["source"]
    assert source["exporter"].endswith("+ ONNX repairs")
    assert any(n.startswith("native mindspore.onnx.export: wrote an invalid model") and
               "Squeeze" in n for n in source["notes"])
    assert any("1 Slice(s) taking index -1" in n for n in source["notes"])
    assert all(a["status"] == "pass" for a in _artifacts(result).values())
    # The export is static: the named axis is fixed at its check size, and says so.
    assert source["inputs"] == [{"name": "x", "dims": [2, 5, 8], "dtype": "float32"}]
    assert any("static" in n and "batch" in n for n in source["notes"])
    _assert_quiet(result)


def test_gru_time_loop_is_rewritten_and_both_outputs_pass(converted) -> None:
    result = converted(f"{MODELS}:gru", "-i", "x:2x4x8")

    assert result.exit_code == 0, result.stderr
    source = result.report["source"]
    assert any("make_list" in n for n in source["notes"])
    assert source["outputs"] == ["output_0", "output_1"]
    assert set(_artifacts(result)["onnx"]["metrics"]) == {"output_0", "output_1"}
    assert result.report["status"] == "pass"


def test_cumsum_is_rewritten_as_matmul_and_passes(converted) -> None:
    result = converted(f"{MODELS}:position_cumsum", "-i", "x:1x3x6x7", "-t", "onnx")

    assert result.exit_code == 0, result.stderr
    notes = result.report["source"]["notes"]
    assert any("CumSum" in n and n.startswith("native mindspore.onnx.export: failed")
               for n in notes)
    assert any("1 CumSum primitive(s) as MatMul" in n for n in notes)
    assert any("Tensor.cumsum) as MatMul" in n for n in notes)
    assert result.report["status"] == "pass"
    assert _artifacts(result)["onnx"]["metrics"]["output"]["max_abs"] < 1e-5
    ops = {n.op_type for n in onnx.load(str(result.out / "onnx/model.onnx")).graph.node}
    assert "MatMul" in ops and "CumSum" not in ops
    assert any("1 stack(s) written as SequenceConstruct" in n
               for n in result.report["source"]["notes"])
    _assert_quiet(result)


def test_bilinear_resize_is_rewritten_as_matmul_and_passes(converted) -> None:
    result = converted(f"{MODELS}:bilinear_resize", "-i", "x:1x3x8x9", "-t", "onnx")

    assert result.exit_code == 0, result.stderr
    notes = result.report["source"]["notes"]
    assert any("ResizeBilinearV2" in n and n.startswith("native mindspore.onnx.export: failed")
               for n in notes)
    assert any("bilinear ops.interpolate (ResizeBilinearV2) as MatMuls" in n for n in notes)
    assert result.report["status"] == "pass"
    assert result.report["source"]["outputs"] == ["output"]
    assert _artifacts(result)["onnx"]["metrics"]["output"]["max_abs"] < 1e-5
    _assert_quiet(result)


@pytest.mark.parametrize("opset", [11, 13])
def test_stacks_written_as_sequences_become_concat(opset: int) -> None:
    from onnx import TensorProto, helper

    from convertkit.adapters.mindspore.onnx_repairs import repair_onnx

    graph = helper.make_graph(
        [helper.make_node("Sin", ["x"], ["s"]), helper.make_node("Cos", ["x"], ["c"]),
         helper.make_node("SequenceConstruct", ["s", "c"], ["seq"]),
         helper.make_node("ConcatFromSequence", ["seq"], ["y"], axis=-1, new_axis=1)],
        "stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])

    repairs = repair_onnx(model, rewritten=False)

    assert len(repairs) == 1 and repairs[0].startswith("1 stack(s)")
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Sin", "Cos", "Unsqueeze", "Unsqueeze",
                                                     "Concat"]
    import onnxruntime as ort

    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    (y,) = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    np.testing.assert_allclose(y, np.stack((np.sin(x), np.cos(x)), -1), rtol=1e-6)


# --- Python Cells: two inputs, checkpoints ------------------------------------------------

def test_two_input_cell_passes(converted) -> None:
    result = converted(f"{MODELS}:image_and_meta", "-i", "meta:1x6", "-i", "image:1x3x16x16",
                       "-t", "cpu:ort")

    assert result.exit_code == 0, result.stderr
    report = result.report
    assert [i["name"] for i in report["source"]["inputs"]] == ["image", "meta"]  # construct's
    assert report["source"]["outputs"] == ["output"]
    assert all(a["status"] == "pass" for a in report["artifacts"])
    assert any("AdaptiveAvgPool2D primitive(s) as ReduceMean" in n
               for n in report["source"]["notes"])
    feeds = load_samples(result.out / "check/inputs.npz")[0]
    assert feeds["image"].shape == (1, 3, 16, 16) and feeds["meta"].shape == (1, 6)


def test_factory_with_ckpt_weights(cli, tmp_path: Path) -> None:
    weights = tmp_path / "trained.ckpt"
    _script("ckpt", "mlp", "7", str(weights))

    result = cli("convert", f"{MODELS}:mlp", "-i", "x:4x8", "--weights", str(weights),
                 "-t", "cpu:ort", out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    assert all(a["status"] == "pass" for a in result.report["artifacts"])
    assert "weights loaded from trained.ckpt: 4 of 4 parameters" in \
        result.report["source"]["notes"]
    _script("run", "mlp", str(weights), str(tmp_path / "out/check/inputs.npz"),
            str(tmp_path / "expected.npz"))
    reference = load_samples(tmp_path / "out/check/reference.npz")[0]["output"]
    np.testing.assert_allclose(reference, np.load(tmp_path / "expected.npz")["output"],
                               rtol=1e-5, atol=1e-6)


def test_ckpt_that_does_not_fit_the_cell_exits_2(cli, tmp_path: Path) -> None:
    weights = tmp_path / "mlp.ckpt"
    _script("ckpt", "mlp", "3", str(weights))

    shapes = cli("convert", f"{MODELS}:wide_mlp", "-i", "x:2x8", "--weights", str(weights),
                 out=tmp_path / "shapes")
    foreign = cli("convert", f"{MODELS}:lstm_last_step", "-i", "x:2x5x8", "--weights",
                  str(weights), out=tmp_path / "foreign")

    assert shapes.exit_code == 2, shapes.stderr
    assert "error: --weights mlp.ckpt does not fit the Cell: parameter fc1.weight has shape " \
        "(32, 8) in the Cell and (16, 8) in the checkpoint" in shapes.stderr
    assert "hint: pass the checkpoint saved from this Cell's architecture" in shapes.stderr
    assert foreign.exit_code == 2, foreign.stderr
    assert "none of its 4 parameters" in foreign.stderr
    assert not (tmp_path / "shapes").exists() and not (tmp_path / "foreign").exists()
    _assert_quiet(shapes)


def test_a_ckpt_as_source_says_to_pass_the_cell_with_weights(cli, tmp_path: Path) -> None:
    weights = tmp_path / "mlp.ckpt"
    _script("ckpt", "mlp", "3", str(weights))

    result = cli("convert", str(weights), out=tmp_path / "out")

    assert result.exit_code == 2
    assert "holds weights, not the network" in result.stderr
    assert f"--weights {weights}" in result.stderr


# --- MindIR files ---------------------------------------------------------------------------

def test_mindir_reads_its_inputs_and_passes(cli, tmp_path: Path) -> None:
    mindir = tmp_path / "mlp.mindir"
    _script("mindir", "mlp", str(mindir), "x:3x8")

    result = cli("convert", str(mindir), "-t", "cpu:ort", out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    report = result.report
    assert report["source"]["inputs"] == [{"name": "x", "dims": [3, 8], "dtype": "float32"}]
    assert all(a["status"] == "pass" for a in report["artifacts"])
    assert report["source"]["exporter"].startswith("mindspore.onnx.export ")


def test_mindir_with_an_unsupported_primitive_says_what_to_pass(cli, tmp_path: Path) -> None:
    mindir = tmp_path / "residual.mindir"
    _script("mindir", "residual", str(mindir), "x:2x8")

    result = cli("convert", str(mindir), out=tmp_path / "out")

    assert result.exit_code == 3, result.stderr
    assert "does not support primitive InplaceAddExt" in result.stderr
    assert "pass the Cell's Python code as FILE.py:NAME" in result.stderr
    assert "--weights FILE.ckpt" in result.stderr
    assert result.report["status"] == "error"
    # MindSpore's C++ call stack is in the log, not on the terminal.
    _assert_quiet(result)
    assert "C++ Call Stack" in (tmp_path / "out/logs/export.log").read_text()
