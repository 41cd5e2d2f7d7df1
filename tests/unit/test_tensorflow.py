"""convertkit/adapters/tensorflow/: the parts that need no TensorFlow (detection, which
options apply to which source, fitting -i to a signature, layouts, naming), and the typed
request options every adapter shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from convertkit.adapters import CheckData, Lowered, LowerRequest, check_adapter_options
from convertkit.adapters.outputs import output_name
from convertkit.adapters.tensorflow import TensorFlowAdapter
from convertkit.adapters.tensorflow.export import describe_unsupported
from convertkit.adapters.tensorflow.graphdef import graph_sinks
from convertkit.adapters.tensorflow.inputs import DeclaredInput, resolve_inputs
from convertkit.adapters.tensorflow.layout import onnx_layout, tensorflow_layout
from convertkit.adapters.tensorflow.reasons import error_reason
from convertkit.adapters.tensorflow.savedmodel import choose_signature
from convertkit.adapters.tensorflow.sources import SourceKind, check_options, source_kind
from convertkit.errors import ConversionError, UsageError
from convertkit.options import ConvertOptions
from convertkit.spec import InputSpec, SourceRef

IMAGE = DeclaredInput("image", (None, 64, 64, 3), "float32")


def _source(path: Path | str) -> SourceRef:
    return SourceRef.parse(str(path))


def _request(tmp_path: Path, source: str = "m.keras", **options) -> LowerRequest:
    return LowerRequest(_source(tmp_path / source), ConvertOptions.parse(options),
                        tmp_path / "work")


# --- detection -----------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "kind"), [
    ("model.keras", SourceKind.KERAS), ("model.h5", SourceKind.KERAS),
    ("model.hdf5", SourceKind.KERAS), ("model.tflite", SourceKind.TFLITE),
    ("frozen.pb", SourceKind.GRAPH_DEF), ("model.onnx", None), ("model.pt", None),
])
def test_files_are_told_apart_by_suffix(tmp_path: Path, name: str, kind) -> None:
    (tmp_path / name).write_bytes(b"x")

    assert source_kind(_source(tmp_path / name)) == kind
    assert TensorFlowAdapter().detect(_source(tmp_path / name)) is (kind is not None)


def test_a_folder_is_a_saved_model_only_with_saved_model_pb(tmp_path: Path) -> None:
    (tmp_path / "sm").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "sm/saved_model.pb").write_bytes(b"x")
    (tmp_path / "other/variables").mkdir()

    assert source_kind(_source(tmp_path / "sm")) == SourceKind.SAVED_MODEL
    assert source_kind(_source(tmp_path / "sm/saved_model.pb")) == SourceKind.SAVED_MODEL
    assert not TensorFlowAdapter().detect(_source(tmp_path / "other"))


@pytest.mark.parametrize(("line", "detected"), [
    ("import tensorflow as tf", True), ("from keras import layers", True),
    ("import tf_keras", True), ("import torch", False), ("# import keras", False),
])
def test_python_sources_are_detected_by_their_imports(tmp_path: Path, line: str,
                                                      detected: bool) -> None:
    (tmp_path / "model.py").write_text(f"{line}\n\ndef build():\n    pass\n")

    assert TensorFlowAdapter().detect(_source(f"{tmp_path}/model.py:build")) is detected


# --- options -------------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "options", "flag"), [
    ("m.keras", {"signature": "serve"}, "--signature"),
    ("m.keras", {"output_names": ("y",)}, "--output"),
    ("sm/saved_model.pb", {"trust_code": True}, "--trust-code"),
    ("m.tflite", {"weights": "w.h5"}, "--weights"),
    ("g.pb", {"signature": "serving_default"}, "--signature"),
])
def test_options_that_do_not_apply_to_the_source_are_refused(tmp_path: Path, source: str,
                                                             options: dict, flag: str) -> None:
    request = _request(tmp_path, source, **options)

    with pytest.raises(UsageError) as caught:
        check_options(source_kind(request.source), request)

    assert caught.value.code == "option-not-applicable"
    assert flag in caught.value.message and f"drop {flag}" in caught.value.hint


def test_options_that_apply_pass(tmp_path: Path) -> None:
    check_options(SourceKind.KERAS, _request(tmp_path, trust_code=True,
                                             inputs_as_nchw=("image",)))
    check_options(SourceKind.GRAPH_DEF, _request(tmp_path, "g.pb", output_names=("y",)))


def test_other_frameworks_refuse_tensorflow_options(tmp_path: Path) -> None:
    request = _request(tmp_path, "model.pt", inputs_as_nchw=("x",))

    with pytest.raises(UsageError) as caught:
        check_adapter_options("pytorch", request)

    assert "--inputs-as-nchw does not apply to pytorch" in caught.value.message
    assert "tensorflow" in caught.value.hint


def test_request_options_survive_the_process_boundary(tmp_path: Path) -> None:
    request = _request(tmp_path, signature="serve", output_names=("a", "b:1"),
                       inputs_as_nchw=("image",), trust_code=True)

    assert LowerRequest.from_dict(request.to_dict()) == request


def test_lowered_records_nchw_inputs(tmp_path: Path) -> None:
    check = CheckData(tmp_path / "i.npz", tmp_path / "r.npz", tmp_path / "c.npz")
    lowered = Lowered("tensorflow", tmp_path / "m.onnx", check, "tf2onnx",
                      (InputSpec("image", ("batch", 3, 8, 8)),), ("y",), nchw_inputs=("image",))

    assert Lowered.from_dict(lowered.to_dict()) == lowered


# --- inputs --------------------------------------------------------------------------------

def test_a_dynamic_batch_stays_dynamic_without_i() -> None:
    specs = resolve_inputs([IMAGE, DeclaredInput("mask", (None, None), "int32")], [], [],
                           "the model")

    assert specs == [InputSpec("image", ("batch", 64, 64, 3)),
                     InputSpec("mask", ("batch", "mask_1"), "int32")]


def test_i_fixes_dynamic_axes_and_keeps_the_declared_dtype() -> None:
    ids = DeclaredInput("ids", (None, None), "int32")

    specs = resolve_inputs([ids], [InputSpec.parse("ids:1x128")], [], "the model")

    assert specs == [InputSpec("ids", (1, 128), "int32")]


def test_i_is_given_in_the_onnx_layout_for_nchw_inputs() -> None:
    specs = resolve_inputs([IMAGE], [InputSpec.parse("image:1x3x64x64")], ["image"], "m")

    assert specs == [InputSpec("image", (1, 64, 64, 3))]
    assert onnx_layout(specs[0], ["image"]) == InputSpec("image", (1, 3, 64, 64))
    assert tensorflow_layout(onnx_layout(specs[0], ["image"]), ["image"]) == specs[0]


def test_an_nchw_shape_without_the_option_gets_a_hint() -> None:
    with pytest.raises(UsageError) as caught:
        resolve_inputs([IMAGE], [InputSpec.parse("image:1x3x64x64")], [], "m")

    assert "axis 1 is fixed at 64" in caught.value.message
    assert "--inputs-as-nchw image" in caught.value.hint


@pytest.mark.parametrize(("user", "nchw", "needle"), [
    ("image:1x64x64", [], "has 3 dims"),
    ("image:1x64x64x3:int64", [], "asks for int64"),
    ("pixels:1x64x64x3", [], "does not have"),
    ("image:1x64x64x3", ["mask"], "--inputs-as-nchw names mask"),
])
def test_inputs_that_do_not_fit_exit_2(user: str, nchw: list[str], needle: str) -> None:
    with pytest.raises(UsageError) as caught:
        resolve_inputs([IMAGE], [InputSpec.parse(user)], nchw, "m")

    assert needle in caught.value.message


def test_only_rank_4_inputs_can_be_nchw() -> None:
    with pytest.raises(UsageError, match="rank 2, not 4"):
        resolve_inputs([DeclaredInput("x", (None, 8), "float32")], [], ["x"], "m")


def test_a_source_without_shapes_needs_i() -> None:
    with pytest.raises(UsageError) as caught:
        resolve_inputs([], [], [], "extra.py:fn", "it takes: a, b")

    assert caught.value.code == "inputs-required" and "it takes: a, b" in caught.value.hint
    assert resolve_inputs([], [InputSpec.parse("a:2x3")], [], "m") == [
        InputSpec("a", (2, 3))]


def test_unknown_rank_needs_i_and_string_inputs_cannot_be_fed() -> None:
    with pytest.raises(UsageError, match="unknown rank"):
        resolve_inputs([DeclaredInput("x", None, "float32")], [], [], "m")
    with pytest.raises(ConversionError, match="dtype string"):
        resolve_inputs([DeclaredInput("text", (None,), "string")], [], [], "m")


# --- signatures, outputs, messages ---------------------------------------------------------

def test_signature_choice() -> None:
    assert choose_signature(["serve", "serving_default"], None, "m") == "serving_default"
    assert choose_signature(["predict"], None, "m") == "predict"
    assert choose_signature(["a", "b"], "b", "m") == "b"
    with pytest.raises(UsageError, match="has no signature 'c'") as caught:
        choose_signature(["a", "b"], "c", "m")
    assert caught.value.code == "unknown-signature"
    with pytest.raises(UsageError, match="several signatures"):
        choose_signature(["a", "b"], None, "m")


def test_graph_sinks_skip_consumed_and_bookkeeping_nodes() -> None:
    nodes = [("x", "Placeholder", []), ("w", "Const", []), ("mm", "MatMul", ["x", "w:0"]),
             ("out", "Identity", ["mm"]), ("init", "NoOp", ["^w"])]

    assert graph_sinks(nodes) == ["out"]


def test_output_names() -> None:
    assert output_name([]) == "output"
    assert output_name([0]) == "output_0"
    assert output_name(["logits"]) == "logits"
    assert output_name(["parts", 1]) == "parts.1"


def test_tensorflow_runtime_errors_give_their_reason() -> None:
    text = ("Graph execution error:\n\nDetected at node mul defined at (most recent call last):\n"
            '  File "m.py", line 4, in f\n\nIncompatible shapes: [2,4] vs. [3,4]\n'
            "\t [[{{node mul}}]] [Op:__inference_f_13]")

    assert error_reason(text) == "Incompatible shapes: [2,4] vs. [3,4] (node mul)"
    assert error_reason("\n  plain reason\nmore") == "plain reason"


def test_unsupported_ops_are_named_with_their_node_once_per_op() -> None:
    text = describe_unsupported([("a/svd", "Svd"), ("b/svd", "Svd"), ("lg", "Lgamma")])

    assert text == "Svd (node a/svd), Lgamma (node lg)"
