"""Confine an ONNX model's external data to the model's own folder.

A tensor stored outside the model names a file by its ``location`` and a byte range by
``offset`` and ``length``. onnx, ONNX Runtime and ``io.save_model`` (which copies the
files into OUT) all follow a location as written, so a hostile model could name
``../x`` (written beside the user's folder), ``/etc/passwd`` (copied into OUT) or
``/dev/zero`` (read without end). Every location is checked here, by path and
``stat`` alone, before anything opens the file: it resolves inside the model's folder
(symlinks included), it is a regular file, and each byte range lies within it.
"""

from __future__ import annotations

import functools
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import onnx
from google.protobuf.message import DecodeError

from convertkit.errors import UsageError, first_line

# The keys onnx and ONNX Runtime read. onnx copies every key onto an object with
# setattr, so an unknown key is refused rather than passed on.
KNOWN_KEYS = frozenset({"location", "offset", "length", "checksum", "basepath"})
_DIGITS = re.compile(r"[0-9]{1,20}")
_HINT = ("an ONNX model's external data files belong in its folder (or a subfolder), "
         "named by relative locations: re-save it with onnx.save_model(..., "
         "save_as_external_data=True)")


@dataclass(frozen=True)
class ExternalTensor:
    """One externally stored tensor, as its entries name it."""

    name: str
    location: str
    offset: str | None
    length: str | None
    unknown_keys: tuple[str, ...]


def checked_external_files(model_path: Path, model: onnx.ModelProto | None = None) -> list[Path]:
    """The external data files of the ONNX model at model_path, each checked (inside the
    model's folder, a regular file, every tensor's offset+length within it); raises
    UsageError (exit 2, code 'unsafe-external-data', 'bad-external-data' or
    'missing-external-data') naming the tensor and the location otherwise.
    Reads the model without its external data when model is None."""
    tensors = _entries_of(model_path) if model is None else tuple(external_tensors(model))
    return _check(tensors, model_path.parent, model_path)


def check_external_data(model: onnx.ModelProto, folder: Path) -> list[Path]:
    """The resolved data files of ``model``, whose locations are relative to ``folder``,
    each checked as ``checked_external_files`` says. No file is opened."""
    return _check(tuple(external_tensors(model)), folder, folder)


def _check(tensors: tuple[ExternalTensor, ...], folder: Path, where: Path) -> list[Path]:
    root = folder.resolve()
    files: list[Path] = []
    sizes: dict[Path, int] = {}
    for tensor in tensors:
        if tensor.unknown_keys:
            raise _unsafe(where, tensor, "has unknown external data keys "
                          + ", ".join(_shown(key) for key in tensor.unknown_keys),
                          code="bad-external-data")
        path = _confined(root, where, tensor)
        if path not in sizes:
            sizes[path] = _regular_file_size(path, where, tensor)
            files.append(path)
        _check_range(sizes[path], where, tensor)
    return files


def external_tensors(model: onnx.ModelProto) -> Iterator[ExternalTensor]:
    """Every tensor of the model stored outside it: initializers, sparse initializers,
    tensors in node attributes, in subgraphs and in local functions."""
    for tensor in all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL and not tensor.external_data:
            continue
        entries: dict[str, str] = {}
        for entry in tensor.external_data:
            entries[entry.key] = entry.value
        yield ExternalTensor(
            name=tensor.name, location=entries.get("location", ""),
            offset=entries.get("offset"), length=entries.get("length"),
            unknown_keys=tuple(key for key in entries if key not in KNOWN_KEYS))


def _confined(root: Path, where: Path, tensor: ExternalTensor) -> Path:
    location = tensor.location
    if not location:
        raise _unsafe(where, tensor, "names no location", code="bad-external-data")
    if "\0" in location:
        raise _unsafe(where, tensor, "is not a file name")
    # Both separators: a model written on Windows names its files with backslashes.
    parts = PurePosixPath(location.replace("\\", "/")).parts
    if (os.path.isabs(location) or location.startswith(("/", "\\"))
            or re.match(r"[A-Za-z]:[\\/]", location) or ".." in parts):
        raise _unsafe(where, tensor, "lies outside the model's folder")
    try:
        # strict=False: a missing file is reported below, as missing.
        resolved = (root / location).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise _unsafe(where, tensor, f"cannot be resolved ({first_line(exc)})") from exc
    if not resolved.is_relative_to(root):
        raise _unsafe(where, tensor, "leads outside the model's folder through a symlink")
    return resolved


