"""Cache keys of batch jobs, and the record that marks a job folder complete.

A job's key is the sha256 of one frozen record's canonical JSON (STYLE §8): the job's
ConversionSpec (the source and every convert option), the content hashes of every file it
names (the source file or folder, the .py file of FILE.py:NAME or the module file of
package.module:NAME, --data, --calib-data, --labels, --weights, --budget-file),
the convertkit version and the versions of the framework and toolchains it uses, read
from package metadata without importing any of them.

A job folder OUT/jobs/NAME counts as done only when OUT/jobs/NAME/job.json exists, was
written (atomically, after everything else in the folder) for the same key, and the
report.json it vouches for is there.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from convertkit import __version__
from convertkit.batch.manifest import ConversionSpec
from convertkit.errors import ConvertkitError
from convertkit.spec import SourceRef, TargetSpec
from convertkit.toolchains import recorded_versions

JOB_RECORD = "job.json"
RECORD_SCHEMA = 1

# Distributions whose version can change what a job produces.
CORE_DISTRIBUTIONS = ("onnx", "onnxruntime", "onnxslim", "numpy")
FRAMEWORK_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "pytorch": ("torch", "onnxscript", "transformers"),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "transformers"),
    "paddle": ("paddlepaddle", "paddle2onnx"),
    "mindspore": ("mindspore",),
    "onnx": (),
}
# Toolchains in the main environment; those with an environment of their own (RKNN,
# QNN, Sophgo) count with the versions their install recorded (convertkit.toolchains).
TOOLCHAIN_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "openvino": ("openvino",),
    "intel": ("openvino",),
    "tensorrt": ("tensorrt", "tensorrt-rtx"),
}


@dataclass(frozen=True)
class CacheKey:
    """Everything a job's result depends on. ``digest`` is the job's cache key."""

    conversion: dict[str, Any]  # ConversionSpec.to_dict()
    framework: str | None  # as given, else as detected from the source
    files: tuple[tuple[str, str], ...]  # (role, sha256 or "missing")
    versions: tuple[tuple[str, str], ...]  # (distribution, version), convertkit first

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def job_key(conversion: ConversionSpec, base_dir: Path) -> CacheKey:
    options = conversion.options
    framework = options.framework or _detected_framework(conversion.source, base_dir)
    files = [("source", _source_hash(conversion.source, base_dir))]
    for role, value in (("data", options.data), ("calib_data", options.calib_data),
                        ("labels", options.labels), ("weights", options.weights),
                        ("budget_file", options.budget_file)):
        if value is not None:
            files.append((role, hash_path(_resolve(value, base_dir))))
    return CacheKey(conversion.to_dict(), framework, tuple(files),
                    toolchain_versions(framework, options.targets))


def toolchain_versions(framework: str | None,
                       targets: tuple[TargetSpec, ...]) -> tuple[tuple[str, str], ...]:
    names = list(CORE_DISTRIBUTIONS) + list(FRAMEWORK_DISTRIBUTIONS.get(framework or "", ()))
    environments = []
    for target in targets:
        names += TOOLCHAIN_DISTRIBUTIONS.get(target.toolchain or target.family, ())
        environments.append(target.toolchain or target.family)
    versions = [("convertkit", __version__),
                ("python", ".".join(map(str, sys.version_info[:3])))]
    for name in dict.fromkeys(names):
        try:
            versions.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            continue
    for toolchain in dict.fromkeys(environments):
        recorded = recorded_versions(toolchain) or {}
        versions += [(f"{toolchain}:{name}", version) for name, version in recorded.items()]
    return tuple(versions)


def hash_path(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's relative file names and bytes (sorted);
    "missing" when there is nothing to read."""
    digest = hashlib.sha256()
    try:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                digest.update(str(file.relative_to(path)).encode() + b"\0")
                _update_with_file(digest, file)
                digest.update(b"\0")
        elif path.is_file():
            _update_with_file(digest, path)
        else:
            return "missing"
    except OSError:
        return "unreadable"
    return digest.hexdigest()


def _update_with_file(digest, path: Path) -> None:
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def _source_hash(source: str, base_dir: Path) -> str:
    ref = _source_ref(source, base_dir)
    if ref.path is not None:
        return hash_path(ref.path)
    module_file = _module_file(ref.module or "", base_dir)
    return hash_path(module_file) if module_file else "module-not-found"


def _source_ref(source: str, base_dir: Path) -> SourceRef:
    """The source as the job, which runs in ``base_dir``, will read it."""
    if (base_dir / source).exists():  # a path that contains ':' itself
        return SourceRef(source, base_dir / source, None, None)
    ref = SourceRef.parse(source)
    if ref.path is not None and not ref.path.is_absolute():
        ref = SourceRef(ref.text, base_dir / ref.path, ref.module, ref.attribute)
    return ref


def _module_file(module: str, base_dir: Path) -> Path | None:
    """Where `package.module` would be imported from (the job runs in ``base_dir``),
    found without importing anything."""
    parts = module.split(".")
    for root in [base_dir, *(Path(p) for p in sys.path if p)]:
        candidate = root.joinpath(*parts)
        for path in (candidate.with_suffix(".py"), candidate / "__init__.py"):
            if path.is_file():
                return path
    return None


def _detected_framework(source: str, base_dir: Path) -> str | None:
    from convertkit.registry import adapter_names, load_adapter

    ref = _source_ref(source, base_dir)
    try:
        matches = [n for n in adapter_names() if load_adapter(n).detect(ref)]
    except (ConvertkitError, OSError):
        return None
    return matches[0] if len(matches) == 1 else None


def _resolve(path: Path, base_dir: Path) -> Path:
    return path if path.is_absolute() else base_dir / path


# -- the completion record ----------------------------------------------------------------


def write_record(job_dir: Path, record: dict[str, Any]) -> None:
    """Write job.json last and atomically: a folder without it is never trusted."""
    payload = {"schema": RECORD_SCHEMA, **record}
    write_atomically(job_dir / JOB_RECORD, json.dumps(payload, indent=2) + "\n")


def read_record(job_dir: Path, key: str) -> dict[str, Any] | None:
    """The record of a complete job folder for ``key``, else None (missing, torn, another
    key, or the report it names is gone)."""
    try:
        record = json.loads((job_dir / JOB_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("schema") != RECORD_SCHEMA:
        return None
    if record.get("key") != key:
        return None
    if record.get("has_report") and not (job_dir / "report.json").is_file():
        return None
    return record


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
