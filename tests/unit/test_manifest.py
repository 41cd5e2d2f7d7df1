"""convertkit/batch/manifest.py: YAML manifests into frozen job specs, every problem with
its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from convertkit.batch.manifest import (
    DEFAULT_MEMORY_MB,
    ConversionSpec,
    JobSpec,
    ManifestError,
    _job_resources,
    load_manifest,
    parse_manifest,
)
from convertkit.errors import UsageError
from convertkit.options import ConvertOptions, option_fields
from convertkit.spec import TargetSpec

GOOD = """\
version: 1
defaults:
  targets: [cpu]
  timeout_s: 120
  memory_mb: 4096
resources:
  npu:rknn: {rknn: 1}
  cpu:openvino: {openvino: 0.5}
models:
  - source: examples/tiny_cnn.py:build
    inputs: [x:batchx3x32x32]
  - name: mnist
    source: models/mnist.onnx
    targets: [cpu, cpu:ort]
    timeout_s: 30
    memory_mb: null
    opset: 17
    optimize: false
    atol: 0.001
  - models/squeezenet.onnx
"""


def _parse(text: str, name: str = "m.yaml"):
    return parse_manifest(text, Path("/work") / name)


def _problems(text: str) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        _parse(text)
    return caught.value.problems


def test_models_get_defaults_overrides_and_names() -> None:
    manifest = _parse(GOOD)

    tiny, mnist, squeeze = manifest.jobs
    assert [j.name for j in manifest.jobs] == ["tiny_cnn.build", "mnist", "squeezenet"]
    assert (tiny.line, mnist.line, squeeze.line) == (10, 12, 20)
    assert tiny.conversion == ConversionSpec("examples/tiny_cnn.py:build", ConvertOptions.parse(
        {"inputs": ["x:batchx3x32x32:float32"], "targets": ["cpu"]}))
    assert (tiny.limits.timeout_s, tiny.limits.memory_mb) == (120.0, 4096)
    assert mnist.conversion.options.targets == (TargetSpec("cpu"), TargetSpec("cpu", "ort"))
    assert (mnist.conversion.options.opset, mnist.conversion.options.optimize,
            mnist.conversion.options.atol) == (
        17, False, 0.001)
    assert (mnist.limits.timeout_s, mnist.limits.memory_mb) == (30.0, None)
    assert manifest.base_dir == Path("/work")


def test_job_specs_survive_a_json_round_trip() -> None:
    for job in _parse(GOOD).jobs:
        assert JobSpec.from_dict(job.to_dict()) == job


def test_resources_follow_the_targets_a_job_builds() -> None:
    manifest = _parse(GOOD.replace("cpu:openvino: {openvino: 0.5}", "cpu:ort: {ort: 0.5}"))

    tiny, mnist, _ = manifest.jobs
    assert tiny.resources == ()  # `cpu` is not `cpu:ort` as written
    assert mnist.resources == (("ort", 0.5),)


def test_a_general_resource_entry_covers_specific_targets() -> None:
    resources = {"npu:rknn": {"rknn": 1.0}, "npu": {"npu": 1.0}, "npu:rknn@rk3568": {"rk": 2.0}}

    rk3588, rk3568 = TargetSpec("npu", "rknn", "rk3588"), TargetSpec("npu", "rknn", "rk3568")
    assert _job_resources((rk3588, TargetSpec("cpu")), resources) == (("npu", 1.0),
                                                                      ("rknn", 1.0))
    assert _job_resources((rk3568,), resources) == (("npu", 1.0), ("rk", 2.0),
                                                   ("rknn", 1.0))


def test_every_problem_is_reported_with_its_line() -> None:
    text = """\
defaults:
  targets: [cpu, npu:nosuch]
  timout_s: 10
models:
  - source: a.onnx
    inputs: [x:1x3:complex]
  - name: a
    source: b.onnx
    opset: seventeen
  - name: "bad name"
    source: c.onnx
  - source: d.onnx
    framework: pytorh
