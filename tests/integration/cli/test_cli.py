"""The command line as a user meets it: start-up, help, targets, ONNX sources, bad input."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from convertkit.checker.samples import load_samples
from tests.conftest import core_only_environment

FRAMEWORK_MODULES = ("torch", "tensorflow", "paddle", "mindspore", "keras", "openvino")
LIGHT_MODELS = Path(onnx.__file__).parent / "backend/test/data/light"


def _imported_modules(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True,
                          text=True, check=True)
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_help_and_import_load_no_framework() -> None:
    for args in (["-m", "convertkit", "--help"], ["-c", "import convertkit, convertkit.cli"],
                 ["-m", "convertkit", "convert", "--help"], ["-m", "convertkit", "targets"]):
        imported = _imported_modules(*args)
        assert "click" in imported or "convertkit" in imported  # the probe itself works
        assert not imported & set(FRAMEWORK_MODULES), (args, imported & set(FRAMEWORK_MODULES))


def test_version(cli) -> None:
    from convertkit import __version__

    result = cli("--version")

    assert result.exit_code == 0
    assert __version__ in result.stdout


def test_targets_lists_every_target_with_its_state(cli) -> None:
    result = cli("targets")

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert any(line.startswith("onnx ") and "installed" in line for line in lines)
    assert any("cpu:ort" in line and "installed" in line for line in lines)


def _tiny_onnx(path: Path, opset: int = 17) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Sigmoid", ["h"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return path


def test_onnx_opset_conversion_is_checked(cli, tmp_path: Path) -> None:
    source = _tiny_onnx(tmp_path / "tiny.onnx", opset=13)

    result = cli("convert", str(source), "--opset", "18", out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    assert result.report["source"]["onnx"]["opset"] == 18
    assert "opset converted from 13 to 18" in result.report["source"]["notes"]


def test_data_file_feeds_the_check(cli, tmp_path: Path) -> None:
    source = _tiny_onnx(tmp_path / "tiny.onnx")
    values = np.arange(12, dtype=np.float32).reshape(3, 4) - 6
    np.savez(tmp_path / "data.npz", x=values)

    result = cli("convert", str(source), "--data", str(tmp_path / "data.npz"),
                 out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    np.testing.assert_array_equal(load_samples(tmp_path / "out/check/inputs.npz")[0]["x"],
                                  values)


def test_existing_output_is_untouched_without_force(cli, tmp_path: Path) -> None:
    source = _tiny_onnx(tmp_path / "tiny.onnx")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")

    refused = cli("convert", str(source), out=out)
    replaced = cli("convert", str(source), "--force", out=out)

    assert refused.exit_code == 2 and "already exists" in refused.stderr
    assert replaced.exit_code == 0
    assert not (out / "keep.txt").exists() and (out / "report.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tiny.onnx"]


def test_output_folder_holding_the_source_is_refused_even_with_force(cli, tmp_path: Path
                                                                   ) -> None:
    source = _tiny_onnx(tmp_path / "tiny.onnx")

    result = cli("convert", str(source), "--force", out=tmp_path)

    assert result.exit_code == 2
    assert "contains the source" in result.stderr and "would delete that input" in result.stderr
    assert source.is_file()


def _write_truncated(path: Path) -> Path:
    data = (LIGHT_MODELS / "light_squeezenet.onnx").read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


@pytest.mark.parametrize(
    ("make_args", "needle"),
    [
        (lambda tmp: [str(tmp / "missing.onnx")], "source not found"),
        (lambda tmp: [str(_write_truncated(tmp / "cut.onnx"))], "not a readable ONNX model"),
        (lambda tmp: [str(_garbage(tmp / "junk.onnx"))], "ONNX"),
        (lambda tmp: [str(_tiny_onnx(tmp / "m.onnx")), "-i", "x:1xx4"], "cannot read dimension"),
        (lambda tmp: [str(_tiny_onnx(tmp / "m.onnx")), "-i", "x"], "cannot read input spec"),
        (lambda tmp: [str(_tiny_onnx(tmp / "m.onnx")), "-i", "x:1x4:complex7"], "unknown dtype"),
        (lambda tmp: [str(_tiny_onnx(tmp / "m.onnx")), "-i", "z:1x4"], "does not have"),
        (lambda tmp: [str(_tiny_onnx(tmp / "m.onnx")), "-i", "x:2x5x7"], "x:2x5x7"),
        (lambda tmp: [str(_tiny_onnx(tmp / "m.onnx")), "-t", "gpux"], "unknown target"),
        (lambda tmp: [str(_tiny_onnx(tmp / "m.onnx")), "-t", "cpu:ortt"], "did you mean"),
        (lambda tmp: [str(_tiny_onnx(tmp / "m.onnx")), "--data", str(tmp / "no.npz")],
         "--data file not found"),
        (lambda tmp: [str(tmp)], "cannot tell which framework"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, tmp_path: Path, make_args, needle) -> None:
    result = cli("convert", *make_args(tmp_path), out=tmp_path / "out")

    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("error:") == 1
    assert not (tmp_path / "out").exists()


def _garbage(path: Path) -> Path:
    path.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    return path


def test_debug_shows_the_traceback(cli, tmp_path: Path) -> None:
    result = cli("convert", str(_write_truncated(tmp_path / "cut.onnx")), "--debug",
                 out=tmp_path / "out")

    assert result.exit_code == 2
    assert "Traceback" in result.stderr


def test_python_api_matches_the_cli(tmp_path: Path) -> None:
    import convertkit

    report = convertkit.convert(str(_tiny_onnx(tmp_path / "tiny.onnx")), tmp_path / "out",
                                targets=["cpu:ort"])

    assert report.exit_code == 0
    assert [a.target for a in report.artifacts] == ["onnx", "cpu:ort"]
    assert (tmp_path / "out/report.json").is_file()


def test_python_api_takes_an_options_record(tmp_path: Path) -> None:
    import convertkit
    from convertkit.errors import UsageError
    from convertkit.options import ConvertOptions

    model = _tiny_onnx(tmp_path / "tiny.onnx")
    options = ConvertOptions.parse({"targets": ["cpu:ort"], "report_formats": "json"})

    report = convertkit.convert(str(model), tmp_path / "out", options)
    checked = convertkit.check(str(model), tmp_path / "out", None, options=ConvertOptions())

    assert [a.target for a in report.artifacts] == ["onnx", "cpu:ort"]
    assert not (tmp_path / "out/report.html").exists()
    assert checked.exit_code == 0 and len(checked.artifacts) == 2
    with pytest.raises(UsageError, match="unknown option 'target'") as caught:
        convertkit.convert(str(model), tmp_path / "other", target=["cpu"])
    assert "did you mean 'targets'?" in caught.value.hint


def test_targets_in_a_core_only_environment_says_what_each_can_do(tmp_path: Path) -> None:
    """Without TensorRT, gpu:tensorrt can only prepare the model and a trtexec command:
    `prepares`, never `installed`."""
    env = core_only_environment(tmp_path / "core")
    probe = subprocess.run([sys.executable, "-S", "-c", "import importlib.util as u; print("
                            "[m for m in ('tensorrt', 'tensorrt_rtx', 'openvino', 'torch') "
                            "if u.find_spec(m)])"], capture_output=True, text=True, env=env)
    assert probe.stdout.strip() == "[]", probe.stderr  # the environment really lacks them

    done = subprocess.run([sys.executable, "-S", "-m", "convertkit", "targets"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    states = dict(re.split(r"\s{2,}", line)[:2] for line in done.stdout.splitlines() if line)
    assert states["gpu:tensorrt"] == "prepares"
    assert states["onnx"] == states["cpu, cpu:ort"] == "installed"
    assert states["cpu:openvino"] == "missing"
