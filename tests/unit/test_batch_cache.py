"""convertkit/batch/cache.py: job keys from the frozen spec's JSON and file contents, and
the job.json record that alone marks a job folder complete."""

from __future__ import annotations

import json
from pathlib import Path

from convertkit.batch.cache import (
    JOB_RECORD,
    UNCACHEABLE,
    CacheKey,
    hash_path,
    job_inputs,
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


def _key(spec: ConversionSpec, base_dir: Path) -> CacheKey:
    return job_key(spec, base_dir, job_inputs(spec, base_dir))


def test_the_key_is_the_sha256_of_the_records_canonical_json(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text("import torch\n")

    key = _key(_spec(), tmp_path)

    assert isinstance(key, CacheKey)
    assert len(key.digest()) == 64
    assert key.digest() == _key(_spec(), tmp_path).digest()
    assert key.framework == "pytorch"  # detected from the file's imports, not imported
    assert dict(key.versions)["convertkit"]


def test_the_key_changes_with_the_source_file_and_the_options(tmp_path: Path) -> None:
    source = tmp_path / "model.py"
    source.write_text("import torch\n")
    before = _key(_spec(), tmp_path).digest()

    source.write_text("import torch  # edited\n")
    after_edit = _key(_spec(), tmp_path).digest()
    other_opset = _key(_spec(opset=17), tmp_path).digest()
    other_target = _key(_spec(targets=("cpu:ort",)), tmp_path).digest()

    assert len({before, after_edit, other_opset, other_target}) == 4


def test_data_and_weights_files_are_hashed(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text("import torch\n")
    data = tmp_path / "data.npz"
    data.write_bytes(b"one")
    first = _key(_spec(data="data.npz"), tmp_path).digest()

    data.write_bytes(b"two")

    assert _key(_spec(data="data.npz"), tmp_path).digest() != first


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
    first = _key(spec, tmp_path)

    (package / "models.py").write_text("x = 2\n")

    assert first.cacheable
    assert _key(spec, tmp_path).digest() != first.digest()


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


def test_a_module_source_hashes_every_file_of_its_package(tmp_path: Path) -> None:
    package = tmp_path / "mypkg"
    (package / "layers").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text("from mypkg.layers.conv import Conv\n")
    (package / "layers" / "__init__.py").write_text("")
    (package / "layers" / "conv.py").write_text("Conv = 1\n")
    spec = _spec(source="mypkg.models:build", framework="pytorch")
    first = _key(spec, tmp_path).digest()

    (package / "layers" / "conv.py").write_text("Conv = 2\n")  # not the named module

    assert _key(spec, tmp_path).digest() != first


def test_a_python_file_source_hashes_the_code_beside_it(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text("import torch\nfrom helpers import block\n")
    (tmp_path / "helpers.py").write_text("block = 1\n")
    (tmp_path / "notes.txt").write_text("not code")
    first = _key(_spec(), tmp_path).digest()

    (tmp_path / "notes.txt").write_text("edited, still not code")
    unchanged = _key(_spec(), tmp_path).digest()
    (tmp_path / "helpers.py").write_text("block = 2\n")

    assert unchanged == first
    assert _key(_spec(), tmp_path).digest() != first


def test_paddle_parameters_beside_the_program_are_hashed(tmp_path: Path) -> None:
    (tmp_path / "model.pdmodel").write_bytes(b"program")
    (tmp_path / "model.pdiparams").write_bytes(b"weights")
    spec = _spec(source="model.pdmodel", framework="paddle")
    first = _key(spec, tmp_path)

    (tmp_path / "model.pdiparams").write_bytes(b"other weights")

    assert any(role.startswith("parameters") for role, _ in first.files)
    assert _key(spec, tmp_path).digest() != first.digest()


def test_a_module_that_is_not_found_is_never_taken_from_the_cache(tmp_path: Path) -> None:
    key = _key(_spec(source="no_such_package.models:build", framework="pytorch"), tmp_path)

    assert not key.cacheable
    assert dict(key.files)["code no_such_package/models"] == UNCACHEABLE


def test_folder_hashes_never_follow_links_out_nor_read_fifos(tmp_path: Path) -> None:
    import os

    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.npz").write_bytes(b"a")
    (folder / "escape.npz").symlink_to(outside)
    (folder / "zero").symlink_to("/dev/zero")
    os.mkfifo(folder / "pipe")
    first = hash_path(folder)  # returns: neither /dev/zero nor the FIFO was read

    outside.write_bytes(b"changed")

    assert hash_path(folder) == first  # the link counts by its text, not what it leads to
    (folder / "a.npz").write_bytes(b"b")
    assert hash_path(folder) != first
    assert hash_path(folder / "pipe") == "missing"
