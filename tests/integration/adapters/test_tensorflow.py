"""The TensorFlow adapter end to end through the CLI: keras.applications, Keras 3 and legacy
H5 files, SavedModels, TFLite, frozen graphs and Python sources, each to onnx and cpu:ort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convertkit.checker.samples import load_samples

MODELS = "tests/models/keras_models.py"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tf_models")


@pytest.fixture(scope="session")
def densenet_keras(model_dir: Path) -> Path:
    from tests.models.keras_models import densenet121

    path = model_dir / "densenet121.keras"
    densenet121().save(path)
    return path


@pytest.fixture(scope="session")
def two_keras(model_dir: Path) -> Path:
    from tests.models.keras_models import two_in_two_out

    path = model_dir / "two.keras"
    two_in_two_out().save(path)
    return path


@pytest.fixture(scope="session")
def scorer_saved_model(model_dir: Path) -> Path:
    from tests.models.keras_models import write_saved_model_from_module

    return write_saved_model_from_module(model_dir / "scorer")


@pytest.fixture(scope="session")
def frozen_graph(model_dir: Path) -> Path:
    from tests.models.keras_models import write_frozen_graph

    return write_frozen_graph(model_dir / "small_cnn.pb")


def _artifacts(report: dict) -> dict[str, dict]:
    return {a["target"]: a for a in report["artifacts"]}


def _passed(result) -> None:
    assert result.exit_code == 0, result.stderr
    artifacts = _artifacts(result.report)
    assert set(artifacts) == {"onnx", "cpu:ort"}
    assert all(a["status"] == "pass" for a in artifacts.values()), artifacts


def _only_progress(stderr: str) -> list[str]:
    """stderr lines that are not convertkit's own progress lines."""
    return [line for line in stderr.splitlines() if line and not line.startswith("... ")]


