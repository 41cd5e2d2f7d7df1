"""The mixed-precision search and what keeping a node keeps (mixed_precision.py)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from convertkit.mixed_precision import keep_closure, search


def _needs(required: set[str], calls: list[tuple[str, ...]]):
    def meets(kept: tuple[str, ...]) -> bool:
        calls.append(kept)
        return required <= set(kept)
    return meets


def test_search_doubles_then_bisects_to_the_fewest_nodes() -> None:
    ranking = [f"n{i}" for i in range(10)]
    calls: list[tuple[str, ...]] = []

    outcome = search(ranking, lambda name: [name], cap=8, meets_budget=_needs({"n2"}, calls))

    assert outcome.passed and outcome.kept == ("n0", "n1", "n2")
    assert [len(kept) for kept in calls] == [1, 2, 4, 3]


def test_search_stops_at_its_cap_and_says_it_failed() -> None:
    ranking = [f"n{i}" for i in range(10)]
    calls: list[tuple[str, ...]] = []

    outcome = search(ranking, lambda name: [name], cap=5, meets_budget=_needs({"n7"}, calls))

    assert not outcome.passed and outcome.kept == ()
    assert max(len(kept) for kept in calls) == 5  # never more than the cap


def test_keeping_a_node_keeps_the_producer_of_its_input_through_a_relu() -> None:
    weight = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="conv0"),
             helper.make_node("Relu", ["a"], ["b"], name="relu0"),
             helper.make_node("Conv", ["b", "w"], ["c"], name="conv1")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 1, 2, 2])], [helper.make_tensor_value_info(
            "c", TensorProto.FLOAT, [1, 1, 2, 2])], [weight])
    model = helper.make_model(graph)

    assert keep_closure(model, "conv1") == ["conv1", "relu0", "conv0"]
    assert keep_closure(model, "conv0") == ["conv0"]
