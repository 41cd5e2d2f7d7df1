"""convertkit/adapters/paddle/: the parts that need no Paddle (detection, reading
program and parameter files, naming unsupported operators, renaming ONNX values)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from convertkit.adapters.paddle import PaddleAdapter
from convertkit.adapters.paddle.export import rename_onnx
from convertkit.adapters.paddle.model_files import (
    InferenceModel,
    find_inference_model,
    is_pir_json,
)
from convertkit.adapters.paddle.params_file import check_params_belong, read_params_file
from convertkit.adapters.paddle.pir_program import read_pir_program
from convertkit.adapters.paddle.program import OperatorSite, TensorDecl, input_specs_from
from convertkit.adapters.paddle.unsupported import (
    operators_named_in_log,
    paddle2onnx_error_lines,
    paddle2onnx_name,
    unsupported_operators,
)
from convertkit.errors import ConversionError, UsageError
from convertkit.spec import InputSpec, SourceRef

FLOAT32 = 5  # VarType.FP32


def _tensor(dtype: str, dims: list[int]) -> dict:
    return {"#": "0.t_dtensor", "D": [{"#": f"0.t_{dtype}"}, dims, "NCHW", [], 0]}


def _pir_program() -> dict:
    """A PIR program in the layout paddle.jit.save writes (Paddle 3.3): x -> linear -> svd."""
    ops = [
        {"#": "p", "A": [0, 1, 1, "linear_0.w_0"], "O": {"%": 1, "TT": _tensor("f32", [4, 4])}},
        {"#": "p", "A": [0, 1, 1, "linear_0.b_0"], "O": {"%": 2, "TT": _tensor("f32", [4])}},
        {"#": "1.data", "A": [{"AT": {"#": "0.a_str", "D": "x"}, "N": "name"},
                              {"AT": {"#": "1.a_intarray", "D": [-1, 4]}, "N": "shape"},
                              {"AT": {"#": "1.a_dtype", "D": "float32"}, "N": "dtype"}],
         "I": [], "O": [{"%": 3, "TT": _tensor("f32", [-1, 4])}]},
        {"#": "1.matmul", "I": [{"%": 3}, {"%": 1}],
         "O": [{"%": 4, "TT": _tensor("f32", [-1, 4])}]},
        {"#": "1.add", "I": [{"%": 4}, {"%": 2}],
         "O": [{"%": 5, "TT": _tensor("f32", [-1, 4])}]},
        {"#": "1.svd", "I": [{"%": 5}], "O": [{"%": 6, "TT": _tensor("f32", [-1, 4, 4])}]},
        {"#": "1.fetch", "A": [{"AT": {"#": "0.a_str", "D": "fetch_name_0"}, "N": "name"}],
         "I": [{"%": 6}], "O": [{"%": 7, "TT": _tensor("f32", [-1, 4, 4])}]},
    ]
    return {"base_code": {"magic": "pir", "trainable": True, "version": 4},
            "program": {"regions": [{"#": "region_0", "blocks": [
                {"#": "block_0", "args": [], "ops": ops}]}]}}


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _params_file(path: Path, tensors: list[tuple[int, list[int]]]) -> Path:
    """Write tensors the way save_combine does: headers, TensorDesc, raw data."""
    with path.open("wb") as handle:
        for code, dims in tensors:
            desc = b"\x08" + _varint(code) + b"".join(b"\x10" + _varint(d) for d in dims)
            handle.write(struct.pack("<IQI", 0, 0, 0) + struct.pack("<i", len(desc)) + desc)
            handle.write(np.zeros(int(np.prod(dims)), np.float32).tobytes())
    return path


@pytest.fixture
def pir_folder(tmp_path: Path) -> Path:
    (tmp_path / "inference.json").write_text(json.dumps(_pir_program()))
    _params_file(tmp_path / "inference.pdiparams", [(FLOAT32, [4]), (FLOAT32, [4, 4])])
    return tmp_path


# --- detection ---------------------------------------------------------------------------

def test_detects_inference_model_folders_and_files(pir_folder: Path) -> None:
    adapter = PaddleAdapter()

    assert adapter.detect(SourceRef.parse(str(pir_folder)))
    assert adapter.detect(SourceRef.parse(str(pir_folder / "inference.json")))
    assert adapter.detect(SourceRef.parse(str(pir_folder / "inference.pdiparams")))


def test_a_json_that_is_not_a_paddle_program_is_not_claimed(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    _params_file(tmp_path / "model.pdiparams", [(FLOAT32, [2])])
    adapter = PaddleAdapter()

    assert not is_pir_json(tmp_path / "config.json")
    assert not adapter.detect(SourceRef.parse(str(tmp_path / "config.json")))
    assert not adapter.detect(SourceRef.parse(str(tmp_path)))
    assert not adapter.detect(SourceRef.parse(str(tmp_path / "model.pdiparams")))


def test_detects_legacy_pdmodel_and_python_sources_that_import_paddle(tmp_path: Path) -> None:
    (tmp_path / "model.pdmodel").write_bytes(b"\x0a\x00")
    (tmp_path / "net.py").write_text("import paddle.nn as nn\n\ndef build():\n    pass\n")
    (tmp_path / "other.py").write_text("import paddle2onnx\nimport torch\n")
    adapter = PaddleAdapter()

    assert adapter.detect(SourceRef.parse(str(tmp_path / "model.pdmodel")))
    assert adapter.detect(SourceRef.parse(f"{tmp_path / 'net.py'}:build"))
    assert not adapter.detect(SourceRef.parse(f"{tmp_path / 'other.py'}:build"))


# --- finding the files -------------------------------------------------------------------

def test_find_inference_model_pairs_program_and_parameters(pir_folder: Path) -> None:
    expected = InferenceModel(pir_folder / "inference.json", pir_folder / "inference.pdiparams")

    assert find_inference_model(pir_folder) == expected
    assert find_inference_model(pir_folder / "inference.pdiparams") == expected
    assert not expected.is_legacy


def test_find_inference_model_without_parameters_file(tmp_path: Path) -> None:
    (tmp_path / "inference.json").write_text(json.dumps(_pir_program()))

    assert find_inference_model(tmp_path).params_path is None


def test_find_inference_model_refuses_a_folder_with_two_models(pir_folder: Path) -> None:
    (pir_folder / "other.pdmodel").write_bytes(b"")

    with pytest.raises(UsageError) as caught:
        find_inference_model(pir_folder)

    assert caught.value.code == "ambiguous-source"
    assert "inference.json, other.pdmodel" in caught.value.message


# --- reading programs and parameter files ------------------------------------------------

def test_read_pir_program(pir_folder: Path) -> None:
    program = read_pir_program(pir_folder / "inference.json")

    assert program.inputs == (TensorDecl("x", (-1, 4), "float32"),)
    assert program.parameters == (TensorDecl("linear_0.b_0", (4,), "float32"),
                                  TensorDecl("linear_0.w_0", (4, 4), "float32"))
    assert [s.type for s in program.operators] == [
        "pd_op.data", "pd_op.matmul", "pd_op.add", "pd_op.svd", "pd_op.fetch"]
    assert program.operators[3].where == "op 4 of 5 in the main block, on float32[-1,4]"


def test_read_pir_program_rejects_a_broken_file(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text('{"base_code": {"magic": "pir"}}')

    with pytest.raises(UsageError) as caught:
        read_pir_program(tmp_path / "model.json")

    assert caught.value.message.startswith("cannot read Paddle program model.json")


def test_read_params_file_reads_headers_and_skips_data(tmp_path: Path) -> None:
    path = _params_file(tmp_path / "p.pdiparams", [(FLOAT32, [3]), (FLOAT32, [2, 5])])

    tensors = read_params_file(path)

    assert [(t.dims, t.dtype) for t in tensors] == [((3,), "float32"), ((2, 5), "float32")]


def test_read_params_file_rejects_a_truncated_file(tmp_path: Path) -> None:
    path = _params_file(tmp_path / "p.pdiparams", [(FLOAT32, [64])])
    path.write_bytes(path.read_bytes()[:-8])

    with pytest.raises(UsageError) as caught:
        read_params_file(path)

    assert caught.value.code == "bad-paddle-params"


def test_check_params_belong(tmp_path: Path) -> None:
    model = InferenceModel(tmp_path / "a.json", tmp_path / "b.pdiparams")
    declared = [TensorDecl("fc.b", (4,), "float32"), TensorDecl("fc.w", (8, 4), "float32")]

    check_params_belong(model, declared, [TensorDecl("#0", (4,), "float32"),
                                          TensorDecl("#1", (8, 4), "float32")])
    with pytest.raises(UsageError, match="declares 2 parameters, the file holds 1"):
        check_params_belong(model, declared, [TensorDecl("#0", (4,), "float32")])
    with pytest.raises(UsageError) as caught:
        check_params_belong(model, declared, [TensorDecl("#0", (4,), "float32"),
                                              TensorDecl("#1", (6, 4), "float32")])
    assert caught.value.message == ("a.json and b.pdiparams do not belong together: parameter "
                                    "fc.w is float32[8x4] in the model, float32[6x4] in the "
                                    "file")
    assert caught.value.exit_code == 2


def test_input_specs_name_unknown_dims() -> None:
    specs = input_specs_from([TensorDecl("ids", (-1, -1), "int64"),
                              TensorDecl("image", (1, 3, 8, 8), "float32")])

    assert specs == [InputSpec("ids", ("batch", "ids_dim1"), "int64"),
                     InputSpec("image", (1, 3, 8, 8), "float32")]


# --- naming what paddle2onnx cannot convert ----------------------------------------------

def test_paddle2onnx_names_follow_its_renaming() -> None:
    assert paddle2onnx_name("pd_op.matmul") == "matmul_v2"
    assert paddle2onnx_name("pd_op.batch_norm_") == "batch_norm"
    assert paddle2onnx_name("pd_op.conv2d") == "conv2d"
    assert paddle2onnx_name("builtin.combine") == "builtin_combine"


def test_unsupported_operators_reports_each_type_once_with_its_first_site() -> None:
    sites = [OperatorSite("pd_op.data", "op 1"), OperatorSite("pd_op.matmul", "op 2"),
             OperatorSite("pd_op.svd", "op 3"), OperatorSite("pd_op.svd", "op 4"),
             OperatorSite("pd_op.eig", "op 5")]

    found = unsupported_operators(sites, ["matmul_v2", "relu"])

    assert found == [OperatorSite("pd_op.svd", "op 3"), OperatorSite("pd_op.eig", "op 5")]


def test_operators_named_in_log() -> None:
    text = ("[Paddle2ONNX] Oops, there are some operators not supported yet, including "
            "max_pool2d_with_index,svd,\n[ERROR] Due to the unsupported operators, ...\n")

    assert operators_named_in_log(text) == ["max_pool2d_with_index", "svd"]
    assert operators_named_in_log("There are some ops not supported yet, including eig,") \
        == ["eig"]


def test_paddle2onnx_error_lines_drop_colour_and_prefixes() -> None:
    text = ("[Paddle2ONNX] Start parsing\n"
            "[ERROR][Paddle2ONNX] Due to opset version, the model exporting is aborted.\n"
            "\x1b[0;31m2026-01-01 10:00:00 [ERROR]\tFailed to convert PaddlePaddle model: "
            "boom.\x1b[0m\n")

    assert paddle2onnx_error_lines(text) == [
        "Due to opset version, the model exporting is aborted.",
        "Failed to convert PaddlePaddle model: boom."]


# --- renaming the exported model's axes and outputs --------------------------------------

def _exported(outputs: list[str]) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["DynamicDimension.0", 4])
    nodes = [helper.make_node("Relu", ["x"], [outputs[0]])]
    for name in outputs[1:]:
        nodes.append(helper.make_node("Neg", [outputs[0]], [name]))
    graph = helper.make_graph(nodes, "g", [x], [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["DynamicDimension.0", 4])
        for n in outputs])
    return helper.make_model(graph)


def test_rename_onnx_names_axes_and_outputs() -> None:
    model = _exported(["fetch_name_0", "fetch_name_1"])

    names = rename_onnx(model, [InputSpec("x", ("batch", 4))], ["scores", "parts.0"])

    onnx.checker.check_model(model)
    assert names == ["scores", "parts.0"]
    assert [o.name for o in model.graph.output] == ["scores", "parts.0"]
    assert list(model.graph.node[1].input) == ["scores"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.graph.output[1].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_rename_onnx_keeps_output_names_when_a_new_one_is_taken() -> None:
    model = _exported(["fetch_name_0"])

    names = rename_onnx(model, [InputSpec("x", ("batch", 4))], ["x"])

    assert names == ["fetch_name_0"]
    assert [o.name for o in model.graph.output] == ["fetch_name_0"]


def test_rename_onnx_keeps_fixed_sizes() -> None:
    model = _exported(["out"])
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 4

    rename_onnx(model, [InputSpec("x", ("batch", "width"))], None)

    assert [d.dim_param or d.dim_value for d in
            model.graph.input[0].type.tensor_type.shape.dim] == ["batch", 4]


def test_rename_onnx_refuses_a_different_output_count() -> None:
    with pytest.raises(ConversionError) as caught:
        rename_onnx(_exported(["fetch_name_0"]), [InputSpec("x", ("batch", 4))], ["a", "b"])

    assert caught.value.code == "output-mismatch"
