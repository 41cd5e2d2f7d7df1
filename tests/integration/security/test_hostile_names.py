"""Names from a hostile model (node, tensor, input and output names are whatever its author
wrote): they must not run as shell commands in the scripts convertkit writes, reach the
terminal as control characters, break junit.xml, clash with numpy's keywords, or become
paths outside OUT. Each test builds the model with onnx.helper and runs the real CLI."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convertkit.sample_files import load_samples

# A newline ends the comment of command.sh; the `#` after the command comments out what
# the script writes after the name, so the injected line runs cleanly when unescaped.
INJECTED_NODE = "x\ntouch PWNED\n#"
TERMINAL_NAMES = ("in\x1b[2J\x1b]0;title\x07\r\u202e", "out\x01\x0b\x1b[31m")
# One word for each way a shell could be talked into running something.
SHELL_NAME = "x'\n$(touch PWNED1)`touch PWNED2`; touch PWNED3 #\"\\$HOME\u202e"
SHELL_OUTPUT = "y\ntouch PWNED4"
MARKERS = ("PWNED", "PWNED1", "PWNED2", "PWNED3", "PWNED4")
VENV_BIN = str(Path(sys.executable).parent)


def _model(path: Path, *, scale: float = 1.0, node: str = "mm", inp: str = "x",
           hidden: str = "h", out: str = "y") -> Path:
    """inp -> Relu -> hidden -> MatMul(W * scale) named ``node`` -> out. Two of them with
    different scales fail a check at ``node``, with ``hidden`` as the repro's input."""
    weight = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32) * scale
    graph = helper.make_graph(
        [helper.make_node("Relu", [inp], [hidden], name="relu"),
         helper.make_node("MatMul", [hidden, "W"], [out], name=node)],
        "m", [helper.make_tensor_value_info(inp, TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(weight, "W")])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _failing_pair(folder: Path, **names: str) -> tuple[Path, Path]:
    return (_model(folder / "reference.onnx", **names),
            _model(folder / "candidate.onnx", scale=1.5, **names))


def _raw_controls(text: str) -> list[str]:
    """Characters no model name may put on a terminal: controls (but our own line breaks),
    bidi and other format characters, line and paragraph separators."""
    return sorted({char for char in text if char != "\n" and unicodedata.category(char)
                   in ("Cc", "Cf", "Zl", "Zp")})


def _files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*")}


def test_a_node_name_cannot_inject_a_command_into_repro_command_sh(cli, tmp_path):
    reference, candidate = _failing_pair(tmp_path / "models", node=INJECTED_NODE)
    out = tmp_path / "out"

    result = cli("check", str(reference), str(candidate), out=out)

    assert result.exit_code == 1, result.stderr
    script = out / "repro" / "command.sh"
    assert script.read_text().splitlines()[1] == (
        "# The mismatch at MatMul 'x\\ntouch PWNED\\n#' on its own: exits 1.")
    # Run it as a user would, from another folder, with convertkit on PATH.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(["bash", str(script)], cwd=elsewhere, capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"})
    assert done.returncode == 1, done.stdout + done.stderr  # the mismatch, on its own
    assert not (elsewhere / "PWNED").exists() and not (out / "repro" / "PWNED").exists()
    assert "x\\ntouch PWNED\\n#" in result.stdout and not _raw_controls(result.stdout)


def test_control_characters_in_names_reach_the_terminal_escaped(cli, tmp_path):
    inp, out_name = TERMINAL_NAMES
    reference, candidate = _failing_pair(tmp_path, inp=inp, out=out_name,
                                         node="mm\x1b[2J", hidden="h\r\u202e")
    wrong_data = tmp_path / "wrong.npz"
    np.savez(wrong_data, other=np.zeros((2, 4), np.float32))

    converted = cli("convert", str(reference), "-t", "cpu:ort", out=tmp_path / "converted")
    failed = cli("check", str(reference), str(candidate), out=tmp_path / "checked")
    refused = cli("convert", str(reference), "--data", str(wrong_data),
                  out=tmp_path / "refused")
    inspected = cli("inspect", str(reference))

    assert (converted.exit_code, failed.exit_code, refused.exit_code,
            inspected.exit_code) == (0, 1, 2, 0), (converted.stderr, failed.stderr,
                                                   refused.stderr, inspected.stderr)
    for result in (converted, failed, refused, inspected):
        assert not _raw_controls(result.stdout + result.stderr), result.stdout + result.stderr
    assert "out\\x01\\x0b\\x1b[31m" in converted.stdout
    assert "MatMul 'mm\\x1b[2J'" in failed.stdout
    assert "in\\x1b[2J\\x1b]0;title\\x07\\r\\u202e" in refused.stderr
    assert "in\\x1b[2J\\x1b]0;title\\x07\\r\\u202e" in inspected.stdout
    error_lines = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1


def test_reports_stay_valid_for_control_characters_in_names(cli, tmp_path):
    reference, candidate = _failing_pair(tmp_path, out="t\x01\x0b\x1b", node="n\x00\x0c",
                                         inp="i\ufffe")
    out = tmp_path / "out"

    result = cli("check", str(reference), str(candidate), out=out)

    assert result.exit_code == 1, result.stderr
    junit = ET.parse(out / "junit.xml").getroot()  # raises on invalid XML
    failure = junit.find("testsuite/testcase/failure")
    assert failure is not None and "t\\x01\\x0b\\x1b" in failure.get("message", "")
    assert "n\\x00\\x0c" in (failure.text or "")
    report = result.report
    assert list(report["artifacts"][0]["metrics"]) == ["t\x01\x0b\x1b"]  # JSON keeps names
    html = (out / "report.html").read_text(encoding="utf-8")
    assert not _raw_controls(html.replace("\t", "")) and "t\\x01\\x0b\\x1b" in html


@pytest.mark.parametrize("names", [("file", "allow_pickle"), ("allow_pickle", "file")])
def test_inputs_named_like_numpy_keywords_convert_and_read_back(cli, tmp_path, names):
    inp, hidden = names
    reference, candidate = _failing_pair(tmp_path, inp=inp, hidden=hidden)

    converted = cli("convert", str(reference), "-t", "cpu:ort", out=tmp_path / "converted")
    failed = cli("check", str(reference), str(candidate), out=tmp_path / "checked")

    assert converted.exit_code == 0, converted.stderr
    samples = load_samples(tmp_path / "converted" / "check" / "inputs.npz")
    assert [list(sample) for sample in samples] == [[inp]] * len(samples) and samples
    assert failed.exit_code == 1, failed.stderr
    repro = failed.report["artifacts"][0]["localization"]["repro"]
    assert repro["inputs"] == [hidden]  # cut at the Relu's output, saved under its name
    with np.load(tmp_path / "checked" / "repro" / "inputs.npz") as archive:
        assert archive.files == [hidden] and archive[hidden].shape == (2, 4)


def test_names_that_look_like_paths_never_create_files_outside_out(cli, tmp_path):
    work = tmp_path / "a" / "b" / "work"
    reference, candidate = _failing_pair(work, inp="../../evil", hidden="../../../evil_h",
                                         out="/tmp/evil_out", node="../../evil_node")
    before = _files(tmp_path)

    converted = cli("convert", str(reference), "-t", "cpu:ort", out=work / "converted",
                    cwd=work)
    failed = cli("check", str(reference), str(candidate), out=work / "checked", cwd=work)

    assert (converted.exit_code, failed.exit_code) == (0, 1), converted.stderr + failed.stderr
    new = _files(tmp_path) - before
    outs = (work / "converted", work / "checked")
    assert new and all(path in outs or path.parent in outs or
                       any(o in path.parents for o in outs) for path in new), sorted(new)
    assert not Path("/tmp/evil_out").exists() and not (tmp_path / "a" / "evil").exists()
    assert failed.report["artifacts"][0]["localization"]["repro"]["inputs"] == [
        "../../../evil_h"]


def test_a_name_no_npz_can_store_is_refused_with_exit_2(cli, tmp_path):
    model = _model(tmp_path / "model.onnx", inp="a\0b")

    result = cli("convert", str(model), "-t", "cpu:ort", out=tmp_path / "out")

    assert result.exit_code == 2, result.stderr
    assert "error: the tensor name 'a\\x00b' holds a NUL character" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def _fake_tool(folder: Path, name: str) -> Path:
    """A stand-in for a vendor tool that is not here, only to observe the arguments a
    generated script passes: it writes them NUL-separated to ARGS_FILE."""
    folder.mkdir(exist_ok=True)
    tool = folder / name
    tool.write_text('#!/bin/sh\nfor a in "$@"; do printf \'%s\\0\' "$a"; done > "$ARGS_FILE"\n')
    tool.chmod(0o755)
    return folder


def _run_script(script: Path, fake_bin: Path, cwd: Path, **env: str) -> list[str]:
    args_file = cwd / f"{script.stem}.args"
    done = subprocess.run(["sh", str(script)], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **env, "ARGS_FILE": str(args_file),
                                           "PATH": f"{fake_bin}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    return args_file.read_bytes().decode().split("\0")[:-1]


def test_generated_toolchain_scripts_pass_hostile_names_as_single_words(cli, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", [SHELL_NAME], [SHELL_OUTPUT], name="n\ntouch PWNED")], "m",
        [helper.make_tensor_value_info(SHELL_NAME, TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info(SHELL_OUTPUT, TensorProto.FLOAT, [2, 4])])
    model = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    out = tmp_path / "out"

    result = cli("convert", str(model), "-t", "npu:ascend", "-t", "gpu:tensorrt",
                 "-t", "npu:intel", out=out)

    assert result.exit_code == 0, result.stderr
    atc, trtexec, compile_npu = (out / "npu-ascend" / "atc.sh", out / "gpu-tensorrt" /
                                 "trtexec.sh", out / "npu-intel" / "compile_npu.sh")
    for script in (atc, trtexec, compile_npu):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
        command = [line for line in script.read_text().splitlines()
                   if not line.startswith("#")]
        assert shlex.split("\n".join(command), comments=True)  # balanced quotes
    fake_bin = _fake_tool(_fake_tool(tmp_path / "bin", "atc"), "trtexec")
    python = _fake_tool(tmp_path / "bin", "python")
    runs = tmp_path / "runs"
    runs.mkdir()

    atc_args = _run_script(atc, fake_bin, runs)
    trtexec_args = _run_script(trtexec, fake_bin, runs)
    compile_args = _run_script(compile_npu, fake_bin, runs, PYTHON=str(python / "python"))

    assert f"--input_shape={SHELL_NAME}:2,4" in atc_args
    assert trtexec_args[0] == "--onnx=model.onnx" and compile_args[-1] == "NPU"
    assert SHELL_NAME not in trtexec.read_text() + compile_npu.read_text()
    for folder in (tmp_path, runs, out / "npu-ascend", out / "gpu-tensorrt",
                   out / "npu-intel"):
        assert not any((folder / marker).exists() for marker in MARKERS)
