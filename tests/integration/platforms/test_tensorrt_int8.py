"""gpu:tensorrt int8 with per-layer precision (issue 18): the outlier digits CNN of
tests/integration/test_mixed_precision.py quantised to a QDQ model as TensorRT takes it,
the engine built from it strongly typed (tensorrt_rtx ahead of time for sm89 where it is
installed). No GPU here: the engine never runs, so the artifact is `built` (or
`prepared`), never `pass`; whether int8 needs mixed precision, and the search's trials,
are judged on ONNX Runtime running the QDQ model, and mixed_precision.json says so.

The pure build converts the PyTorch source; the mixed one converts the hub ONNX model that
run wrote (same node names, no second export), to keep the module near half a minute."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from convertkit.mixed_precision import quantisable_nodes
from tests.conftest import CliResult, run_cli
from tests.integration.test_mixed_precision import (  # noqa: F401 (fixture)
    DIGITS_INPUT,
    QUANTISABLE_NODES,
    SOURCE,
    outlier,
)

TARGET = "gpu:tensorrt@sm89"
FOLDER = "gpu-tensorrt-sm89"
HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None


def _convert(source: str, out: Path, data: Path, labels: Path, *extra: str) -> CliResult:
    return run_cli("convert", source, "-t", TARGET, "--precision", "int8", "--data", str(data),
                   "--labels", str(labels), "--report-format", "json", *extra, out=out)


@pytest.fixture(scope="module")
def pure(outlier, tmp_path_factory) -> CliResult:  # noqa: F811
    trained, weights = outlier
    return _convert(SOURCE, tmp_path_factory.mktemp("pure") / "out", trained.heldout,
                    trained.labels, "--weights", str(weights), "-i", DIGITS_INPUT,
                    "--no-mixed-precision")


@pytest.fixture(scope="module")
def mixed(outlier, pure, tmp_path_factory) -> CliResult:  # noqa: F811
    trained, _ = outlier
    return _convert(str(pure.out / "onnx" / "model.onnx"),
                    tmp_path_factory.mktemp("mixed") / "out", trained.heldout, trained.labels)


def _artifact(result: CliResult) -> dict:
    assert result.exit_code == 0, result.stdout + result.stderr
    (artifact,) = [a for a in result.report["artifacts"] if a["target"] == TARGET]
    # Never `pass`: no GPU ran the engine, and the QDQ model is not the engine.
    assert artifact["status"] == ("built" if HAS_RTX else "prepared")
    assert artifact["precision"] == "int8"
    folder = result.out / FOLDER
    assert (folder / "model.engine").is_file() == HAS_RTX
    return artifact


def _qdq_readers(model: onnx.ModelProto) -> set[str]:
    """The nodes that read a DequantizeLinear's output (weights or activations)."""
    dequantised = {o for n in model.graph.node if n.op_type == "DequantizeLinear"
                   for o in n.output}
    return {n.name for n in model.graph.node if set(n.input) & dequantised}


def _heldout_top1(model: Path, outlier) -> float:  # noqa: F811
    """Top-1 (%) of ``model`` in ONNX Runtime on the evaluation half of the held-out
    images (the even rows; calibration took the odd ones)."""
    trained, _ = outlier
    images = np.load(trained.heldout)["x"][0::2]
    labels = np.load(trained.labels)[0::2]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    predicted = [int(session.run(None, {"x": x})[0].argmax()) for x in images]
    return 100.0 * float(np.mean(np.array(predicted) == labels))


def _shell_valid(script: Path) -> None:
    done = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_mixed_int8_keeps_the_outlier_layers_out_of_qdq(pure, mixed, outlier) -> None:  # noqa: F811
    artifact = _artifact(mixed)
    folder = mixed.out / FOLDER
    record = artifact["mixed_precision"]
    kept = [node["name"] for node in record["kept"]]
    assert record["quantisable_nodes"] == QUANTISABLE_NODES
    assert 0 < len(kept) <= QUANTISABLE_NODES // 4 and record["kept_in"] == "fp32"

    # The QDQ model: the kept layers read no DequantizeLinear, every other convolution and
    # Gemm does (a Relu right after a kept layer reads a float tensor and stays float too,
    # as the quantiser leaves it); every zero point is an int8 0 (TensorRT's symmetric
    # quantisation), and no bias is int32.
    model = onnx.load(str(folder / "model.onnx"))
    readers = _qdq_readers(model)
    hub = onnx.load(str(mixed.out / "onnx" / "model.onnx"))
    layers = {n.name for n in hub.graph.node if n.op_type in ("Conv", "Gemm")}
    assert set(kept) <= set(quantisable_nodes(hub)) and not set(kept) & readers
    assert set(kept) & layers and layers - set(kept) <= readers
    zero_points = [onnx.numpy_helper.to_array(t) for t in model.graph.initializer
                   if t.name.endswith("zero_point")]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    assert not [n for n in model.graph.node if n.op_type == "DequantizeLinear"
                and any(t.name == n.input[0] and t.data_type == onnx.TensorProto.INT32
                        for t in model.graph.initializer)]

    # The same list everywhere a user or a tool reads it.
    details = json.loads((mixed.out / record["override_file"]).read_text())
    assert [node["name"] for node in details["kept"]] == kept
    assert details["override"]["tensorrt"]["nodes_to_exclude"] == kept
    assert json.loads((folder / "kept_layers.json").read_text())["layers"] == kept
    judged_on = details["search"]["judged_on"]
    assert "ONNX Runtime" in judged_on and "QDQ model" in judged_on
    assert "judged on ONNX Runtime" in details["pure_int8"]
    assert any("were judged on ONNX Runtime" in note for note in artifact["notes"])
    assert any("unverified on a GPU" in note for note in artifact["notes"]) == HAS_RTX

    # trtexec.sh builds the engine from that model, strongly typed, and names the kept
    # layers in its comments.
    script = folder / "trtexec.sh"
    lines = script.read_text().splitlines()
    assert ('trtexec --onnx=model.onnx --saveEngine=model.engine --stronglyTyped "$@"'
            in lines)
    assert not [line for line in lines if "--int8" in line and not line.startswith("#")]
    assert all(f"#   {name}" in lines for name in kept)
    _shell_valid(script)

    # What the proxy promised holds on the held-out images calibration never saw: pure
    # int8 is near chance, the mixed QDQ model is within a point of the source.
    source = _heldout_top1(mixed.out / "onnx" / "model.onnx", outlier)
    assert _heldout_top1(folder / "model.onnx", outlier) >= source - 1.0
    assert _heldout_top1(pure.out / FOLDER / "model.onnx", outlier) < 50.0


def test_without_mixed_precision_nothing_is_kept(pure) -> None:
    artifact = _artifact(pure)
    folder = pure.out / FOLDER
    assert artifact["mixed_precision"] is None
    assert not (folder / "mixed_precision.json").exists()
    assert json.loads((folder / "kept_layers.json").read_text())["layers"] == []
    model = onnx.load(str(folder / "model.onnx"))
    hub = onnx.load(str(pure.out / "onnx" / "model.onnx"))
    assert set(quantisable_nodes(hub)) <= _qdq_readers(model)
    script = folder / "trtexec.sh"
    assert "none is kept at fp32" in script.read_text()
    _shell_valid(script)
