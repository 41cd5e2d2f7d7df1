"""A model repository with a stray onnx.py or numpy.py: run from there, convertkit and its
children import the installed packages, never those files; `module:NAME` sources still
import from the working folder, as the README says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.models.onnx_models import conv_relu_model

# Each shadows a package convertkit or its children import, and leaves a mark if imported.
SHADOWED = ("onnx", "numpy", "onnxruntime", "torch", "openvino")
MODULE_SOURCE = """\
import torch


def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
"""


def hostile_repository(folder: Path) -> Path:
    """A folder holding a model and a file named after each package in SHADOWED."""
    folder.mkdir()
    marks = folder / "marks"
    marks.mkdir()
    for name in SHADOWED:
        (folder / f"{name}.py").write_text(
            f"open({str(marks / name)!r}, 'w').close()\nraise ImportError('stray {name}.py')\n")
    conv_relu_model(folder / "model.onnx")
    (folder / "mymodels.py").write_text(MODULE_SOURCE)
    return folder


def convertkit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed `convertkit` command, run from ``cwd`` as a user would."""
    command = Path(sys.executable).parent / "convertkit"
    return subprocess.run([str(command), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "PYTHONPATH": ""})


def test_children_never_import_files_from_the_working_folder(tmp_path: Path) -> None:
    repository = hostile_repository(tmp_path / "repo")

    onnx_run = convertkit("convert", "model.onnx", "-t", "cpu:openvino", "-o", "out-onnx",
                          cwd=repository)
    module_run = convertkit("convert", "mymodels:build", "-i", "x:1x3x8x8", "-t", "cpu:ort",
                            "-o", "out-module", cwd=repository)
    python_m = subprocess.run([sys.executable, "-m", "convertkit", "inspect", "model.onnx"],
                              cwd=repository, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": ""})

    assert onnx_run.returncode == 0, onnx_run.stdout + onnx_run.stderr
    assert module_run.returncode == 0, module_run.stdout + module_run.stderr
    assert python_m.returncode == 0, python_m.stdout + python_m.stderr
    assert sorted(p.name for p in (repository / "marks").iterdir()) == []


def test_batch_jobs_never_import_files_from_the_manifest_folder(tmp_path: Path) -> None:
    repository = hostile_repository(tmp_path / "repo")
    (repository / "models.yaml").write_text("""\
models:
  - name: conv
    source: model.onnx
    targets: [cpu:ort]
  - name: module
    source: mymodels:build
    inputs: ["x:1x3x8x8"]
    targets: [onnx]
""")

    done = convertkit("batch", "models.yaml", "-o", str(tmp_path / "out"), cwd=repository)

    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in (repository / "marks").iterdir()) == []
