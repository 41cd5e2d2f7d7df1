"""Cache keys of batch jobs, and the record that marks a job folder complete.

A job's key is the sha256 of one frozen record's canonical JSON (STYLE §8): the job's
ConversionSpec (the source and every convert option), the content hashes of every file
the result depends on (convertkit.input_files: the source file or folder and what comes
with it, such as an ONNX model's external data, a Paddle program's .pdiparams or a
SavedModel's variables; the Python package of FILE.py:NAME or package.module:NAME; --data,
--calib-data, --labels, --weights, --budget-file), the convertkit version and the versions
of the framework and toolchains it uses, read from package metadata without importing any
of them. Hashing never follows a link out of a folder and never reads a device or FIFO.
A job whose inputs could not all be listed (unsafe external data, a module not found,
more files than input_files lists) gets a key that is never taken from the cache.

A job folder OUT/jobs/NAME counts as done only when OUT/jobs/NAME/job.json exists, was
written (atomically, after everything else in the folder) for the same key, and the
report.json it vouches for is there.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from convertkit import __version__
from convertkit.batch.manifest import ConversionSpec
from convertkit.errors import ConvertkitError
from convertkit.input_files import InputFiles, input_files, named_path
from convertkit.spec import SourceRef, TargetSpec
from convertkit.toolchains import recorded_versions

JOB_RECORD = "job.json"
RECORD_SCHEMA = 1
UNCACHEABLE = "uncacheable"  # an input's hash when not every file it holds could be listed

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
    files: tuple[tuple[str, str], ...]  # ("role path", sha256, "missing" or UNCACHEABLE)
    versions: tuple[tuple[str, str], ...]  # (distribution, version), convertkit first

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def cacheable(self) -> bool:
        """Whether a job folder sealed with this key may stand for a new run."""
        return all(digest != UNCACHEABLE for _, digest in self.files)


def job_inputs(conversion: ConversionSpec, base_dir: Path) -> list[InputFiles] | None:
    """Every input of a job that runs in ``base_dir``; None when they cannot all be listed
    (unsafe external data: the job itself refuses it, on every run)."""
    try:
        return input_files(_source_ref(conversion.source, base_dir), conversion.options,
                           base_dir)
    except ConvertkitError:
        return None


def job_key(conversion: ConversionSpec, base_dir: Path, inputs: list[InputFiles] | None,
            hashes: dict[tuple[Path, tuple[Path, ...]], str] | None = None) -> CacheKey:
    """The key of a job that runs in ``base_dir`` and reads ``inputs`` (job_inputs).
    ``hashes``: digests computed earlier in this batch (jobs that share a package or a
    data set hash it once)."""
    options = conversion.options
    framework = options.framework or _detected_framework(
        _source_ref(conversion.source, base_dir))
    hashes = {} if hashes is None else hashes
    files = [("inputs", UNCACHEABLE)] if inputs is None else []
    for item in inputs or ():
        memo = (item.path, item.files)
        if memo not in hashes:
            hashes[memo] = hash_input(item)
        files.append((f"{item.role} {_shown(item.path, base_dir)}", hashes[memo]))
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
    return hash_input(named_path("input", path.absolute()))


def hash_input(item: InputFiles) -> str:
    """sha256 of one input: a file's bytes (a file the user named is followed if it is a
    link), or the relative names and bytes of a folder's files, where a link counts by
    its text and by the file it names only when that file lies in the folder. "missing"
    when there is nothing to read, UNCACHEABLE when not every file was listed."""
    if not item.complete:
        return UNCACHEABLE
    digest = hashlib.sha256()
    try:
        if item.is_folder:
            root = item.path.resolve()
            for file in item.files:
                digest.update(str(file.relative_to(item.path)).encode() + b"\0")
                _update_with_entry(digest, file, root)
                digest.update(b"\0")
        elif not _update_with_file(digest, item.path):
            return "missing"
    except OSError:
        return "unreadable"
    return digest.hexdigest()


def _update_with_entry(digest, path: Path, root: Path) -> None:
    """A folder's entry: a regular file's bytes; a link's text, and the bytes of the file
    it leads to when that lies inside ``root``."""
    if path.is_symlink():
        digest.update(b"link:" + os.fsencode(os.readlink(path)) + b"\0")
        target = path.resolve()
        if target.is_relative_to(root):
            _update_with_file(digest, target)
        return
    _update_with_file(digest, path)


def _update_with_file(digest, path: Path) -> bool:
    """Add a regular file's bytes; False (nothing added) when ``path`` is not one. Opened
    without blocking, so a FIFO is seen for what it is rather than waited on."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a device is not even opened
            return False
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return False
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return False
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return True


def _shown(path: Path, base_dir: Path) -> str:
    """A path in the key: relative to the manifest's folder when inside it, so that a
    moved batch folder keeps its keys."""
    try:
        return str(path.relative_to(base_dir.resolve()))
    except ValueError:
        return str(path)


def _source_ref(source: str, base_dir: Path) -> SourceRef:
    """The source as the job, which runs in ``base_dir``, will read it."""
    if (base_dir / source).exists():  # a path that contains ':' itself
        return SourceRef(source, base_dir / source, None, None)
    ref = SourceRef.parse(source)
    if ref.path is not None and not ref.path.is_absolute():
        ref = SourceRef(ref.text, base_dir / ref.path, ref.module, ref.attribute)
    return ref


def _detected_framework(ref: SourceRef) -> str | None:
    from convertkit.registry import adapter_names, load_adapter

    try:
        matches = [n for n in adapter_names() if load_adapter(n).detect(ref)]
    except (ConvertkitError, OSError):
        return None
    return matches[0] if len(matches) == 1 else None


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
