"""gpu:fp16: an fp16 model with fp32 inputs and outputs, automatic mixed precision, checked
on the CPU through fp16 emulation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from convertkit.checker.budgets import budget_for
from convertkit.checker.metrics import compare_outputs
from convertkit.platforms import BuildOptions
from convertkit.platforms.gpu import (
    Fp16GpuPlatform,
    convert_to_fp16,
    emulate_fp16,
    run_with_intermediates,
)
from convertkit.spec import Precision, TargetSpec

FP16_BUDGET = budget_for(Precision.FP16)


def _l2_normalize_model(path: Path) -> Path:
    """y = h / sqrt(sum(h * h)) with h = 30 x: the sum over 256 values passes 65504 (fp16's
    largest value) for standard-normal x, while every other tensor stays in range."""
    nodes = [
        helper.make_node("Mul", ["x", "scale"], ["h"], name="scale"),
        helper.make_node("Mul", ["h", "h"], ["squares"], name="square"),
        helper.make_node("ReduceSum", ["squares", "axes"], ["sum"], name="sum", keepdims=1),
        helper.make_node("Sqrt", ["sum"], ["norm"], name="norm"),
        helper.make_node("Div", ["h", "norm"], ["y"], name="normalize"),
    ]
    graph = helper.make_graph(
        nodes, "l2_normalize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 256])],
        [numpy_helper.from_array(np.array(30.0, np.float32), "scale"),
         numpy_helper.from_array(np.array([-1], np.int64), "axes")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _feeds() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)}


def test_overflowing_reduction_passes_only_after_fallback(tmp_path: Path) -> None:
    model = onnx.load(str(_l2_normalize_model(tmp_path / "m.onnx")))
    feeds = _feeds()
    reference = run_with_intermediates(model, feeds, tmp_path / "ref.onnx")

    plain = convert_to_fp16(model, [feeds], FP16_BUDGET, tmp_path, max_rounds=0)
    plain_out = run_with_intermediates(emulate_fp16(plain.model), feeds, tmp_path / "p.onnx")
    mixed = convert_to_fp16(model, [feeds], FP16_BUDGET, tmp_path)
    mixed_out = run_with_intermediates(emulate_fp16(mixed.model), feeds, tmp_path / "m.onnx")

    assert reference["sum"].max() > 65504
    assert not compare_outputs({"y": plain_out["y"]}, {"y": reference["y"]},
                               FP16_BUDGET)[0].within_budget
    assert mixed.passed is True
    assert [k.name for k in mixed.kept] == ["sum", "norm"]
    (metrics,) = compare_outputs({"y": mixed_out["y"]}, {"y": reference["y"]}, FP16_BUDGET)
    assert metrics.within_budget and metrics.max_abs < 1e-3
    half = {t.name for t in mixed.model.graph.initializer if t.data_type == TensorProto.FLOAT16}
    assert "scale" in half  # the rest of the model did go to fp16


def test_cli_report_names_the_kept_nodes_and_the_cpu_check(cli, tmp_path: Path) -> None:
    source = _l2_normalize_model(tmp_path / "l2.onnx")

    result = cli("convert", str(source), "-t", "gpu:fp16", out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    artifact = next(a for a in result.report["artifacts"] if a["target"] == "gpu:fp16")
    assert artifact["status"] == "pass" and artifact["precision"] == "fp16"
    notes = " | ".join(artifact["notes"])
    assert "kept in fp32 (2 node(s)): sum (ReduceSum" in notes and "norm (Sqrt" in notes
    assert "checked on CPU (onnxruntime), not on a GPU" in notes
    kept = json.loads((tmp_path / "out/gpu-fp16/fp32_nodes.json").read_text())
    assert [k["name"] for k in kept["kept_in_fp32"]] == ["sum", "norm"]
    model = onnx.load(str(tmp_path / "out/gpu-fp16/model.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT


def test_cancellation_is_fixed_by_keeping_the_producer_too(tmp_path: Path) -> None:
    """y = (x + 1e4) - 1e4: fp16 rounds x + 1e4 to a multiple of 8, so the Sub's error
    jumps; keeping the Sub alone is not enough, its producer must stay in fp32 as well."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "big"], ["shifted"], name="shift"),
         helper.make_node("Sub", ["shifted", "big"], ["y"], name="unshift")], "cancel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])],
        [numpy_helper.from_array(np.array(1e4, np.float32), "big")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"x": np.random.default_rng(0).uniform(0.1, 1.0, (4, 16)).astype(np.float32)}

    result = convert_to_fp16(model, [feeds], FP16_BUDGET, tmp_path)

    assert result.passed is True and result.rounds == 3
    assert [(k.name, k.reason.split()[0]) for k in result.kept] == [("unshift", "error"),
                                                                    ("shift", "feeds")]


def test_plain_model_keeps_nothing_and_runner_matches(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")])
    source = tmp_path / "mlp.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(source))
    feeds = {"x": rng.standard_normal((2, 8)).astype(np.float32)}
    np.savez(tmp_path / "feeds.npz", **feeds)
    platform = Fp16GpuPlatform()

    artifact = platform.build(source, TargetSpec("gpu", "fp16"), tmp_path / "out",
                              BuildOptions(Precision.FP16, tmp_path / "feeds.npz", True))
    with platform.open(artifact) as runner:
        outputs = runner.run(feeds)

    assert "kept in fp32: none" in artifact.notes
    expected = np.maximum(feeds["x"] @ numpy_helper.to_array(graph.initializer[0]), 0)
    np.testing.assert_allclose(outputs["y"], expected, rtol=1e-2, atol=1e-2)
