"""npu:sophgo: .bmodel files built by tpu-mlir 1.30 in its Python 3.10 toolchain
environment and checked in its cmodel simulator.

The toolchain is installed the way a user installs it (`convertkit toolchains install
sophgo`, a no-op when it is there): about 6.5 GB and a few minutes the first time, so the
tests that need it are marked `sophgo` (and `slow`) and stay out of the default run. The
missing-toolchain and unknown-chip tests need nothing installed and run everywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from convertkit.checker.samples import GENERATED_SAMPLES
from convertkit.ir.info import describe
from convertkit.platforms.npu.sophgo import SophgoPlatform, remove_bundled_glibc
from convertkit.spec import TargetSpec
from tests.conftest import install_toolchain, run_cli
from tests.models.onnx_models import conv_relu_model, odd_and_even_samples

SMALL_CNN = "tests/models/torch_models.py:small_cnn"


@pytest.fixture(scope="session")
def sophgo_toolchain() -> None:
    install_toolchain("sophgo")



def _artifact(report: dict, target: str) -> dict:
    return next(a for a in report["artifacts"] if a["target"] == target)


@pytest.mark.parametrize(("precision", "max_abs"), [("fp16", 1e-2), ("int8", 0.2)])
@pytest.mark.slow
@pytest.mark.sophgo
def test_small_cnn_passes_in_the_cmodel_simulator(sophgo_toolchain: None, tmp_path: Path,
                                                  precision: str, max_abs: float) -> None:
    out = tmp_path / "out"

    # tpu-mlir takes opset 17 at most: the exporter's opset 20 is converted down.
    result = run_cli("convert", SMALL_CNN, "-i", "x:1x3x32x32",
                     "-t", "npu:sophgo@bm1684x", "--precision", precision, out=out)

    assert result.exit_code == 0, result.stderr
    artifact = _artifact(result.report, "npu:sophgo@bm1684x")
    assert artifact["status"] == "pass", artifact
    assert artifact["precision"] == precision
    assert artifact["path"] == "npu-sophgo-bm1684x/model.bmodel"
    assert (out / artifact["path"]).stat().st_size > 10_000
    assert "tpu-mlir 1.30.2 cmodel simulator (bm1684x)" in artifact["checked_in"]
    (metric,) = artifact["metrics"].values()
    assert metric["max_abs"] < max_abs and metric["cosine"] > 0.999
    folder = out / "npu-sophgo-bm1684x"
    # The tools' intermediate files (MLIR, weights, profiles, a board "pack") are not kept.
    assert {p.name for p in folder.iterdir()} <= {
        "model.bmodel", "sophgo.json", "sophgo.log", "prepared.onnx", "calibration",
        "calibration_table.txt"}
    if precision == "int8":
        assert (folder / "calibration_table.txt").read_text().strip()
        samples = sorted(folder.glob("calibration/*.npz"))
        assert len(samples) == GENERATED_SAMPLES  # generated: no --data
        assert np.load(samples[0])["x"].shape == (1, 3, 32, 32)
        assert any("run_calibration" in note for note in artifact["notes"])


@pytest.mark.slow
@pytest.mark.sophgo
def test_int8_calibrates_on_samples_the_check_never_grades(sophgo_toolchain: None,
                                                           tmp_path: Path) -> None:
    model = conv_relu_model(tmp_path / "conv.onnx", opset=13)
    data = odd_and_even_samples(tmp_path / "data.npz", count=6)

    result = run_cli("convert", str(model), "-t", "npu:sophgo", "--precision", "int8",
                     "--data", str(data), out=tmp_path / "out")

    # Calibrated on [0, 1], graded on [0, 50]: the int8 input saturates, and the check,
    # run on samples calibration never saw, says so.
    assert result.exit_code == 1, result.stderr
    odd = np.load(data)["x"][1::2]
    folder = tmp_path / "out/npu-sophgo"
    table = (folder / "calibration_table.txt").read_text().splitlines()
    # "# op_name    threshold    min    max", one line per tensor
    (row,) = [line.split() for line in table if line.split()[:1] == ["x"]]
    threshold, low, high = map(float, row[1:])
    assert np.isclose(high, odd.max(), rtol=1e-5) and np.isclose(low, odd.min(), rtol=1e-3)
    assert threshold <= 1.0
    calibrated_on = [np.load(path)["x"] for path in sorted(folder.glob("calibration/*.npz"))]
    np.testing.assert_array_equal(np.stack(calibrated_on), odd)
    report = result.report
    assert report["check"]["samples"]["evaluation"]["count"] == 3
    assert {a["target"]: a["samples"] for a in report["artifacts"]} == {"onnx": 3,
                                                                        "npu:sophgo": 3}
    artifact = _artifact(report, "npu:sophgo")
    assert artifact["status"] == "fail" and artifact["calibration"]["real"] is True



@pytest.mark.slow
@pytest.mark.sophgo
def test_a_chip_without_fp16_refuses_it_and_builds_int8_by_default(
        sophgo_toolchain: None, tmp_path: Path) -> None:
    model = conv_relu_model(tmp_path / "conv.onnx", opset=13)

    refused = run_cli("convert", str(model), "-t", "npu:sophgo@bm1684", "--precision", "fp16",
                      out=tmp_path / "a")
    built = run_cli("convert", str(model), "-t", "npu:sophgo@bm1684", out=tmp_path / "b")

    # Refused before anything is built or written.
    assert refused.exit_code == 2, refused.stderr
    assert ("npu:sophgo@bm1684 does not build fp16: tpu-mlir builds int8 and fp32 models "
            "for bm1684") in refused.stderr
    assert not (tmp_path / "a").exists()
    assert built.exit_code == 0, built.stderr
    artifact = _artifact(built.report, "npu:sophgo@bm1684")
    assert artifact["status"] == "pass" and artifact["checked_in"].endswith("(bm1684)")
    assert artifact["precision"] == "int8"


def test_a_missing_toolchain_exits_4_with_the_install_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERTKIT_TOOLCHAINS_DIR", str(tmp_path / "no-toolchains"))
    model = conv_relu_model(tmp_path / "conv.onnx", opset=13)

    result = run_cli("convert", str(model), "-t", "npu:sophgo", out=tmp_path / "out")

    assert result.exit_code == 4, result.stderr
    assert "convertkit toolchains install sophgo" in result.stderr
    error = _artifact(result.report, "npu:sophgo")["error"]
    assert error["code"] == "missing-toolchain-sophgo"


def test_an_unknown_chip_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    model = conv_relu_model(tmp_path / "conv.onnx", opset=13)
    info = describe(onnx.load(str(model)))

    problems = SophgoPlatform().preflight(info, TargetSpec("npu", "sophgo", "bm9999"))
    result = run_cli("convert", str(model), "-t", "npu:sophgo@bm9999", out=tmp_path / "out")

    assert len(problems) == 1
    assert "unknown Sophgo chip 'bm9999'" in problems[0].message
    assert "bm1684x" in problems[0].message and "cv181x" in problems[0].message
    assert result.exit_code == 3, result.stderr
    error = _artifact(result.report, "npu:sophgo@bm9999")["error"]
    assert "unknown Sophgo chip 'bm9999'" in error["message"]
    assert not (tmp_path / "out" / "npu-sophgo-bm9999").exists()


def test_the_install_fix_removes_only_the_bundled_glibc(tmp_path: Path) -> None:
    third_party = tmp_path / "lib/python3.10/site-packages/tpu_mlir/lib/third_party"
    third_party.mkdir(parents=True)
    for name in ("libc.so.6", "libm.so.6", "libpthread.so.0", "libstdc++.so.6", "libz.so.1"):
        (third_party / name).write_bytes(b"")

    removed = remove_bundled_glibc(tmp_path)

    assert sorted(p.name for p in third_party.iterdir()) == ["libstdc++.so.6", "libz.so.1"]
    assert len(removed) == 3 and all("bundled glibc" in line for line in removed)
    assert remove_bundled_glibc(tmp_path) == []