"""
    problems = _problems(text)

    joined = "\n".join(problems)
    assert "/work/m.yaml:2: defaults.targets: no platform builds target" in joined \
        or "/work/m.yaml:2: defaults.targets:" in joined
    assert "/work/m.yaml:3: defaults: unknown key 'timout_s' (did you mean 'timeout_s'?)" \
        in problems
    assert any(p.startswith("/work/m.yaml:6: models[0].inputs: unknown dtype 'complex'")
               for p in problems)
    assert any(p.startswith("/work/m.yaml:9: models[1].opset: must be a whole number")
               for p in problems)
    assert any(p.startswith("/work/m.yaml:10: models[2]: name 'bad name'") for p in problems)
    assert any(p.startswith("/work/m.yaml:13: models[3].framework: unknown framework 'pytorh' "
                            "(did you mean 'pytorch'?") for p in problems)


def test_duplicate_names_name_both_lines() -> None:
    problems = _problems("models:\n  - {name: a, source: x.onnx}\n  - {name: a, source: y.onnx}\n")

    assert problems == ["/work/m.yaml:3: models[1]: name 'a' is already used on line 2; give "
                        "each model a unique `name:`"]


def test_yaml_syntax_errors_name_the_line() -> None:
    problems = _problems("models:\n  - source: a.onnx\n  - source: [b.onnx\n")

    assert len(problems) == 1 and problems[0].startswith("/work/m.yaml:")
    assert "not valid YAML" in problems[0]


@pytest.mark.parametrize("text, expected", [
    ("", "the manifest is empty"),
    ("- a.onnx\n", "must be a mapping with `models:`"),
    ("defaults: {}\n", "has no `models:` list"),
    ("models: []\n", "`models:` must be a non-empty list"),
    ("models:\n  - name: x\n", "`source:` is missing"),
    ("version: 2\nmodels: [a.onnx]\n", "version 2 is not supported"),
    ("models:\n  - {source: a.onnx, timeout_s: 0}\n", "must be a number > 0"),
    ("models:\n  - {source: a.onnx, optimize: 1}\n", "must be true or false"),
    ("resources:\n  npu:rknn: 3\nmodels: [a.onnx]\n", "must be a mapping of resource names"),
    ("models:\n  - {source: a.onnx, source: b.onnx}\n", "'source' is given twice"),
])
def test_structure_problems(text: str, expected: str) -> None:
    problems = _problems(text)

    assert any(expected in p for p in problems), problems


def test_manifest_errors_are_usage_errors_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("models:\n  - {source: a.onnx, unknown: 1}\n")

    with pytest.raises(UsageError) as caught:
        load_manifest(path)

    assert caught.value.exit_code == 2
    assert caught.value.code == "bad-manifest"
    assert f"{path}:2:" in caught.value.message


def test_a_missing_manifest_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read manifest"):
        load_manifest(tmp_path / "none.yaml")


def test_default_limits() -> None:
    job = _parse("models: [a.onnx]\n").jobs[0]

    assert job.limits.memory_mb == DEFAULT_MEMORY_MB
    assert job.limits.threads is None
    assert job.conversion.options.targets == ()


def test_every_convert_option_is_a_manifest_key() -> None:
    """The manifest reads the same record as the CLI: each option under its field name,
    parsed as the command line parses it."""
    values = {"framework": "tensorflow", "inputs": ["image:1x32x32x3"],
              "weights": "w.weights.h5", "opset": 17, "signature": "serve",
              "output_names": ["logits", "probs"], "inputs_as_nchw": ["image"],
              "trust_code": True, "targets": ["cpu", "npu:rknn@rk3588"], "precision": "int8",
              "optimize": False, "data": "d.npz", "calib_data": "calibration",
              "labels": "labels.npy", "atol": "1e-3", "rtol": 0.01, "max_accuracy_drop": 2,
              "budget_file": "budgets.toml", "localize": False, "report_formats": ["junit"],
              "mixed_precision": False, "task": "text-generation-with-past",
              "decode_steps": 8}
    # This test covers all; --timeout and --memory-mb are the job's own limits there.
    assert set(values) == {spec.name for spec in option_fields() if not spec.flag.job_limit}
    lines = "\n".join(f"    {key}: {value!r}".replace("'", '"').replace("True", "true")
                      .replace("False", "false") for key, value in values.items())

    job, = _parse(f"models:\n  - source: saved\n{lines}\n").jobs

    assert job.conversion.options == ConvertOptions.parse(values)
