"""Load and save ONNX models, with external data for models over protobuf's 2 GB limit."""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from convertkit.errors import UsageError

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
            f"{path} is not a readable ONNX model (corrupt or truncated: {_short(exc)})",
            hint="re-export the model, or check that the file was copied completely",
            code="corrupt-onnx",
        ) from exc
    except (FileNotFoundError, onnx.checker.ValidationError) as exc:
        # onnx 1.17 reports a missing external data file as a ValidationError.
        raise UsageError(
            f"{path}: external data file missing ({_short(exc)})",
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
    """Bytes on disk of a model saved by ``save_model``: the file and its external data."""
    return sum(p.stat().st_size for p in [path, *path.parent.glob(path.name + ".data")])


def save_model(model: onnx.ModelProto, path: Path) -> list[Path]:
    """Save ``model`` to ``path``; weights go to ``<name>.data`` beside it when the model
    would pass protobuf's 2 GB limit. Returns every file written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if needs_external_data(model):
        data_name = path.name + ".data"
        onnx.save_model(model, str(path), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
        return [path, path.with_name(data_name)]
    onnx.save_model(model, str(path))
    return [path]


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__
