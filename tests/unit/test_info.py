"""convertkit/ir/info.py: a model's interface and contents as plain data."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from convertkit.ir.info import OpCount, TensorInfo, default_opset, describe, iter_nodes
from convertkit.spec import InputSpec


def _value(name: str, elem_type: int, dims) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, dims)


def _branch(name: str, nodes, output: str) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], [_value(output, TensorProto.FLOAT, ["batch", 4])])


def _if_model() -> onnx.ModelProto:
    """If(cond) { Relu(x) } else { Relu(x * k), k a 4-element Constant } then MatMul(w)."""
    then_branch = _branch("then", [helper.make_node("Relu", ["x"], ["t"])], "t")
    k = numpy_helper.from_array(np.ones(4, dtype=np.float32), "k")
    else_branch = _branch("else", [helper.make_node("Constant", [], ["k"], value=k),
                                   helper.make_node("Mul", ["x", "k"], ["e0"]),
                                   helper.make_node("Relu", ["e0"], ["e"])], "e")
    w = numpy_helper.from_array(np.ones((4, 4), dtype=np.float32), "w")
    nodes = [helper.make_node("If", ["cond"], ["i"], then_branch=then_branch,
                              else_branch=else_branch),
             helper.make_node("MatMul", ["i", "w"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [_value("x", TensorProto.FLOAT, ["batch", 4]),
                     _value("cond", TensorProto.BOOL, [])],
        [_value("y", TensorProto.FLOAT, ["batch", 4])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _loop_model() -> onnx.ModelProto:
    """Loop(trip) { acc = acc + Neg(Neg(acc)) }: two Neg and one Add in the body."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Neg", ["acc_in"], ["n1"]),
         helper.make_node("Neg", ["n1"], ["n2"]),
         helper.make_node("Add", ["acc_in", "n2"], ["acc_out"])],
        "body",
        [_value("i", TensorProto.INT64, []), _value("cond_in", TensorProto.BOOL, []),
         _value("acc_in", TensorProto.FLOAT, [2])],
        [_value("cond_out", TensorProto.BOOL, []), _value("acc_out", TensorProto.FLOAT, [2])])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trip", "", "acc"], ["out"], body=body)], "g",
        [_value("trip", TensorProto.INT64, []), _value("acc", TensorProto.FLOAT, [2])],
        [_value("out", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _weights_model() -> onnx.ModelProto:
    """A float32 [3, 4] initializer, an int64 [5] initializer and a float16 [2, 2] Constant."""
    w = numpy_helper.from_array(np.ones((3, 4), dtype=np.float32), "w")
    shape = numpy_helper.from_array(np.arange(5, dtype=np.int64), "idx")
    half = numpy_helper.from_array(np.ones((2, 2), dtype=np.float16), "half_value")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]),
             helper.make_node("Gather", ["m", "idx"], ["g"], axis=1),
             helper.make_node("Constant", [], ["h"], value=half),
             helper.make_node("Cast", ["h"], ["y2"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(
        nodes, "g", [_value("x", TensorProto.FLOAT, [2, 3])],
        [_value("g", TensorProto.FLOAT, [2, 5]), _value("y2", TensorProto.FLOAT, [2, 2])],
        [w, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_describe_census_counts_nodes_inside_if_branches():
    info = describe(_if_model())

    assert info.node_count == 2
    assert set(info.ops) == {OpCount("", "If", 1), OpCount("", "MatMul", 1),
                             OpCount("", "Relu", 2), OpCount("", "Mul", 1),
                             OpCount("", "Constant", 1)}
    assert info.ops[0] == OpCount("", "Relu", 2)  # most frequent first


def test_describe_census_counts_nodes_inside_a_loop_body():
    info = describe(_loop_model())

    assert info.node_count == 1
    assert info.ops == (OpCount("", "Neg", 2), OpCount("", "Add", 1),
                        OpCount("", "Identity", 1), OpCount("", "Loop", 1))


def test_iter_nodes_walks_every_subgraph():
    op_types = [n.op_type for n in iter_nodes(_if_model().graph)]

    assert op_types[0] == "If"  # a node comes before the subgraphs it holds
    assert op_types[-1] == "MatMul"
    assert sorted(op_types) == ["Constant", "If", "MatMul", "Mul", "Relu", "Relu"]


def test_describe_counts_parameters_from_initializers_and_constants():
    info = describe(_weights_model())

    assert info.parameter_count == 12 + 5 + 4
    assert info.parameter_bytes == 12 * 4 + 5 * 8 + 4 * 2
    assert info.to_dict()["parameters"] == {"count": 21, "bytes": 96}


def test_describe_counts_parameters_of_constants_inside_subgraphs():
    info = describe(_if_model())

    assert info.parameter_count == 16 + 4
    assert info.parameter_bytes == (16 + 4) * 4


def test_describe_names_external_data_files(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save_model(_weights_model(), str(path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    loaded = onnx.load(str(path), load_external_data=False)

    info = describe(loaded)

    assert info.external_files == ("model.onnx.data",)
    assert info.parameter_count == 21
    assert info.parameter_bytes == 96
    assert info.to_dict()["external_data"] == ["model.onnx.data"]


def test_describe_lists_each_external_file_once(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save_model(_weights_model(), str(path), save_as_external_data=True,
                    all_tensors_to_one_file=False, size_threshold=0)
    loaded = onnx.load(str(path), load_external_data=False)

    info = describe(loaded)

    assert sorted(info.external_files) == ["idx", "w"]


def test_describe_without_external_data_names_no_files():
    assert describe(_weights_model()).external_files == ()


def test_describe_gives_opsets_by_domain():
    model = _if_model()
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))

    info = describe(model)

    assert info.opset == 17
    assert info.opsets == {"ai.onnx": 17, "com.microsoft": 1}
    assert default_opset(model) == 17


def test_describe_lists_dynamic_inputs_and_the_interface():
    x = _value("x", TensorProto.FLOAT, ["batch", 3, None])
    ids = _value("ids", TensorProto.INT64, [1, 8])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["ids"], ["z"])], "g",
        [x, ids], [_value("y", TensorProto.FLOAT, ["batch", 3, None]),
                   _value("z", TensorProto.INT64, [1, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    info = describe(model)

    assert info.inputs == (TensorInfo("x", ("batch", 3, "x_dim2"), "float32"),
                           TensorInfo("ids", (1, 8), "int64"))
    assert info.dynamic_inputs == [info.inputs[0]]
    assert info.outputs[1] == TensorInfo("z", (1, 8), "int64")
    assert info.input_specs() == [InputSpec("x", ("batch", 3, "x_dim2"), "float32"),
                                  InputSpec("ids", (1, 8), "int64")]


def test_describe_leaves_initializers_out_of_the_inputs():
    x = _value("x", TensorProto.FLOAT, [1, 4])
    w_input = _value("w", TensorProto.FLOAT, [4, 2])
    w = numpy_helper.from_array(np.ones((4, 2), dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [x, w_input], [_value("y", TensorProto.FLOAT, [1, 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=3)

    info = describe(model)

    assert [t.name for t in info.inputs] == ["x"]
    assert info.dynamic_inputs == []
    assert info.ir_version == 3
    assert info.parameter_count == 8
