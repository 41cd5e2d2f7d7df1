"""convertkit/batch/cache.py: job keys from the frozen spec's JSON and file contents, and
the job.json record that alone marks a job folder complete."""

from __future__ import annotations

import json
from pathlib import Path

from convertkit.batch.cache import (
    JOB_RECORD,
    CacheKey,
    hash_path,
    job_key,
    read_record,
    toolchain_versions,
    write_record,
)
from convertkit.batch.manifest import ConversionSpec
from convertkit.options import ConvertOptions
from convertkit.spec import TargetSpec


def _spec(source: str = "model.py:build", **changes) -> ConversionSpec:
    options = ConvertOptions.parse({"inputs": ["x:1x4:float32"], "targets": ["cpu"],
                                    **changes})
    return ConversionSpec(source, options)


def test_the_key_is_the_sha256_of_the_records_canonical_json(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text("import torch\n")

    key = job_key(_spec(), tmp_path)

    assert isinstance(key, CacheKey)
    assert len(key.digest()) == 64
    assert key.digest() == job_key(_spec(), tmp_path).digest()
    assert key.framework == "pytorch"  # detected from the file's imports, not imported
    assert dict(key.versions)["convertkit"]


def test_the_key_changes_with_the_source_file_and_the_options(tmp_path: Path) -> None:
    source = tmp_path / "model.py"
    source.write_text("import torch\n")
    before = job_key(_spec(), tmp_path).digest()

    source.write_text("import torch  # edited\n")
    after_edit = job_key(_spec(), tmp_path).digest()
    other_opset = job_key(_spec(opset=17), tmp_path).digest()
    other_target = job_key(_spec(targets=("cpu:ort",)), tmp_path).digest()

    assert len({before, after_edit, other_opset, other_target}) == 4


def test_data_and_weights_files_are_hashed(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text("import torch\n")
    data = tmp_path / "data.npz"
    data.write_bytes(b"one")
    first = job_key(_spec(data="data.npz"), tmp_path).digest()

    data.write_bytes(b"two")

    assert job_key(_spec(data="data.npz"), tmp_path).digest() != first


def test_folders_hash_their_file_names_and_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "saved"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "v.data").write_bytes(b"weights")
    first = hash_path(folder)

    (folder / "variables" / "v.data").write_bytes(b"weights2")

    assert hash_path(folder) != first
    assert hash_path(tmp_path / "none") == "missing"


def test_a_module_source_hashes_the_module_file(tmp_path: Path) -> None:
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text("x = 1\n")
    spec = _spec(source="mypkg.models:build", framework="pytorch")
    first = job_key(spec, tmp_path)

    (package / "models.py").write_text("x = 2\n")

    assert dict(first.files)["source"] != "module-not-found"
    assert job_key(spec, tmp_path).digest() != first.digest()


def test_toolchain_versions_come_from_metadata_without_imports() -> None:
    import sys

    had_torch = "torch" in sys.modules  # another test in this worker may have imported it
    versions = dict(toolchain_versions("onnx", (TargetSpec("cpu", "ort"),)))

    assert "onnxruntime" in versions and "onnx" in versions
    assert ("torch" in sys.modules) == had_torch


def test_only_a_record_for_the_same_key_with_its_report_counts(tmp_path: Path) -> None:
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "report.json").write_text("{}")
    write_record(folder, {"key": "abc", "has_report": True, "outcome": {}})

    assert read_record(folder, "abc") is not None
    assert read_record(folder, "other") is None
    (folder / "report.json").unlink()
    assert read_record(folder, "abc") is None  # the report it vouches for is gone


def test_a_torn_record_is_not_trusted(tmp_path: Path) -> None:
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / JOB_RECORD).write_text(json.dumps({"schema": 1, "key": "abc"})[:10])

    assert read_record(folder, "abc") is None
    assert read_record(tmp_path / "absent", "abc") is None


def test_a_toolchain_environment_counts_with_the_versions_its_install_recorded(
        tmp_path: Path, monkeypatch) -> None:
    import json

    from convertkit.toolchains import MARKER

    monkeypatch.setenv("CONVERTKIT_TOOLCHAINS_DIR", str(tmp_path))
    before = dict(toolchain_versions("onnx", (TargetSpec("npu", "rknn", "rk3588"),)))
    (tmp_path / "rknn").mkdir()
    (tmp_path / "rknn" / MARKER).write_text(json.dumps(
        {"versions": {"rknn-toolkit2": "2.5.0"}, "python": "3.11.7"}))

    after = dict(toolchain_versions("onnx", (TargetSpec("npu", "rknn", "rk3588"),)))

    assert "rknn:rknn-toolkit2" not in before
    assert after["rknn:rknn-toolkit2"] == "2.5.0" and after["rknn:python"] == "3.11.7"
