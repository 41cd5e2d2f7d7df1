"""convertkit/ir/external_data.py: where an ONNX model's external data may live. The CLI
cases are in tests/integration/security/test_external_data.py; these cover the tensors
and spellings a CLI test would repeat for each."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convertkit.errors import UsageError
from convertkit.ir.external_data import check_external_data, checked_external_files
from convertkit.ir.io import load_model, save_model

WEIGHTS = np.arange(4, dtype=np.float32)


def _external(name: str, location: str, **entries: str) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[4],
                         data_location=TensorProto.EXTERNAL)
    for key, value in {"location": location, **entries}.items():
        tensor.external_data.add(key=key, value=value)
    return tensor


def _model(initializers=(), nodes=(), sparse=(), functions=()) -> onnx.ModelProto:
    nodes = list(nodes) or [helper.make_node("Identity", ["x"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], list(initializers),
        sparse_initializer=list(sparse))
    return helper.make_model(graph, functions=list(functions),
                             opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("local", 1)])


def _saved(folder: Path, model: onnx.ModelProto) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "w.bin").write_bytes(WEIGHTS.tobytes())
    path = folder / "model.onnx"
    onnx.save_model(model, str(path))
    return path


def _refusal(path: Path) -> UsageError:
    with pytest.raises(UsageError) as caught:
        checked_external_files(path)
    return caught.value


@pytest.mark.parametrize("location", ["../w.bin", "a/../../w.bin", "..\\w.bin", "/tmp/w.bin",
                                      "\\\\server\\share\\w.bin", "C:/w.bin", "C:\\\\w.bin"])
def test_every_spelling_of_a_location_outside_the_folder_is_refused(tmp_path, location):
    path = _saved(tmp_path / "m", _model([_external("W", location)]))

    error = _refusal(path)

    assert error.code == "unsafe-external-data"
    assert "'W'" in error.message and repr(location) in error.message


def test_tensors_in_attributes_sparse_initializers_subgraphs_and_functions_are_checked(
        tmp_path):
    constant = helper.make_node("Constant", [], ["c"], value=_external("in_attribute", "../a"))
    branch = helper.make_graph([helper.make_node("Identity", ["s"], ["o"])], "b", [],
                               [helper.make_tensor_value_info("o", TensorProto.FLOAT, [4])],
                               [_external("s", "../b")])
    conditional = helper.make_node("If", ["cond"], ["y"], then_branch=branch,
                                   else_branch=branch)
    sparse = onnx.SparseTensorProto(values=_external("sparse_values", "../c"),
                                    indices=numpy_helper.from_array(np.array([0], np.int64)),
                                    dims=[4])
    function = helper.make_function(
        "local", "f", ["i"], ["o"],
        [helper.make_node("Constant", [], ["o"], value=_external("in_function", "../d"))],
        [helper.make_opsetid("", 17)])
    cases = {"in_attribute": _model(nodes=[constant]),
             "s": _model(nodes=[conditional]),
             "sparse_values": _model(sparse=[sparse]),
             "in_function": _model(functions=[function])}
    for name, model in cases.items():
        error = _refusal(_saved(tmp_path / name, model))
        assert f"tensor {name!r}" in error.message


def test_a_symlinked_subfolder_that_leads_out_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "w.bin").write_bytes(WEIGHTS.tobytes())
    path = _saved(tmp_path / "m", _model([_external("W", "data/w.bin")]))
    (tmp_path / "m" / "data").symlink_to(elsewhere, target_is_directory=True)

    assert "through a symlink" in _refusal(path).message


def test_a_symlink_loop_is_refused(tmp_path):
    path = _saved(tmp_path / "m", _model([_external("W", "loop")]))
    os.symlink("loop", tmp_path / "m" / "loop")

    assert _refusal(path).code == "unsafe-external-data"


@pytest.mark.parametrize("entries, words", [
    ({"offset": "12", "length": "8"}, "bytes 12..20 but the file holds 16"),
    ({"offset": "17"}, "bytes 17..17 but the file holds 16"),
    ({"length": "99999999999999999999"}, "holds 16"),
    ({"offset": "+4"}, "offset '+4', not a byte count"),
    ({"length": " 16"}, "length ' 16', not a byte count"),
    ({"__class__": "x"}, "unknown external data keys '__class__'"),
])
def test_byte_ranges_and_keys_are_checked(tmp_path, entries, words):
    path = _saved(tmp_path / "m", _model([_external("W", "w.bin", **entries)]))

    error = _refusal(path)

    assert error.code == "bad-external-data" and words in error.message


def test_a_missing_file_and_a_missing_location_are_named(tmp_path):
    missing = _saved(tmp_path / "a", _model([_external("W", "gone.bin")]))
    nameless = _saved(tmp_path / "b", _model([_external("W", "")]))

    assert _refusal(missing).code == "missing-external-data"
    assert _refusal(nameless).code == "bad-external-data"


def test_a_model_file_that_is_not_a_regular_file_is_refused_unopened(tmp_path):
    os.mkfifo(tmp_path / "model.onnx")  # opening it would block: it must not be opened

    assert _refusal(tmp_path / "model.onnx").code == "source-not-found"


def test_legit_locations_are_listed_once_each(tmp_path):
    folder = tmp_path / "m"
    path = _saved(folder, _model([_external("A", "w.bin", offset="0", length="8"),
                                  _external("B", "./w.bin", offset="8", length="8"),
                                  _external("C", "sub/x.bin")]))
    (folder / "sub").mkdir()
    (folder / "sub" / "x.bin").write_bytes(WEIGHTS.tobytes())

    assert checked_external_files(path) == [(folder / "w.bin").resolve(),
                                            (folder / "sub" / "x.bin").resolve()]


def test_a_rewritten_model_is_checked_again(tmp_path):
    folder = tmp_path / "m"
    path = _saved(folder, _model([_external("W", "w.bin")]))
    assert checked_external_files(path)

    onnx.save_model(_model([_external("W", "../w.bin", checksum="long enough to resize")]),
                    str(path))

    assert _refusal(path).code == "unsafe-external-data"


def test_load_model_reads_data_only_after_the_check(tmp_path):
    folder = tmp_path / "m"
    path = _saved(folder, _model([_external("W", "w.bin")]))

    assert numpy_helper.to_array(load_model(path).graph.initializer[0]).tolist() == [0, 1, 2, 3]
    os.remove(folder / "w.bin")
    os.mkfifo(folder / "w.bin")
    with pytest.raises(UsageError, match="not a regular file"):
        load_model(path)


def test_save_model_copies_nothing_from_outside_the_folder(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"TOP SECRET 16 by")
    model = _model([_external("W", str(secret))])

    with pytest.raises(UsageError):
        save_model(model, tmp_path / "out" / "model.onnx", external_from=tmp_path / "m")
    with pytest.raises(UsageError):
        check_external_data(model, tmp_path)

    assert not (tmp_path / "out").exists()
