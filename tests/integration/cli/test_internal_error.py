"""An unexpected exception (a bug) is exit 5 with one line naming a log that holds the
traceback: never exit 1, which means "a numerical check failed", and never a bare
traceback. The bug is a real one: a third-party platform plug-in, installed as a
distribution on the path, whose build raises an exception no step expects."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.models.onnx_models import conv_relu_model
from tests.plugins import install_plugin

PLUGIN = '''
from convertkit.platforms import Platform
from convertkit.ir.preflight import OnnxSchemaOps, Requirements
from convertkit.spec import Family, Precision


class BrokenPlatform(Platform):
    family = Family.CPU
    is_family_default = False
    description = "a plug-in with a bug"
    precisions = (Precision.FP32,)
    requirements = Requirements(ops=OnnxSchemaOps(), min_opset=1, source="the plug-in")

    @classmethod
    def is_available(cls):
        return True

    def build(self, onnx_path, target, out_dir, options):
        return {}["no such key"]

    def open(self, artifact):
        return None
'''


def _install_plugin(folder: Path) -> dict[str, str]:
    """broken_plugin.py and its dist-info (entry point convertkit.platforms: broken)."""
    install_plugin(folder, "broken_plugin", PLUGIN,
                   {"convertkit.platforms": "broken = broken_plugin:BrokenPlatform"})
    return dict(os.environ, PYTHONPATH=f"{folder}{os.pathsep}{ROOT}")


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convertkit", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


def _crash_log(stderr: str) -> Path:
    match = re.search(r"the traceback is in (\S+)", stderr)
    assert match, stderr
    return Path(match.group(1))


def test_a_bug_is_exit_5_with_the_traceback_in_a_log(tmp_path: Path) -> None:
    env = _install_plugin(tmp_path / "plugin")
    model = conv_relu_model(tmp_path / "model.onnx")

    done = _run(["convert", str(model), "-t", "cpu:broken", "-o", str(tmp_path / "out")],
                env, tmp_path)

    assert done.returncode == 5, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith(("error:", "hint:"))]
    assert lines[0] == "error: convertkit failed unexpectedly: KeyError: 'no such key'"
    assert "Traceback" not in done.stderr
    log = _crash_log(done.stderr)
    assert "Traceback" in log.read_text() and "broken_plugin.py" in log.read_text()
    assert not (tmp_path / "out").exists()  # OUT is written whole or not at all
    assert not list(tmp_path.glob(".out*"))
    log.unlink()


def test_a_bug_in_a_batch_job_is_its_own_class_and_exit_5(tmp_path: Path) -> None:
    env = _install_plugin(tmp_path / "plugin")
    conv_relu_model(tmp_path / "model.onnx")
    (tmp_path / "m.yaml").write_text(
        "models:\n  - source: model.onnx\n    targets: [cpu:broken]\n"
        "  - source: model.onnx\n    name: fine\n")

    done = _run(["batch", "m.yaml", "-o", "out"], env, tmp_path)

    assert done.returncode == 5, done.stdout + done.stderr
    jobs = {job["name"]: job for job in
            json.loads((tmp_path / "out/summary.json").read_text())["jobs"]}
    assert jobs["model"]["failure"] == "internal"
    assert "KeyError" in jobs["model"]["message"]
    assert jobs["fine"]["status"] == "pass"
    assert "Traceback" in (tmp_path / "out/logs/model.log").read_text()
