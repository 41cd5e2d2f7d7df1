"""convertkit/checker/inputs.py: the check inputs, generated or read from --data."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from convertkit.checker.inputs import (
    DEFAULT_INTEGER_HIGH,
    embedding_limits,
    generate_feeds,
)
from convertkit.spec import DYNAMIC_DIM_CHECK_SIZE, InputSpec

OPSET = [helper.make_opsetid("", 17)]


def _table(name: str, rows: int, width: int = 4) -> onnx.TensorProto:
    values = np.arange(rows * width, dtype=np.float32).reshape(rows, width)
    return numpy_helper.from_array(values, name)


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=OPSET)
    onnx.checker.check_model(model)
    return model


def _embedding_model(rows: int = 1000) -> onnx.ModelProto:
    """ids (int32) -> Cast(int64) -> Unsqueeze -> Gather(table[rows, 4])."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", 6])
    out = helper.make_tensor_value_info("emb", TensorProto.FLOAT, [1, "batch", 6, 4])
    axes = numpy_helper.from_array(np.array([0], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids64"], to=TensorProto.INT64),
        helper.make_node("Unsqueeze", ["ids64", "axes"], ["ids_u"]),
        helper.make_node("Gather", ["table", "ids_u"], ["emb"], axis=0),
    ]
    return _model(nodes, [ids], [out], [_table("table", rows), axes])


# --- generate_feeds --------------------------------------------------------------------


def test_generate_feeds_is_seeded_and_deterministic():
    specs = [InputSpec.parse("x:2x3:float32"), InputSpec.parse("ids:4:int64")]

    first = generate_feeds(specs, seed=7)
    second = generate_feeds(specs, seed=7)
    other = generate_feeds(specs, seed=8)

    for name in ("x", "ids"):
        np.testing.assert_array_equal(first[name], second[name])
    assert not np.array_equal(first["x"], other["x"])


def test_generate_feeds_shapes_and_dtypes():
    specs = [InputSpec.parse(t) for t in
             ("x:1x3x8x8:float16", "ids:batchxseq:int64", "mask:2x5:bool", "k:3:uint8",
              "s::float32")]

    feeds = generate_feeds(specs)

    assert list(feeds) == ["x", "ids", "mask", "k", "s"]
    assert feeds["x"].shape == (1, 3, 8, 8)
    assert feeds["x"].dtype == np.float16
    assert feeds["ids"].shape == (DYNAMIC_DIM_CHECK_SIZE, DYNAMIC_DIM_CHECK_SIZE)
    assert feeds["ids"].dtype == np.int64
    assert feeds["mask"].dtype == np.bool_
    assert feeds["k"].dtype == np.uint8
    assert feeds["s"].shape == ()


def test_generate_feeds_keeps_unknown_integers_small():
    feeds = generate_feeds([InputSpec.parse("ids:64x64:int64")])

    assert feeds["ids"].min() >= 0
    assert feeds["ids"].max() == DEFAULT_INTEGER_HIGH - 1


def test_generated_ids_stay_inside_the_embedding_table():
    model = _embedding_model(rows=50)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])

    feeds = generate_feeds([InputSpec("ids", (64, 6), "int32")], model=model)
    (emb,) = session.run(None, feeds)  # ORT rejects an out-of-range Gather index

    ids = feeds["ids"]
    assert ids.dtype == np.int32
    assert ids.min() >= 0
    assert ids.max() < 50
    assert ids.max() > DEFAULT_INTEGER_HIGH  # the table size was used, not the default
    assert emb.shape == (1, 64, 6, 4)


# --- embedding_limits ------------------------------------------------------------------


def test_embedding_limits_through_cast_and_unsqueeze():
    assert embedding_limits(_embedding_model(rows=1000)) == {"ids": 1000}


def test_embedding_limits_takes_the_smallest_of_two_tables():
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 3])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3, 4]) for n in "ab"]
    nodes = [
        helper.make_node("Gather", ["big", "ids"], ["a"]),
        helper.make_node("Identity", ["ids"], ["ids_i"]),
        helper.make_node("Gather", ["small", "ids_i"], ["b"]),
    ]
    model = _model(nodes, [ids], outs, [_table("big", 30000), _table("small", 512)])

    assert embedding_limits(model) == {"ids": 512}


def test_embedding_limits_ignores_an_input_that_is_the_gathered_data():
    x = helper.make_tensor_value_info("x", TensorProto.INT64, [100, 4])
    out = helper.make_tensor_value_info("y", TensorProto.INT64, [2, 4])
    index = numpy_helper.from_array(np.array([0, 2], dtype=np.int64), "index")
    model = _model([helper.make_node("Gather", ["x", "index"], ["y"])], [x], [out], [index])

    assert embedding_limits(model) == {}


def test_embedding_limits_reads_a_constant_table_and_the_gather_axis():
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [3])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])
    table = numpy_helper.from_array(np.zeros((4, 77), dtype=np.float32))
    nodes = [
        helper.make_node("Constant", [], ["table"], value=table),
        helper.make_node("Gather", ["table", "ids"], ["y"], axis=1),
    ]
    model = _model(nodes, [ids], [out])

    assert embedding_limits(model) == {"ids": 77}


def test_embedding_limits_stops_at_ops_that_change_values():
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [3])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])
    one = numpy_helper.from_array(np.array(1, dtype=np.int64), "one")
    nodes = [
        helper.make_node("Add", ["ids", "one"], ["shifted"]),
        helper.make_node("Gather", ["table", "shifted"], ["y"]),
    ]
    model = _model(nodes, [ids], [out], [_table("table", 10), one])

    assert embedding_limits(model) == {}
