"""convertkit/checker/localize.py with checker/runners.py: the first diverging node of two
ONNX models, on tiny graphs built with onnx.helper."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convertkit.checker.budgets import Budget
from convertkit.checker.localize import locate_divergence, topological_order
from convertkit.checker.runners import OnnxTensors
from convertkit.platforms.ort_runner import OrtRunner

FP32 = Budget(atol=1e-4, rtol=1e-3)
RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((4, 6)).astype(np.float32)
W2 = RNG.standard_normal((6, 3)).astype(np.float32)
FEEDS = {"x": RNG.standard_normal((2, 4)).astype(np.float32)}


def _mlp(path, w2=W2, fused=False, shuffle=False):
    """x -> mm1 -> relu -> mm2 -> add -> y; ``fused`` drops the tensor between mm1 and relu
    (as a runtime that fuses them would), ``shuffle`` stores the nodes out of order."""
    if fused:
        first = [helper.make_node("MatMul", ["x", "W1"], ["pre"], name="fused_mm1"),
                 helper.make_node("Relu", ["pre"], ["h2"], name="fused_relu")]
        first[0].output[0] = "fused_pre"
        first[1].input[0] = "fused_pre"
    else:
        first = [helper.make_node("MatMul", ["x", "W1"], ["h1"], name="mm1"),
                 helper.make_node("Relu", ["h1"], ["h2"], name="relu")]
    nodes = [*first, helper.make_node("MatMul", ["h2", "W2"], ["h3"], name="mm2"),
             helper.make_node("Add", ["h3", "b"], ["y"], name="add")]
    if shuffle:
        nodes = nodes[::-1]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(W1, "W1"), numpy_helper.from_array(w2, "W2"),
         numpy_helper.from_array(np.full(3, 0.5, np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def _localize(reference_path, candidate_path, plain=None):
    reference, candidate = OnnxTensors(reference_path), OnnxTensors(candidate_path)
    return locate_divergence(reference, candidate, reference.run_all(FEEDS),
                             candidate.run_all(FEEDS), FP32, candidate_outputs=plain)


def test_a_scaled_weight_names_the_node_that_reads_it(tmp_path):
    reference = _mlp(tmp_path / "a.onnx")
    candidate = _mlp(tmp_path / "b.onnx", w2=W2 * 1.5)

    result = _localize(reference, candidate)

    assert result.found
    node = result.node
    assert (node.name, node.op_type, node.step) == ("mm2", "MatMul", 2)
    assert node.after.tensor == "h3" and not node.after.within_budget
    assert node.error_before == 0.0 and node.before.tensor == "h2"
    assert [name for name, _ in node.differing_constants] == ["W2"]
    assert [p.tensor for p in result.curve] == ["h1", "h2", "h3", "y"]
    assert [p.within_budget for p in result.curve] == [True, True, False, False]
    assert result.compared == 4 and result.only_in_reference == 0
    assert "MatMul 'mm2' (step 3 of 4)" in result.summary()
    assert "'W2' differs" in result.summary()


def test_equal_models_have_no_diverging_node(tmp_path):
    result = _localize(_mlp(tmp_path / "a.onnx"), _mlp(tmp_path / "b.onnx"))

    assert not result.found
    assert all(p.within_budget for p in result.curve)
    assert "no diverging node" in result.summary()


def test_tensors_on_one_side_only_are_skipped_and_counted(tmp_path):
    reference = _mlp(tmp_path / "a.onnx")
    candidate = _mlp(tmp_path / "b.onnx", w2=W2 * 1.5, fused=True)

    result = _localize(reference, candidate)

    assert result.node.name == "mm2"
    assert result.only_in_reference == 1 and result.only_in_candidate == 1
    assert "h1" in result.skipped_examples and "fused_pre" in result.skipped_examples
    assert any("reference only" in note for note in result.notes)


def test_a_node_whose_input_was_fused_away_takes_its_producer_along(tmp_path):
    reference = _mlp(tmp_path / "a.onnx")
    candidate = _mlp(tmp_path / "b.onnx", fused=True)
    model = onnx.load(str(candidate))
    w1 = next(t for t in model.graph.initializer if t.name == "W1")
    w1.CopyFrom(numpy_helper.from_array(W1 * 1.5, "W1"))
    onnx.save(model, str(candidate))

    result = _localize(reference, candidate)

    node = result.node
    assert node.name == "relu"  # h1 (mm1's output) exists in the reference only
    assert node.fused_with == (("mm1", "MatMul"),)
    assert node.before is None and node.error_before == 0.0  # mm1 reads the model input
    assert [name for name, _ in node.differing_constants] == ["W1"]
    assert "fused in the candidate with MatMul 'mm1'" in result.summary()


def test_an_unsorted_reference_is_walked_in_topological_order(tmp_path):
    reference = _mlp(tmp_path / "a.onnx", shuffle=True)
    candidate = _mlp(tmp_path / "b.onnx", w2=W2 * 1.5)

    result = _localize(reference, candidate)

    assert [p.tensor for p in result.curve] == ["h1", "h2", "h3", "y"]
    assert result.node.name == "mm2" and result.node.step == 2


def test_topological_order_keeps_sorted_graphs_as_they_are(tmp_path):
    model = onnx.load(str(_mlp(tmp_path / "a.onnx", shuffle=True)))

    order = topological_order(model.graph)

    assert [model.graph.node[i].name for i in order] == ["mm1", "relu", "mm2", "add"]
    assert topological_order(onnx.load(str(_mlp(tmp_path / "b.onnx"))).graph) == [0, 1, 2, 3]


def test_exposing_outputs_keeps_the_models_results(tmp_path):
    path = _mlp(tmp_path / "a.onnx")
    with OrtRunner(path) as runner:
        plain = runner.run(FEEDS)

    exposed = OnnxTensors(path).run_all(FEEDS)

    assert set(exposed) == {"x", "h1", "h2", "h3", "y"}
    np.testing.assert_array_equal(exposed["y"], plain["y"])


def test_a_changed_output_under_exposure_is_reported(tmp_path):
    path = _mlp(tmp_path / "a.onnx")
    with OrtRunner(path) as runner:
        plain = runner.run(FEEDS)
    plain["y"] = plain["y"] + 1.0

    result = _localize(path, _mlp(tmp_path / "b.onnx", w2=W2 * 1.5), plain=plain)

    assert any("exposing every tensor changed" in note for note in result.notes)


def test_fp16_feeds_are_cast_to_the_models_input_type(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2])])
    path = tmp_path / "half.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))

    with OrtRunner(path) as runner:
        outputs = runner.run({"x": np.array([-1.0, 2.0], dtype=np.float32)})

    assert outputs["y"].dtype == np.float16
    assert outputs["y"].tolist() == pytest.approx([0.0, 2.0])
