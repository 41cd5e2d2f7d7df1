"""Mixed precision to a budget (issue 18), end to end through the CLI: the digits CNN
trained on real handwritten digits, with an activation outlier injected that leaves its
fp32 function unchanged (one output channel of the first convolution scaled by 1000, the
matching input weights of the next one by 1/1000). Pure int8 then runs at chance level:
that channel sets the int8 scale of the activation and the other 15 round to zero. Keeping
the few nodes around it in fp32 recovers the accuracy on the held-out images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.models.digits import DeeperDigitsCNN, Trained, train

SOURCE = "tests/models/digits.py:build_deeper"
DIGITS_INPUT = "x:1x1x8x8"
OUTLIER_CHANNEL, OUTLIER_SCALE = 3, 1000.0
QUANTISABLE_NODES = 13  # 4 Conv, 5 Relu, MaxPool, Reshape, 2 Gemm


def inject_outlier(weights: Path, out: Path) -> Path:
    """The same function, with one activation channel 1000 times larger: ReLU commutes
    with a positive scale, and the next convolution divides it back out."""
    state = torch.load(weights)
    state["body.0.weight"][OUTLIER_CHANNEL] *= OUTLIER_SCALE
    state["body.0.bias"][OUTLIER_CHANNEL] *= OUTLIER_SCALE
    state["body.2.weight"][:, OUTLIER_CHANNEL] /= OUTLIER_SCALE
    torch.save(state, out)
    return out


@pytest.fixture(scope="module")
def outlier(tmp_path_factory) -> tuple[Trained, Path]:
    trained = train(tmp_path_factory.mktemp("digits"), DeeperDigitsCNN)
    assert trained.accuracy > 94
    return trained, inject_outlier(trained.weights, trained.weights.with_name("outlier.pt"))


def _convert(cli, outlier, target: str, out: Path, *extra: str):
    trained, weights = outlier
    return cli("convert", SOURCE, "--weights", str(weights), "-i", DIGITS_INPUT, "-t", target,
               "--precision", "int8", "--data", str(trained.heldout), "--labels",
               str(trained.labels), "--report-format", "json", *extra, out=out)


def pure_fails_and_mixed_passes(cli, outlier, target: str, out: Path,
                                 kept_in: str) -> tuple[dict, list[str]]:
    """Pure int8 of ``target`` fails on the outlier model; the default build passes on the
    250 held-out images with at most a quarter of the quantisable nodes kept in
    ``kept_in``. The passing artifact's record and the kept nodes' names (the NPU tests
    share this)."""
    pure = _convert(cli, outlier, target, out / "pure", "--no-mixed-precision")
    mixed = _convert(cli, outlier, target, out / "mixed")

    assert pure.exit_code == 1, pure.stderr
    (pure_int8,) = [a for a in pure.report["artifacts"] if a["target"] == target]
    assert pure_int8["status"] == "fail" and pure_int8["mixed_precision"] is None
    assert pure_int8["accuracy"]["drop"] > 10
    assert mixed.exit_code == 0, mixed.stdout + mixed.stderr
    (artifact,) = [a for a in mixed.report["artifacts"] if a["target"] == target]
    assert artifact["status"] == "pass" and artifact["precision"] == "int8"
    accuracy = artifact["accuracy"]  # the 250 held-out images calibration never saw
    assert accuracy["rows"] == 250 and accuracy["drop"] <= 1.0
    record = artifact["mixed_precision"]
    kept = [node["name"] for node in record["kept"]]
    assert record["quantisable_nodes"] == QUANTISABLE_NODES
    assert 0 < len(kept) <= QUANTISABLE_NODES // 4
    assert record["kept_in"] == kept_in and f" nodes in {kept_in} " in record["summary"]
    return artifact, kept


@pytest.mark.parametrize("target", ["cpu:ort", "cpu:openvino"])
def test_int8_broken_by_an_outlier_passes_with_a_few_nodes_kept(cli, outlier, target,
                                                                tmp_path) -> None:
    pure = _convert(cli, outlier, target, tmp_path / "pure", "--no-mixed-precision")
    mixed = _convert(cli, outlier, target, tmp_path / "mixed")

    assert pure.exit_code == 1, pure.stderr
    (pure_int8,) = [a for a in pure.report["artifacts"] if a["target"] == target]
    assert pure_int8["status"] == "fail" and pure_int8["mixed_precision"] is None
    assert pure_int8["accuracy"]["drop"] > 10  # far beyond the 1 point int8 may lose

    assert mixed.exit_code == 0, mixed.stdout + mixed.stderr
    (artifact,) = [a for a in mixed.report["artifacts"] if a["target"] == target]
    assert artifact["status"] == "pass" and artifact["precision"] == "int8"
    accuracy = artifact["accuracy"]  # judged on the 250 held-out images calibration never saw
    assert accuracy["rows"] == 250 and accuracy["drop"] <= 1.0
    record = artifact["mixed_precision"]
    kept = [node["name"] for node in record["kept"]]
    assert record["quantisable_nodes"] == QUANTISABLE_NODES
    assert 0 < len(kept) <= QUANTISABLE_NODES // 4
    # The outlier sits between the first two convolutions: both are kept.
    ops = {node["name"]: node["op"] for node in record["kept"]}
    assert sorted(ops.values()).count("Conv") == 2
    assert all(node["source"] and node["source"]["layer"].startswith("body.")
               for node in record["kept"])
    override = json.loads((tmp_path / "mixed" / record["override_file"]).read_text())
    assert [node["name"] for node in override["kept"]] == kept
    if target == "cpu:ort":
        assert override["override"]["onnxruntime"]["nodes_to_exclude"] == kept
    else:
        assert override["override"]["nncf"]["onnx_nodes"] == kept
        assert override["override"]["nncf"]["ignored_scope"]["names"]
    assert f"int8 with {len(kept)} of {QUANTISABLE_NODES} nodes in fp32" in mixed.stdout


def test_mixed_int8_candidates_take_part_in_cpu_selection(cli, outlier, tmp_path) -> None:
    """`-t cpu` with real samples and labels: each int8 candidate that pure int8 breaks is
    rebuilt mixed and competes with its nodes kept; the candidate chosen passes."""
    trained, weights = outlier
    out = tmp_path / "cpu"
    result = cli("convert", SOURCE, "--weights", str(weights), "-i", DIGITS_INPUT, "-t", "cpu",
                 "--data", str(trained.heldout), "--labels", str(trained.labels),
                 "--report-format", "json", out=out)

    assert result.exit_code == 0, result.stdout + result.stderr
    (cpu,) = [a for a in result.report["artifacts"] if a["target"] == "cpu"]
    assert cpu["status"] == "pass"
    (chosen,) = [c for c in cpu["candidates"] if c["chosen"]]
    assert chosen["status"] == "pass" and chosen["latency_ms"] is not None
    int8 = {c["target"]: c for c in cpu["candidates"] if c["precision"] == "int8"}
    assert set(int8) >= {"cpu:ort", "cpu:openvino"}
    for target in ("cpu:ort", "cpu:openvino"):
        candidate = int8[target]
        assert candidate["mixed"].startswith("int8 with "), candidate
        assert f"of {QUANTISABLE_NODES} nodes in fp32" in candidate["mixed"]
        # Judged again on the held-out images, kept nodes and all: it passes and is timed.
        assert candidate["status"] == "pass" and candidate["latency_ms"] is not None
        assert candidate["accuracy_drop"] <= 1.0
        folder = (out / candidate["path"]).parent
        assert (folder / "mixed_precision.json").is_file()
    assert all(c["mixed"] == "" for c in cpu["candidates"] if c["precision"] != "int8")
    if chosen["precision"] == "int8":
        assert cpu["mixed_precision"]["summary"] == chosen["mixed"]
    assert "int8 with " in result.stdout
