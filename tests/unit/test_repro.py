"""convertkit/checker/repro.py: the subgraph around the diverging node, its inputs, a command."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from convertkit.checker.budgets import Budget
from convertkit.checker.localize import locate_divergence
from convertkit.checker.repro import write_repro
from convertkit.checker.runners import OnnxTensors
from convertkit.platforms.ort_runner import OrtRunner

FP32 = Budget(atol=1e-4, rtol=1e-3)
RNG = np.random.default_rng(0)
FEEDS = {"x": RNG.standard_normal((2, 4)).astype(np.float32)}


def _model(path: Path, scale: float, shuffle: bool = False) -> Path:
    """x -> mm1 -> relu -> mm2 -> y, where mm2's weight is computed from a constant (like
    the ConstantOfShape weights of the ONNX light models): w2 = base * scale."""
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h1"], name="mm1"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        helper.make_node("Constant", [], ["scale"], name="scale_const",
                         value=numpy_helper.from_array(np.array(scale, np.float32))),
        helper.make_node("Mul", ["base", "scale"], ["W2"], name="weight"),
        helper.make_node("MatMul", ["h2", "W2"], ["y"], name="mm2"),
    ]
    if shuffle:
        nodes = nodes[::-1]
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(np.random.default_rng(1).standard_normal((4, 6))
                                 .astype(np.float32), "W1"),
         numpy_helper.from_array(np.random.default_rng(2).standard_normal((6, 3))
                                 .astype(np.float32), "base")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _repro(tmp_path: Path, candidate_shuffled: bool = False):
    reference_path = _model(tmp_path / "a.onnx", 1.0)
    candidate_path = _model(tmp_path / "b.onnx", 1.5, shuffle=candidate_shuffled)
    reference, candidate = OnnxTensors(reference_path), OnnxTensors(candidate_path)
    ref_values, cand_values = reference.run_all(FEEDS), candidate.run_all(FEEDS)
    localization = locate_divergence(reference, candidate, ref_values, cand_values, FP32)
    folder = tmp_path / "out" / "repro"
    repro = write_repro(folder, Path("out/repro"), reference_path, candidate_path,
                        localization.node, ref_values, cand_values, FP32)
    return localization, repro, folder, ref_values


def test_the_repro_cuts_the_diverging_node_and_keeps_its_weights(tmp_path):
    localization, repro, folder, _ = _repro(tmp_path)

    # The constant that scales W2 is the first tensor that differs: its node diverges
    # first, and its subgraph needs no inputs at all.
    assert localization.node.name == "scale_const"
    assert repro.inputs == ()
    assert repro.reproduced
    assert sorted(p.name for p in folder.iterdir()) == ["candidate.onnx", "command.sh",
                                                        "inputs.npz", "reference.onnx"]
    assert repro.command == ("convertkit check out/repro/reference.onnx "
                             "out/repro/candidate.onnx --data out/repro/inputs.npz "
                             "--atol 0.0001 --rtol 0.001")
    assert "cd \"$(dirname \"$0\")\"" in (folder / "command.sh").read_text()


def test_the_subgraph_of_a_compute_node_takes_the_activations_as_inputs(tmp_path):
    reference_path = _model(tmp_path / "a.onnx", 1.0)
    candidate_path = _model(tmp_path / "b.onnx", 1.5)
    reference, candidate = OnnxTensors(reference_path), OnnxTensors(candidate_path)
    ref_values, cand_values = reference.run_all(FEEDS), candidate.run_all(FEEDS)
    localization = locate_divergence(reference, candidate, ref_values, cand_values, FP32)
    # Cut at mm2 rather than at the constant: the weight's chain must come along.
    mm2 = next(p for p in localization.curve if p.tensor == "y")
    node = replace(localization.node, name="mm2", op_type="MatMul", after=mm2)
    folder = tmp_path / "repro"

    repro = write_repro(folder, folder, reference_path, candidate_path, node, ref_values,
                        cand_values, FP32)

    assert repro.inputs == ("h2",) and repro.outputs == ("y",)
    sub = onnx.load(str(folder / "candidate.onnx"))
    assert [n.name for n in sub.graph.node] == ["scale_const", "weight", "mm2"]
    saved = np.load(folder / "inputs.npz")
    np.testing.assert_array_equal(saved["h2"], ref_values["h2"])
    with OrtRunner(folder / "reference.onnx") as runner:
        expected = runner.run(dict(saved))["y"]
    with OrtRunner(folder / "candidate.onnx") as runner:
        actual = runner.run(dict(saved))["y"]
    np.testing.assert_allclose(actual, expected * 1.5, rtol=1e-5)
    assert repro.reproduced


def test_an_unsorted_candidate_gives_a_valid_sorted_subgraph(tmp_path):
    _, repro, folder, _ = _repro(tmp_path, candidate_shuffled=True)

    sub = onnx.load(str(folder / "candidate.onnx"))
    onnx.checker.check_model(sub)
    assert repro.reproduced
