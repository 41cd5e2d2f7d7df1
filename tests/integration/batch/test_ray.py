"""`convertkit batch --executor ray` on a local Ray instance: the same jobs, the same
summary, and per-target resources that Ray schedules by."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convertkit.batch import run_batch
from tests.integration.batch.manifests import (
    EXPECTED,
    LIGHT_MODELS,
    good_and_bad_manifest,
    statuses,
)

pytestmark = pytest.mark.slow  # starting Ray and running the jobs takes over 30 s


def test_the_same_manifest_on_a_local_ray_instance_gives_the_same_summary(
        cli, tmp_path: Path) -> None:
    manifest = good_and_bad_manifest(tmp_path)

    result = cli("batch", str(manifest), "--executor", "ray", "-j", "2", out=tmp_path / "out")

    assert result.exit_code == 3, result.stdout + result.stderr
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert statuses(summary) == EXPECTED, json.dumps(summary["jobs"], indent=1)
    assert summary["executor"] == "ray"
    assert summary["counts"] == {"jobs": 8, "pass": 3, "fail": 0, "error": 5, "cached": 0}


def test_jobs_ask_ray_for_the_resources_of_their_targets(tmp_path: Path) -> None:
    import ray

    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(f"""\
resources:
  cpu:ort: {{fake_npu: 1}}
  onnx: {{absent_accelerator: 1}}
models:
  - name: on-the-npu-node
    source: {LIGHT_MODELS}/light_squeezenet.onnx
    targets: [cpu:ort]
  - name: nowhere-to-run
    source: {LIGHT_MODELS}/light_squeezenet.onnx
    targets: [onnx]
""")
    ray.init(num_cpus=2, resources={"fake_npu": 1}, include_dashboard=False,
             log_to_driver=False)
    try:
        summary = run_batch(manifest, tmp_path / "out", executor="ray")
    finally:
        ray.shutdown()

    assert statuses(summary.to_dict()) == {"on-the-npu-node": ("pass", None),
                                           "nowhere-to-run": ("error", "toolchain-missing")}
    assert "absent_accelerator=1" in summary.outcomes[1].message
    assert summary.exit_code == 4