def _regular_file_size(path: Path, where: Path, tensor: ExternalTensor) -> int:
    try:
        info = path.lstat()  # resolved: no symlink is left to follow
    except FileNotFoundError as exc:
        raise UsageError(
            f"{where}: tensor {_shown(tensor.name)} keeps its data in "
            f"{_shown(tensor.location)}, which does not exist",
            hint="keep the model's external data files beside it",
            code="missing-external-data") from exc
    except OSError as exc:
        raise _unsafe(where, tensor, f"cannot be read ({first_line(exc)})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise _unsafe(where, tensor, f"is not a regular file (a {_file_kind(info.st_mode)})")
    return info.st_size


def _check_range(size: int, where: Path, tensor: ExternalTensor) -> None:
    numbers = {}
    for key, value in (("offset", tensor.offset), ("length", tensor.length)):
        if value is None:
            continue
        if not _DIGITS.fullmatch(value):
            raise _unsafe(where, tensor, f"has {key} {_shown(value)}, not a byte count",
                          code="bad-external-data")
        numbers[key] = int(value)
    offset = numbers.get("offset", 0)
    length = numbers.get("length", max(size - offset, 0))
    if offset + length > size:
        raise _unsafe(where, tensor, f"has bytes {offset}..{offset + length} but the file "
                      f"holds {size}", code="bad-external-data")


def _unsafe(where: Path, tensor: ExternalTensor, problem: str, *,
            code: str = "unsafe-external-data") -> UsageError:
    return UsageError(
        f"{where}: tensor {_shown(tensor.name)} keeps its data in {_shown(tensor.location)}, "
        f"which {problem}; nothing was read",
        hint=_HINT, code=code)


def _shown(text: str, limit: int = 200) -> str:
    """A string from the model, quoted on one line with control characters escaped."""
    quoted = repr(text)
    return quoted if len(quoted) <= limit else quoted[:limit] + "...'"


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "folder"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return "special file"


def _entries_of(path: Path) -> tuple[ExternalTensor, ...]:
    """The external tensors of the model file at ``path``, read without their data. The
    same file (by inode, size and time) is parsed once per process: ONNX Runtime sessions
    open the hub model several times, and a model with inline weights takes a while to
    parse (0.5 s for 400 MB). The data files themselves are checked afresh every time."""
    try:
        info = path.stat()
    except OSError as exc:
        raise UsageError(f"ONNX model not found: {path}", hint="pass an existing .onnx file",
                         code="source-not-found") from exc
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{path} is not a regular file (a {_file_kind(info.st_mode)})",
                         hint="pass an existing .onnx file", code="source-not-found")
    return _parsed(str(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _parsed(path: str, *identity: int) -> tuple[ExternalTensor, ...]:
    return tuple(external_tensors(_graph_only(Path(path))))


def _graph_only(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as exc:
        raise UsageError(
            f"{path} is not a readable ONNX model (corrupt or truncated: {first_line(exc)})",
            hint="re-export the model, or check that the file was copied completely",
            code="corrupt-onnx") from exc


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a model holds, wherever it is stored."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    yield from _node_tensors(graph.node)


def _node_tensors(nodes: Iterator[onnx.NodeProto]) -> Iterator[onnx.TensorProto]:
    for node in nodes:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield attribute.sparse_tensor.values
                yield attribute.sparse_tensor.indices
            for sparse in attribute.sparse_tensors:
                yield sparse.values
                yield sparse.indices
            if attribute.HasField("g"):
                yield from _graph_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _graph_tensors(subgraph)
