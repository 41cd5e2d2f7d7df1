"""The PaddlePaddle adapter end to end through the CLI, on real models.

Paddle is never imported in the test process (paddle and mindspore cannot share one):
models are saved and run by tests/models/paddle_models.py in subprocesses, once per
session, and reused.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from convertkit.checker.samples import load_samples
from tests.conftest import ROOT

MODELS = "tests/models/paddle_models.py"
# Paddle's glog lines (I1125 13:49:05.204 ...), Python warnings and paddle2onnx banners.
NOISE = re.compile(r"^[IWEF]\d{4} |UserWarning|\[Paddle2ONNX\]|program_interpreter",
                   re.MULTILINE)
VISION = {"resnet18": "x:batchx3x32x32", "mobilenet_v3_small": "x:batchx3x64x64"}


def _script(*args: str, legacy: bool = False, env: dict | None = None) -> None:
    environment = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    if legacy:
        environment["FLAGS_enable_pir_api"] = "0"
    done = subprocess.run([sys.executable, str(ROOT / MODELS), *args], capture_output=True,
                          text=True, env=environment, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="session")
def saved(tmp_path_factory) -> Callable[..., Path]:
    """saved(NAME, SPEC..., legacy=False): the folder of NAME saved as an inference model
    (PIR .json, or legacy .pdmodel), written once per session."""
    root = tmp_path_factory.mktemp("paddle-models")
    cache: dict[tuple, Path] = {}

    def save(name: str, *specs: str, legacy: bool = False) -> Path:
        key = (name, specs, legacy)
        if key not in cache:
            folder = root / f"{name}-{'pdmodel' if legacy else 'json'}-{len(cache)}"
            _script("save", name, str(folder / "inference"), *specs, legacy=legacy)
            cache[key] = folder
        return cache[key]

    return save


def _metrics(report: dict, target: str = "onnx") -> dict:
    return next(a for a in report["artifacts"] if a["target"] == target)["metrics"]


def _onnx_inputs(path: Path) -> dict[str, list]:
    model = onnx.load(str(path), load_external_data=False)
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input}


@pytest.mark.parametrize("legacy", [False, True], ids=["pir-json", "legacy-pdmodel"])
@pytest.mark.parametrize("name", sorted(VISION))
def test_vision_inference_model_passes_onnx_and_cpu(cli, saved, tmp_path, name, legacy) -> None:
    folder = saved(name, VISION[name], legacy=legacy)
    assert (folder / ("inference.pdmodel" if legacy else "inference.json")).is_file()

    result = cli("convert", str(folder), "-t", "cpu:ort", out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    report = result.report
    assert report["source"]["framework"] == "paddle"
    assert report["source"]["exporter"].startswith("paddle2onnx ")
    assert [a["target"] for a in report["artifacts"]] == ["onnx", "cpu:ort"]
    assert all(a["status"] == "pass" for a in report["artifacts"])
    dims = [int(d) if d.isdigit() else d for d in VISION[name].split(":")[1].split("x")]
    assert report["source"]["inputs"] == [{"name": "x", "dims": dims, "dtype": "float32"}]
    assert _onnx_inputs(tmp_path / "out/onnx/model.onnx") == {"x": dims}  # batch stays dynamic
    assert _metrics(report, "cpu:ort")["fetch_name_0"]["cosine"] > 0.9999
    assert not NOISE.search(result.stderr), result.stderr


def test_two_input_layer_from_python_source(cli, tmp_path) -> None:
    result = cli("convert", f"{MODELS}:image_and_meta", "-i", "image:batchx3x16x16",
                 "-i", "meta:batchx6", "-t", "cpu:ort", out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    report = result.report
    assert all(a["status"] == "pass" for a in report["artifacts"])
    assert report["source"]["outputs"] == ["output"]
    assert "paddle.jit.save" in report["source"]["notes"][0]
    assert _onnx_inputs(tmp_path / "out/onnx/model.onnx") == {
        "image": ["batch", 3, 16, 16], "meta": ["batch", 6]}
    feeds = load_samples(tmp_path / "out/check/inputs.npz")[0]
    assert feeds["image"].shape == (2, 3, 16, 16) and feeds["meta"].shape == (2, 6)


def test_factory_with_pdparams_weights(cli, tmp_path) -> None:
    weights = tmp_path / "trained.pdparams"
    _script("weights", "mlp", "7", str(weights))

    result = cli("convert", f"{MODELS}:mlp", "-i", "x:batchx8", "--weights", str(weights),
                 "-t", "cpu:ort", out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    assert all(a["status"] == "pass" for a in result.report["artifacts"])
    _script("run", "mlp", str(weights), str(tmp_path / "out/check/inputs.npz"),
            str(tmp_path / "expected.npz"))
    reference = load_samples(tmp_path / "out/check/reference.npz")[0]["output"]
    np.testing.assert_allclose(reference, np.load(tmp_path / "expected.npz")["output"],
                               rtol=1e-5, atol=1e-6)


def test_nested_outputs_get_stable_names(cli, tmp_path) -> None:
    result = cli("convert", f"{MODELS}:named_outputs", "-i", "x:2x8", out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    assert result.report["source"]["outputs"] == ["parts.0", "parts.1", "scores"]
    assert set(_metrics(result.report)) == {"parts.0", "parts.1", "scores"}


def test_forward_whose_first_argument_is_not_self(cli, tmp_path) -> None:
    result = cli("convert", f"{MODELS}:not_self", "-i", "x:batchx5", out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    assert result.report["status"] == "pass"


def test_forward_that_records_its_input_spec_needs_no_i(cli, tmp_path) -> None:
    result = cli("convert", f"{MODELS}:declares_its_inputs", out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    assert result.report["source"]["inputs"] == [{"name": "feat", "dims": ["batch", 8],
                                                  "dtype": "float32"}]


def test_user_inputs_override_the_recorded_ones(cli, saved, tmp_path) -> None:
    result = cli("convert", str(saved("mlp", "x:batchx8") / "inference.json"),
                 "-i", "x:5x8", out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    assert result.report["source"]["inputs"] == [{"name": "x", "dims": [5, 8],
                                                  "dtype": "float32"}]
    assert load_samples(tmp_path / "out/check/inputs.npz")[0]["x"].shape == (5, 8)


def test_unsupported_operator_is_named_with_exit_3(cli, tmp_path) -> None:
    result = cli("convert", f"{MODELS}:SvdModel", "-i", "x:4x4", out=tmp_path / "out")

    assert result.exit_code == 3, result.stderr
    assert "error: paddle2onnx" in result.stderr
    assert "pd_op.svd (op " in result.stderr and "float32[4,4]" in result.stderr
    assert "paddle_models.py:" in result.stderr  # the line of forward that calls svd
    assert "Traceback" not in result.stderr
    report = result.report
    assert report["status"] == "error" and report["error"]["code"] == "unsupported-op"
    assert "Due to the unsupported operators" in (tmp_path / "out/logs/export.log").read_text()


def test_unsupported_operator_in_a_legacy_program_is_named(cli, saved, tmp_path) -> None:
    folder = saved("SvdModel", "x:4x4", legacy=True)

    result = cli("convert", str(folder), out=tmp_path / "out")

    assert result.exit_code == 3, result.stderr
    assert re.search(r"operator svd \(op \d of \d in the main block, paddle_models.py:\d+ in "
                     r"forward\)", result.stderr), result.stderr
    assert result.report["error"]["code"] == "unsupported-op"


def test_nothing_is_installed_at_run_time(cli, saved, tmp_path) -> None:
    """paddle2onnx forces POLYGRAPHY_AUTOINSTALL_DEPS=1 before polygraphy's constant folding,
    which then pip-installs onnx_graphsurgeon when it cannot import it. Hide
    onnx_graphsurgeon, put a pip that records its calls first on the path: no call."""
    shim = tmp_path / "shim"
    (shim / "onnx_graphsurgeon").mkdir(parents=True)
    (shim / "onnx_graphsurgeon/__init__.py").write_text("raise ImportError('hidden')\n")
    (shim / "pip").mkdir()
    (shim / "pip/__init__.py").write_text("")
    marker = tmp_path / "pip-calls.txt"
    (shim / "pip/__main__.py").write_text(
        f"import sys\nopen({str(marker)!r}, 'a').write(' '.join(sys.argv) + '\\n')\n"
        "sys.exit(1)\n")
    command = [sys.executable, "-m", "convertkit", "convert", str(saved("mlp", "x:batchx8")),
               "-o", str(tmp_path / "out")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shim), str(ROOT)]))

    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)

    assert done.returncode == 0, done.stderr
    assert not marker.exists(), marker.read_text()


def test_missing_paddle_is_exit_4(tmp_path) -> None:
    (tmp_path / "shim/paddle").mkdir(parents=True)
    # What Python raises when paddle is absent (a shim on PYTHONPATH stands for that).
    (tmp_path / "shim/paddle/__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'paddle'\", name='paddle')\n")
    (tmp_path / "model").mkdir()
    (tmp_path / "model/inference.json").write_text('{"base_code": {"magic": "pir"}}')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "shim"), str(ROOT)]))

    done = subprocess.run([sys.executable, "-m", "convertkit", "convert",
                           str(tmp_path / "model"), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)

    assert done.returncode == 4, done.stderr
    assert "PaddlePaddle is not installed" in done.stderr
    assert "convertkit[paddle]" in done.stderr


def _mismatched(saved, tmp_path: Path, model: tuple, params: tuple) -> Path:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(saved(*model) / "inference.json", folder)
    shutil.copy(saved(*params) / "inference.pdiparams", folder)
    return folder


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("params-missing", "declares 102 parameters but no .pdiparams file is beside it"),
        ("other-architecture", "the model declares 102 parameters, the file holds"),
        ("same-names-other-shapes", "parameter linear_0.b_0 is float32[16] in the model, "
                                    "float32[24] in the file"),
        ("forward-rejects-shape", "the model rejects inputs"),
        ("predictor-rejects-shape", "the model rejects inputs x:4x9:float32: "
                                    "InvalidArgumentError"),
        ("forward-needs-input", "forward(image, meta) needs input(s) meta"),
        ("not-a-forward-parameter", "input(s) extra are not parameters of forward"),
        ("unknown-input-name", "-i names input(s) y that the Paddle model"),
        ("weights-do-not-fit", "does not fit the model: shapes differ for body.0.weight"),
    ],
)
def test_bad_inputs_exit_2_without_output(cli, saved, tmp_path, case, needle) -> None:
    resnet, mobilenet = ("resnet18", VISION["resnet18"]), ("mobilenet_v3_small",
                                                           VISION["mobilenet_v3_small"])
    image_and_meta = f"{MODELS}:image_and_meta"
    if case == "params-missing":
        (tmp_path / "no-params").mkdir()
        shutil.copy(saved(*resnet) / "inference.json", tmp_path / "no-params")
        args = [str(tmp_path / "no-params")]
    elif case == "other-architecture":
        args = [str(_mismatched(saved, tmp_path, resnet, mobilenet))]
    elif case == "same-names-other-shapes":
        args = [str(_mismatched(saved, tmp_path, ("mlp", "x:batchx8"),
                                ("wide_mlp", "x:batchx8")))]
    elif case == "forward-rejects-shape":
        args = [image_and_meta, "-i", "image:1x3x16x16", "-i", "meta:1x7"]
    elif case == "predictor-rejects-shape":
        args = [str(saved("mlp", "x:batchx8")), "-i", "x:4x9"]
    elif case == "forward-needs-input":
        args = [image_and_meta, "-i", "image:1x3x16x16"]
    elif case == "not-a-forward-parameter":
        args = [image_and_meta, "-i", "image:1x3x16x16", "-i", "meta:1x6", "-i", "extra:1"]
    elif case == "unknown-input-name":
        args = [str(saved("mlp", "x:batchx8")), "-i", "y:1x8"]
    else:
        _script("weights", "wide_mlp", "1", str(tmp_path / "wide.pdparams"))
        args = [f"{MODELS}:mlp", "-i", "x:1x8", "--weights", str(tmp_path / "wide.pdparams")]

    result = cli("convert", *args, out=tmp_path / "out")

    assert result.exit_code == 2, result.stderr
    assert needle in result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))
