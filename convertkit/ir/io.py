"""Load and save ONNX models, with external data for models over protobuf's 2 GB limit."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from convertkit.errors import UsageError, first_line

PROTOBUF_LIMIT_BYTES = 2**31 - 1
# Headroom for the graph itself on top of the initializers.
EXTERNAL_DATA_THRESHOLD_BYTES = PROTOBUF_LIMIT_BYTES - 64 * 2**20


def load_model(path: Path, *, load_external_data: bool = True) -> onnx.ModelProto:
    """Load an ONNX file, or raise a UsageError that says what is wrong with it."""
    if not path.is_file():
        raise UsageError(f"ONNX model not found: {path}", hint="pass an existing .onnx file",
                         code="source-not-found")
    try:
        model = onnx.load(str(path), load_external_data=load_external_data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise UsageError(
            f"{path} is not a readable ONNX model (corrupt or truncated: {first_line(exc)})",
            hint="re-export the model, or check that the file was copied completely",
            code="corrupt-onnx",
        ) from exc
    except (FileNotFoundError, onnx.checker.ValidationError) as exc:
        # onnx 1.17 reports a missing external data file as a ValidationError.
        raise UsageError(
            f"{path}: external data file missing ({first_line(exc)})",
            hint="keep the model's external data files beside it",
            code="missing-external-data",
        ) from exc
    if not model.graph.node and not model.graph.output:
        raise UsageError(
            f"{path} holds no ONNX graph (empty or not an ONNX file)",
            hint="pass a .onnx file written by an exporter",
            code="corrupt-onnx",
        )
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
    model = onnx.load(str(path), load_external_data=False)
    files = [path, *(path.parent / location for location in external_locations(model))]
    return sum(p.stat().st_size for p in files if p.is_file())


def external_locations(model: onnx.ModelProto) -> list[str]:
    """The files, relative to the model, that hold its externally stored tensors."""
    locations = []
    for tensor in _all_tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location" and entry.value not in locations:
                    locations.append(entry.value)
    return locations


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
    path.parent.mkdir(parents=True, exist_ok=True)
    locations = external_locations(model)
    if locations:
        if external_from is None:
            raise ValueError("a model loaded without external data needs external_from")
        renamed = {locations[0]: path.name + ".data"} if len(locations) == 1 else {}
        for tensor in _all_tensors(model.graph):
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


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                yield attribute.t
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _all_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_tensors(subgraph)