def test_keras_application_with_nchw_input(cli, tmp_path: Path, densenet_keras: Path) -> None:
    import keras

    result = cli("convert", str(densenet_keras), "--inputs-as-nchw", "input_layer", "-t", "cpu:ort",
                 out=tmp_path / "out")

    _passed(result)
    source = result.report["source"]
    assert source["inputs"] == [{"name": "input_layer", "dims": ["batch", 3, 32, 32],
                                 "dtype": "float32", "layout": "NCHW", "source_layout": "NHWC"}]
    assert any("transposed to NHWC" in note for note in source["notes"])
    feeds = load_samples(tmp_path / "out/check/inputs.npz")[0]["input_layer"]
    reference = load_samples(tmp_path / "out/check/reference.npz")[0]["predictions"]
    assert feeds.shape == (2, 3, 32, 32)
    model = keras.models.load_model(densenet_keras)
    expected = np.asarray(model(np.transpose(feeds, (0, 2, 3, 1)), training=False))
    np.testing.assert_allclose(reference, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(reference).max() > 1e-2  # an output the check can tell apart from zero
    assert _artifacts(result.report)["cpu:ort"]["metrics"]["predictions"]["max_abs"] < 1e-4


def test_two_inputs_two_outputs_keep_their_names(cli, tmp_path: Path, two_keras: Path) -> None:
    from tests.models.keras_models import two_in_two_out

    result = cli("convert", str(two_keras), "-t", "cpu:ort", out=tmp_path / "out")

    _passed(result)
    source = result.report["source"]
    assert source["exporter"].startswith("tf2onnx ")
    assert [i["name"] for i in source["inputs"]] == ["features", "extra"]
    assert source["inputs"][0]["dims"] == ["batch", 8]
    assert source["outputs"] == ["scores", "probability"]
    assert "loaded with safe_mode=True" in source["notes"]
    feeds = load_samples(tmp_path / "out/check/inputs.npz")[0]
    reference = load_samples(tmp_path / "out/check/reference.npz")[0]
    scores, _ = two_in_two_out()([feeds["features"], feeds["extra"]])
    np.testing.assert_allclose(reference["scores"], np.asarray(scores), rtol=1e-6)
    assert _only_progress(result.stderr) == []  # no TensorFlow start-up noise


def test_legacy_h5_and_debug_shows_framework_output(cli, tmp_path: Path,
                                                    model_dir: Path) -> None:
    from tests.models.keras_models import two_in_two_out

    path = model_dir / "two.h5"
    two_in_two_out().save(path)

    result = cli("convert", str(path), "-t", "cpu:ort", "--debug", out=tmp_path / "out")

    _passed(result)
    assert result.report["source"]["outputs"] == ["scores", "probability"]
    assert "tf2onnx" in result.stderr


def test_saved_model_from_tf_module(cli, tmp_path: Path, scorer_saved_model: Path) -> None:
    result = cli("convert", str(scorer_saved_model), "-t", "cpu:ort", out=tmp_path / "out")

    _passed(result)
    source = result.report["source"]
    assert source["inputs"] == [{"name": "x", "dims": ["batch", 6], "dtype": "float32"}]
    assert source["outputs"] == ["logits", "probabilities"]
    assert "signature 'serving_default'" in source["exporter"]
    reference = load_samples(tmp_path / "out/check/reference.npz")[0]
    np.testing.assert_allclose(reference["probabilities"].sum(axis=1), 1.0, rtol=1e-5)


def test_saved_model_signature_picks_another_function(cli, tmp_path: Path,
                                                      scorer_saved_model: Path) -> None:
    result = cli("convert", str(scorer_saved_model), "--signature", "embed", "-t", "cpu:ort",
                 out=tmp_path / "out")

    _passed(result)
    assert "signature 'embed'" in result.report["source"]["exporter"]
    assert result.report["source"]["outputs"] == ["output_0"]


def test_keras_export_saved_model_batch_fixed_by_i(cli, tmp_path: Path) -> None:
    import onnx

    from tests.models.keras_models import small_cnn

    small_cnn().export(str(tmp_path / "exported"), verbose=False)

    result = cli("convert", str(tmp_path / "exported"), "-i", "image:1x16x16x3", "-t", "cpu:ort",
                 out=tmp_path / "out")

    _passed(result)
    model = onnx.load(str(tmp_path / "out/onnx/model.onnx"))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert model.graph.input[0].name == "image" and dims == [1, 16, 16, 3]


def test_tflite_from_tflite_converter(cli, tmp_path: Path) -> None:
    from tests.models.keras_models import write_tflite

    path = write_tflite(tmp_path / "small_cnn.tflite")

    result = cli("convert", str(path), "-t", "cpu:ort", out=tmp_path / "out")

    _passed(result)
    source = result.report["source"]
    assert source["exporter"].endswith("(TFLite flatbuffer)")
    assert source["inputs"] == [{"name": "image", "dims": ["batch", 16, 16, 3],
                                 "dtype": "float32"}]
    assert any("TFLite interpreter" in note for note in source["notes"])


def test_frozen_graph_with_named_outputs(cli, tmp_path: Path, frozen_graph: Path) -> None:
    result = cli("convert", str(frozen_graph), "--output", "logits_out:0", "-t", "cpu:ort",
                 out=tmp_path / "out")

    _passed(result)
    source = result.report["source"]
    assert source["exporter"].endswith("(frozen GraphDef)")
    assert source["inputs"] == [{"name": "image", "dims": ["batch", 16, 16, 3],
                                 "dtype": "float32"}]
    assert source["outputs"] == ["logits_out"]


@pytest.mark.parametrize(("name", "args", "outputs"), [
    ("two_in_two_out", [], ["scores", "probability"]),
    ("Scorer", ["--signature", "embed"], ["output"]),
    ("gated_sum", ["-i", "a:3x4", "-i", "b:3x4"], ["output_0", "output_1"]),
])
def test_python_sources(cli, tmp_path: Path, name: str, args: list[str],
                        outputs: list[str]) -> None:
    result = cli("convert", f"{MODELS}:{name}", *args, out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    assert result.report["source"]["framework"] == "tensorflow"
    assert result.report["source"]["outputs"] == outputs


def test_lambda_layer_needs_trust_code(cli, tmp_path: Path) -> None:
    from tests.models.keras_models import lambda_model

    lambda_model().save(tmp_path / "lambda.keras")

    refused = cli("convert", str(tmp_path / "lambda.keras"), out=tmp_path / "refused")
    trusted = cli("convert", str(tmp_path / "lambda.keras"), "--trust-code",
                  out=tmp_path / "trusted")

    assert refused.exit_code == 2, refused.stderr
    assert "Lambda" in refused.stderr and "--trust-code" in refused.stderr
    assert not (tmp_path / "refused").exists()
    assert trusted.exit_code == 0, trusted.stderr
    assert "loaded with safe_mode=False (--trust-code)" in trusted.report["source"]["notes"]


def test_unsupported_op_names_op_and_node_exit_3(cli, tmp_path: Path) -> None:
    result = cli("convert", f"{MODELS}:SvdModule", out=tmp_path / "out")

    assert result.exit_code == 3, result.stderr
    assert "Svd (node " in result.stderr
    assert result.report["error"]["code"] == "unsupported-op"
    assert "Traceback" not in result.stderr


def _truncated_keras(tmp_path: Path, two_keras: Path) -> list[str]:
    data = two_keras.read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    return [str(tmp_path / "cut.keras")]


def _plain_folder(tmp_path: Path, two_keras: Path) -> list[str]:
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder/notes.txt").write_text("not a model")
    return [str(tmp_path / "folder"), "-f", "tensorflow"]


@pytest.mark.parametrize(("make_args", "needle"), [
    (_plain_folder, "is not a SavedModel"),
    (_truncated_keras, "not a complete .keras file"),
    (lambda tmp_path, two_keras: [str(two_keras), "--signature", "serve"],
     "--signature does not apply"),
    (lambda tmp_path, two_keras: [f"{MODELS}:gated_sum", "--output", "y"],
     "--output does not apply"),
    (lambda tmp_path, two_keras: ["tests/models/torch_models.py:small_cnn", "-i", "x:1x3x8x8",
                                  "--inputs-as-nchw", "x"], "does not apply to pytorch"),
])
def test_bad_inputs_exit_2_without_output(cli, tmp_path: Path, two_keras: Path, make_args,
                                          needle: str) -> None:
    result = cli("convert", *make_args(tmp_path, two_keras), out=tmp_path / "out")

    assert result.exit_code == 2, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_signature_exit_2(cli, tmp_path: Path, scorer_saved_model: Path) -> None:
    result = cli("convert", str(scorer_saved_model), "--signature", "predict",
                 out=tmp_path / "out")

    assert result.exit_code == 2, result.stderr
    assert "has no signature 'predict'" in result.stderr
    assert "embed, serving_default" in result.stderr
    assert not (tmp_path / "out").exists()


def test_frozen_graph_needs_output_names(cli, tmp_path: Path, frozen_graph: Path) -> None:
    result = cli("convert", str(frozen_graph), out=tmp_path / "out")

    assert result.exit_code == 2, result.stderr
    assert "--output" in result.stderr and "Identity" in result.stderr


def test_inspect_takes_the_output_option_the_frozen_graph_asks_for(cli, frozen_graph: Path
                                                                     ) -> None:
    """The error above tells the user to name the outputs with --output: inspect takes
    it too (the options of every command come from one record)."""
    refused = cli("inspect", str(frozen_graph), "-t", "cpu:ort")
    inspected = cli("inspect", str(frozen_graph), "--output", "logits_out:0", "-t", "cpu:ort")

    assert refused.exit_code == 2 and "--output" in refused.stderr
    assert inspected.exit_code == 0, inspected.stderr
    assert "logits_out" in inspected.stdout and "accepted" in inspected.stdout
