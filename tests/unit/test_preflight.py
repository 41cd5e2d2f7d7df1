"""convertkit/ir/preflight.py: a target's verdict on a model, every problem listed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convertkit.ir.info import describe
from convertkit.ir.opset import convert_opset, newest_known_opset
from convertkit.ir.preflight import (
    ListedOps,
    OnnxSchemaOps,
    OrtKernelOps,
    Preflight,
    Requirements,
    Verdict,
    preflight,
)
from convertkit.spec import InputSpec

ORT_CPU = OrtKernelOps("CPUExecutionProvider")


def _model(nodes, inputs, outputs, opset: int, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _conv_relu_add(opset: int = 17, batch: int | str = 1) -> onnx.ModelProto:
    weights = [numpy_helper.from_array(np.ones((4, 3, 3, 3), dtype=np.float32), "w"),
               numpy_helper.from_array(np.ones((1, 4, 1, 1), dtype=np.float32), "bias")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Add", ["r", "bias"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 8, 8])
    return _model(nodes, [x], [y], opset, weights)


def _layer_norm(opset: int = 17) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    scale = numpy_helper.from_array(np.ones(4, dtype=np.float32), "scale")
    node = helper.make_node("LayerNormalization", ["x", "scale"], ["y"])
    return _model([node], [x], [y], opset, [scale])


def _single_op(op_type: str, opset: int) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    return _model([helper.make_node(op_type, ["x"], ["y"])], [x], [y], opset)


def _check(model: onnx.ModelProto, requirements: Requirements, **kwargs) -> Preflight:
    return preflight(model, describe(model), requirements, **kwargs)


def test_a_model_the_target_takes_as_it_is_is_accepted():
    plan = _check(_conv_relu_add(17), Requirements(ORT_CPU))

    assert plan.verdict is Verdict.ACCEPTED
    assert plan == Preflight()
    assert plan.to_dict() == {"verdict": "accepted", "changes": [], "problems": []}


def test_an_opset_above_max_opset_is_converted_down():
    plan = _check(_conv_relu_add(17), Requirements(ORT_CPU, max_opset=13))

    assert plan.verdict is Verdict.PREPARED
    assert plan.changes == ("convert opset 17 -> 13",)
    assert plan.problems == ()
    assert plan.target_opset == 13
    assert plan.to_dict()["verdict"] == "accepted after preparation"


def test_an_opset_below_min_opset_is_converted_up():
    plan = _check(_conv_relu_add(11), Requirements(ORT_CPU, min_opset=13))

    assert plan.verdict is Verdict.PREPARED
    assert plan.changes == ("convert opset 11 -> 13",)
    assert plan.target_opset == 13


def test_a_prepared_opset_conversion_can_be_carried_out():
    model = _conv_relu_add(17)
    plan = _check(model, Requirements(ORT_CPU, max_opset=13))
    assert plan.verdict is Verdict.PREPARED

    converted = convert_opset(model, plan.target_opset)

    onnx.checker.check_model(converted, full_check=True)


def test_an_op_that_cannot_be_converted_down_rejects_the_model():
    plan = _check(_layer_norm(17), Requirements(OnnxSchemaOps(), max_opset=13))

    assert plan.verdict is Verdict.REJECTED
    assert ("cannot convert opset 17 to 13: LayerNormalization: first defined in opset 17"
            in plan.problems)
    assert plan.changes == ()


def test_an_op_without_an_ort_cpu_kernel_rejects_the_model_and_is_named():
    encoded = helper.make_tensor_value_info("encoded", TensorProto.UINT8, ["n"])
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, ["h", "w", 3])
    model = _model([helper.make_node("ImageDecoder", ["encoded"], ["image"])],
                   [encoded], [image], 20)
    onnx.checker.check_model(model, full_check=True)  # valid ONNX: only ORT lacks it

    plan = _check(model, Requirements(ORT_CPU))

    assert plan.verdict is Verdict.REJECTED
    assert plan.problems == ("ops not supported at opset 20: ImageDecoder",)


def test_the_onnx_schema_table_takes_what_ort_cpu_rejects():
    encoded = helper.make_tensor_value_info("encoded", TensorProto.UINT8, ["n"])
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, ["h", "w", 3])
    model = _model([helper.make_node("ImageDecoder", ["encoded"], ["image"])],
                   [encoded], [image], 20)

    plan = _check(model, Requirements(OnnxSchemaOps()))

    assert plan.verdict is Verdict.ACCEPTED


@pytest.mark.parametrize(("op_type", "opset"), [("Mish", 18), ("HardSwish", 14)])
def test_function_bodied_ops_count_as_supported_by_ort(op_type, opset):
    model = _single_op(op_type, opset)

    plan = _check(model, Requirements(ORT_CPU))

    assert ORT_CPU.supports("", op_type, opset)
    assert plan.verdict is Verdict.ACCEPTED


def test_ort_supports_knows_kernel_version_ranges():
    assert ORT_CPU.supports("", "Relu", 13)
    assert ORT_CPU.supports("ai.onnx", "Relu", 17)
    assert ORT_CPU.supports("", "Constant", 17)
    assert not ORT_CPU.supports("", "ImageDecoder", 20)
    assert not ORT_CPU.supports("", "Frobnicate", 17)


def test_a_custom_domain_op_is_checked_at_its_own_domain_version():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft")],
                              "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])

    ort_plan = _check(model, Requirements(ORT_CPU))
    onnx_plan = _check(model, Requirements(OnnxSchemaOps()))

    assert ort_plan.verdict is Verdict.ACCEPTED
    assert onnx_plan.problems == ("ops not supported at opset 17: com.microsoft::Gelu",)


def test_static_shapes_without_a_spec_rejects_a_dynamic_input():
    plan = _check(_conv_relu_add(17, batch="batch"),
                  Requirements(ORT_CPU, static_shapes=True))

    assert plan.verdict is Verdict.REJECTED
    assert plan.problems == (
        "input x has dynamic dims (batchx3x8x8) and the target needs static shapes: "
        "pass -i x:<numbers>",)
    assert not plan.fix_shapes


def test_static_shapes_with_a_concrete_spec_fixes_the_shapes():
    plan = _check(_conv_relu_add(17, batch="batch"),
                  Requirements(ORT_CPU, static_shapes=True),
                  inputs=[InputSpec("x", (2, 3, 8, 8))])

    assert plan.verdict is Verdict.PREPARED
    assert plan.changes == ("fix dynamic input dims from -i: x -> 2x3x8x8",)
    assert plan.fix_shapes
    assert plan.target_opset is None


def test_static_shapes_with_a_dynamic_spec_still_rejects():
    plan = _check(_conv_relu_add(17, batch="batch"),
                  Requirements(ORT_CPU, static_shapes=True),
                  inputs=[InputSpec("x", ("batch", 3, 8, 8))])

    assert plan.verdict is Verdict.REJECTED
    assert len(plan.problems) == 1
    assert "input x has dynamic dims" in plan.problems[0]


def test_dynamic_inputs_are_fine_for_a_target_without_static_shapes():
    plan = _check(_conv_relu_add(17, batch="batch"), Requirements(ORT_CPU))

    assert plan.verdict is Verdict.ACCEPTED
    assert not plan.fix_shapes


def test_static_shapes_with_a_wrong_rank_spec_is_a_problem():
    plan = _check(_conv_relu_add(17, batch="batch"),
                  Requirements(ORT_CPU, static_shapes=True),
                  inputs=[InputSpec("x", (2, 3, 8))])

    assert plan.verdict is Verdict.REJECTED
    assert any("x" in problem for problem in plan.problems)


def test_dtype_restrictions_name_every_tensor_of_another_type():
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])
    model = _model([helper.make_node("Cast", ["ids"], ["out"], to=TensorProto.FLOAT)],
                   [ids], [out], 17)

    plan = _check(model, Requirements(ORT_CPU, dtypes=frozenset({"float32", "float16"})))

    assert plan.verdict is Verdict.REJECTED
    assert plan.problems == ("ids has element type int64; the target takes float16, float32",)


def test_dtype_restrictions_accept_the_allowed_types():
    plan = _check(_conv_relu_add(17), Requirements(ORT_CPU, dtypes=frozenset({"float32"})))

    assert plan.verdict is Verdict.ACCEPTED


def test_a_requested_opset_outside_the_range_is_a_problem():
    plan = _check(_conv_relu_add(13), Requirements(ORT_CPU, min_opset=11, max_opset=17),
                  opset=18)

    assert plan.verdict is Verdict.REJECTED
    assert plan.problems == ("opset 18 is outside the opsets it runs (11-17)",)
    assert plan.target_opset is None


def test_a_requested_opset_inside_the_range_is_a_change():
    plan = _check(_conv_relu_add(13), Requirements(ORT_CPU, max_opset=17), opset=17)

    assert plan.verdict is Verdict.PREPARED
    assert plan.changes == ("convert opset 13 -> 17",)
    assert plan.target_opset == 17


def test_the_opset_range_stops_at_what_onnx_knows():
    assert Requirements(ORT_CPU).opset_range() == (7, newest_known_opset())
    assert Requirements(ORT_CPU, min_opset=9, max_opset=13).opset_range() == (9, 13)
    assert Requirements(ORT_CPU, max_opset=10**4).opset_range()[1] == newest_known_opset()


def test_every_problem_is_listed_at_once():
    requirements = Requirements(OnnxSchemaOps(), max_opset=13, static_shapes=True,
                                dtypes=frozenset({"float16"}))

    plan = _check(_layer_norm(17), requirements)

    assert plan.verdict is Verdict.REJECTED
    assert plan.problems == (
        "cannot convert opset 17 to 13: LayerNormalization: first defined in opset 17",
        "ops not supported at opset 13: LayerNormalization",
        "input x has dynamic dims (batchx4) and the target needs static shapes: "
        "pass -i x:<numbers>",
        "x has element type float32; the target takes float16",
        "y has element type float32; the target takes float16",
    )


def test_onnx_schema_ops_supports_a_standard_op_and_not_a_made_up_one():
    ops = OnnxSchemaOps()

    assert ops.supports("", "Conv", 17)
    assert ops.supports("ai.onnx", "LayerNormalization", 17)
    assert not ops.supports("", "LayerNormalization", 16)
    assert not ops.supports("", "Frobnicate", 17)


@pytest.mark.parametrize("ops", [OnnxSchemaOps(), ORT_CPU], ids=["onnx", "ort-cpu"])
def test_table_rows_are_unique_with_no_duplicate_version_ranges(ops):
    rows = ops.table()

    assert len(rows) > 100
    assert all(len(row) == 3 and all(isinstance(cell, str) for cell in row) for row in rows)
    keys = [(domain, op) for domain, op, _ in rows]
    assert len(keys) == len(set(keys))
    for _, _, versions in rows:
        ranges = versions.split(", ")
        assert len(ranges) == len(set(ranges)), versions
    assert "" not in {domain for domain, _, _ in rows}


def test_table_rows_show_version_ranges():
    onnx_rows = {(d, o): v for d, o, v in OnnxSchemaOps().table()}
    ort_rows = {(d, o): v for d, o, v in ORT_CPU.table()}

    assert onnx_rows[("ai.onnx", "LayerNormalization")] == "17"
    assert "1" in onnx_rows[("ai.onnx", "Relu")].split(", ")
    assert ort_rows[("ai.onnx", "Relu")].endswith("+")
    assert ("ai.onnx", "ImageDecoder") not in ort_rows
    assert ("ai.onnx", "ImageDecoder") in onnx_rows


def test_a_listed_op_table_names_the_ops_outside_it(tmp_path):
    table = tmp_path / "ops.txt"
    table.write_text("# Conv and Relu, from a toolkit's documentation\nConv\nRelu 6-14\n"
                     "com.example::Fancy 1-1\n")
    listed = ListedOps(table, source="a test table")

    verdict = _check(_conv_relu_add(opset=13), Requirements(ops=listed))

    assert verdict.verdict == Verdict.REJECTED
    assert verdict.problems == ("ops not supported at opset 13: Add",)
    assert listed.supports("", "Relu", 14) and not listed.supports("", "Relu", 15)
    assert listed.supports("com.example", "Fancy", 1)
    assert listed.table() == [("ai.onnx", "Conv", "1+"), ("ai.onnx", "Relu", "6-14"),
                              ("com.example", "Fancy", "1-1")]
