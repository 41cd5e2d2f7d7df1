"""Load and save ONNX models, with external data for models over protobuf's 2 GB limit."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from convertkit.errors import UsageError, first_line
from convertkit.ir.external_data import (
    all_tensors,
    check_external_data,
    checked_external_files,
    external_tensors,
)

PROTOBUF_LIMIT_BYTES = 2**31 - 1
# Headroom for the graph itself on top of the initializers.
EXTERNAL_DATA_THRESHOLD_BYTES = PROTOBUF_LIMIT_BYTES - 64 * 2**20


def load_model(path: Path, *, load_external_data: bool = True) -> onnx.ModelProto:
    """Load an ONNX file, or raise a UsageError that says what is wrong with it.

    Its external data locations are checked (confined to the model's folder, regular
    files, byte ranges within them) before anything reads or copies them, with or
    without ``load_external_data``: every later step trusts them."""
    if not path.is_file():
        raise UsageError(f"ONNX model not found: {path}", hint="pass an existing .onnx file",
                         code="source-not-found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise UsageError(
            f"{path} is not a readable ONNX model (corrupt or truncated: {first_line(exc)})",
            hint="re-export the model, or check that the file was copied completely",
            code="corrupt-onnx",
        ) from exc
    if not model.graph.node and not model.graph.output:
        raise UsageError(
            f"{path} holds no ONNX graph (empty or not an ONNX file)",
            hint="pass a .onnx file written by an exporter",
            code="corrupt-onnx",
        )
    if checked_external_files(path, model) and load_external_data:
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError, onnx.checker.ValidationError) as exc:
            # Checked above; this is a file that changed or vanished since.
            raise UsageError(
                f"{path}: cannot read its external data ({first_line(exc)})",
                hint="keep the model's external data files beside it",
                code="missing-external-data",
            ) from exc
    return model


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes held by the model's initializers (external ones included)."""
    total = 0
    for tensor in model.graph.initializer:
        total += len(tensor.raw_data) or _typed_bytes(tensor)
    return total


def _typed_bytes(tensor: onnx.TensorProto) -> int:
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def needs_external_data(model: onnx.ModelProto) -> bool:
    return tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD_BYTES


def stored_bytes(path: Path) -> int:
    """Bytes on disk of a model: the file and its external data files."""
    files = [path, *checked_external_files(path)]
    return sum(p.stat().st_size for p in files)


def external_locations(model: onnx.ModelProto) -> list[str]:
    """The files, relative to the model, that hold its externally stored tensors."""
    return list(dict.fromkeys(tensor.location for tensor in external_tensors(model)))


def save_model(model: onnx.ModelProto, path: Path, *, external_from: Path | None = None,
               link: bool = False) -> list[Path]:
    """Save ``model`` to ``path``. Returns every file written.

    A model loaded without its external data (``external_from`` is the folder of the file
    it came from) is written as it is and its data files are brought beside ``path``:
    hard-linked with ``link`` (our own scratch files), else copied (a user's files); a
    single data file is renamed ``<name>.data``. Weights never pass through memory, which
    is how models over 2 GB go through the hub. A model holding its weights goes to
    ``<name>.data`` when it would pass protobuf's 2 GB limit.
    """
    locations = external_locations(model)
    if locations:
        if external_from is None:
            raise ValueError("a model loaded without external data needs external_from")
        check_external_data(model, external_from)  # before a byte is copied
    path.parent.mkdir(parents=True, exist_ok=True)
    if locations:
        renamed = {locations[0]: path.name + ".data"} if len(locations) == 1 else {}
        for tensor in all_tensors(model):
            for entry in tensor.external_data:
                if entry.key == "location" and entry.value in renamed:
                    entry.value = renamed[entry.value]
        written = [path]
        for location in locations:
            source = external_from / location
            target = path.parent / renamed.get(location, location)
            if source.resolve() != target.resolve():
                _bring(source, target, link)
            written.append(target)
        onnx.save_model(model, str(path))
        return written
    if needs_external_data(model):
        data_name = path.name + ".data"
        onnx.save_model(model, str(path), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
        return [path, path.with_name(data_name)]
    onnx.save_model(model, str(path))
    return [path]


def _bring(source: Path, target: Path, link: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    if link:
        try:
            os.link(source, target)
            return
        except OSError:
            pass  # another filesystem: copy
    shutil.copyfile(source, target)
