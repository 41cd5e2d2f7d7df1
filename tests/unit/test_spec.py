"""convertkit/spec.py: parsing of -i, -t and SOURCE, and Status."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convertkit.errors import UsageError
from convertkit.spec import (
    DYNAMIC_DIM_CHECK_SIZE,
    InputSpec,
    SourceRef,
    Status,
    TargetSpec,
    parse_dtype,
)

# --- InputSpec.parse -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "dims", "dtype"),
    [
        ("x:1x3x224x224:float32", "x", (1, 3, 224, 224), "float32"),
        ("x:1x3x224x224", "x", (1, 3, 224, 224), "float32"),  # dtype defaults to float32
        ("x:1,3,224,224:float16", "x", (1, 3, 224, 224), "float16"),
        ("ids:batchx128:int64", "ids", ("batch", 128), "int64"),
        ("m:maxlen,4", "m", ("maxlen", 4), "float32"),  # commas keep an 'x' in a name
        ("mask:batch, seq:bool", "mask", ("batch", "seq"), "bool"),
        ("s::float32", "s", (), "float32"),
        ("s:scalar:int32", "s", (), "int32"),
        ("v:7", "v", (7,), "float32"),
        ("t:0x5:uint8", "t", (0, 5), "uint8"),
    ],
)
def test_input_spec_parse_reads_good_forms(text, name, dims, dtype):
    spec = InputSpec.parse(text)

    assert spec == InputSpec(name, dims, dtype)


@pytest.mark.parametrize(
    ("alias", "dtype"),
    [("fp32", "float32"), ("FP16", "float16"), ("half", "float16"), ("float", "float32"),
     ("double", "float64"), ("long", "int64"), ("int", "int32"), ("Int64", "int64")],
)
def test_input_spec_parse_accepts_dtype_aliases(alias, dtype):
    spec = InputSpec.parse(f"x:2x3:{alias}")

    assert spec.dtype == dtype
    assert parse_dtype(alias) == np.dtype(dtype)


@pytest.mark.parametrize(
    "text",
    [
        "x",  # no dims
        ":1x3",  # no name
        "x:1x3:float32:extra",  # too many parts
        "x:1x3:complex64",  # unknown dtype
        "x:1x-3",  # negative dim
        "x:1xx3",  # empty dim
        "x:1x3.5",  # fractional dim
        "x:1x3?",  # not a name either
        "x:1,,3",
    ],
)
def test_input_spec_parse_rejects_bad_forms_with_usage_error(text):
    with pytest.raises(UsageError) as caught:
        InputSpec.parse(text)

    assert caught.value.exit_code == 2
    assert caught.value.code == "bad-input-spec"
    assert caught.value.hint  # every usage error says how to fix it


def test_input_spec_check_shape_feeds_dynamic_dims_the_check_size():
    spec = InputSpec.parse("ids:batchx128:int64")

    assert spec.is_dynamic
    assert spec.check_shape() == (DYNAMIC_DIM_CHECK_SIZE, 128)
    assert not InputSpec.parse("x:1x3").is_dynamic


@pytest.mark.parametrize(
    "spec",
    [InputSpec("x", (1, 3, 224, 224), "float32"), InputSpec("ids", ("batch", 128), "int64"),
     InputSpec("s", (), "bool")],
)
def test_input_spec_str_parses_back_to_the_same_spec(spec):
    assert InputSpec.parse(str(spec)) == spec


def test_input_spec_str_parses_back_when_a_dim_name_contains_x():
    spec = InputSpec("m", ("maxlen", 4), "float32")

    assert InputSpec.parse(str(spec)) == spec


def test_input_spec_dict_round_trip():
    spec = InputSpec.parse("ids:batchx128:int64")

    assert InputSpec.from_dict(spec.to_dict()) == spec


# --- TargetSpec ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "family", "toolchain", "device"),
    [
        ("cpu", "cpu", None, None),
        ("cpu:ort", "cpu", "ort", None),
        ("npu:rknn@rk3588", "npu", "rknn", "rk3588"),
        ("cpu@arm64", "cpu", None, "arm64"),
        ("  GPU:FP16 ", "gpu", "fp16", None),
    ],
)
def test_target_spec_parse(text, family, toolchain, device):
    target = TargetSpec.parse(text)

    assert target == TargetSpec(family, toolchain, device)


@pytest.mark.parametrize("text", ["cpu", "cpu:ort", "npu:rknn@rk3588", "cpu@x86_64", "onnx"])
def test_target_spec_str_round_trip(text):
    assert str(TargetSpec.parse(text)) == text


@pytest.mark.parametrize("text", ["", "cpu:", ":ort", "cpu:ort:extra", "cpu@", "c p u"])
def test_target_spec_parse_rejects_bad_forms(text):
    with pytest.raises(UsageError) as caught:
        TargetSpec.parse(text)

    assert caught.value.exit_code == 2
    assert caught.value.code == "bad-target"


# --- SourceRef -------------------------------------------------------------------------


def test_source_ref_parse_file_py_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    ref = SourceRef.parse("models/net.py:build_model")

    assert ref.path == Path("models/net.py")
    assert ref.module is None
    assert ref.attribute == "build_model"
    assert ref.is_python_object


def test_source_ref_parse_module_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    ref = SourceRef.parse("torchvision.models:resnet18")

    assert ref.path is None
    assert ref.module == "torchvision.models"
    assert ref.attribute == "resnet18"
    assert ref.is_python_object


def test_source_ref_parse_plain_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    ref = SourceRef.parse("exports/model.onnx")

    assert ref == SourceRef("exports/model.onnx", Path("exports/model.onnx"), None, None)
    assert not ref.is_python_object


def test_source_ref_parse_prefers_an_existing_file_whose_name_has_a_colon(tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("weights:v2").write_bytes(b"x")

    ref = SourceRef.parse("weights:v2")

    assert ref.path == Path("weights:v2")
    assert ref.attribute is None


def test_source_ref_validate_raises_for_a_missing_file(tmp_path):
    ref = SourceRef.parse(str(tmp_path / "absent.onnx"))

    with pytest.raises(UsageError) as caught:
        ref.validate()

    assert caught.value.code == "source-not-found"
    assert caught.value.exit_code == 2


def test_source_ref_dict_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for text in ("net.py:Net", "pkg.mod:make", "model.onnx"):
        ref = SourceRef.parse(text)

        assert SourceRef.from_dict(ref.to_dict()) == ref


# --- Status ----------------------------------------------------------------------------


def test_status_has_no_truth_value():
    with pytest.raises(TypeError):
        bool(Status.PASS)
    with pytest.raises(TypeError):
        assert Status.FAIL  # an `if status:` must not silently pass


def test_status_compares_with_strings():
    assert Status.PASS == "pass"
    assert Status("built") == Status.BUILT
