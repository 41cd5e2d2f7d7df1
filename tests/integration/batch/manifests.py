"""Manifests the batch tests share: real models that pass, and models that crash, exit,
hang, run out of memory or do not exist."""

from __future__ import annotations

from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[3]
LIGHT_MODELS = Path(onnx.__file__).parent / "backend/test/data/light"
BAD = ROOT / "tests/models/batch_models.py"

# job name -> (status, failure class) that every executor must report
EXPECTED = {
    "tiny_cnn": ("pass", None),
    "small_cnn": ("pass", None),
    "squeezenet": ("pass", None),
    "segfault": ("error", "crash"),
    "exits": ("error", "crash"),
    "hangs": ("error", "timeout"),
    "oom": ("error", "out-of-memory"),
    "bad-path": ("error", "environment"),
}


def good_and_bad_manifest(folder: Path) -> Path:
    path = folder / "manifest.yaml"
    path.write_text(f"""\
defaults:
  targets: [cpu:ort]
  timeout_s: 300
  inputs: [x:2x4]
models:
  - name: tiny_cnn
    source: {ROOT}/examples/tiny_cnn.py:build
    inputs: [x:1x3x32x32]
  - name: small_cnn
    source: {ROOT}/tests/models/torch_models.py:small_cnn
    inputs: [x:1x3x16x16]
  - name: squeezenet
    source: {LIGHT_MODELS}/light_squeezenet.onnx
    inputs: []
  - name: segfault
    source: {BAD}:Segfaults
  - name: exits
    source: {BAD}:CallsExit
  - name: hangs
    source: {BAD}:Hangs
    timeout_s: 6
  - name: oom
    source: {BAD}:AllocatesTooMuch
    memory_mb: 3000
  - name: bad-path
    source: models/no_such_model.py:build
""")
    return path


def statuses(summary: dict) -> dict[str, tuple[str, str | None]]:
    return {job["name"]: (job["status"], job["failure"]) for job in summary["jobs"]}
