"""The ``.pdiparams`` file: the dims and element types of its tensors, read from their
headers without Paddle (the file stores no names), and whether it was written with the
program it is paired with."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

from convertkit.adapters.paddle.model_files import PARAMS_SUFFIX, InferenceModel
from convertkit.adapters.paddle.program import VARTYPE_DTYPES, ProgramInfo, TensorDecl
from convertkit.errors import UsageError, first_line

_DTYPE_SIZES = {"bool": 1, "int16": 2, "int32": 4, "int64": 8, "float16": 2, "float32": 4,
                "float64": 8, "uint8": 1, "int8": 1, "bfloat16": 2, "complex64": 8,
                "complex128": 16}


# A tensor's header: version (uint32), LoD level count (uint64), tensor version (uint32),
# TensorDesc length (int32). Paddle reads version 0 only.
_HEADER_BYTES = 4 + 8 + 4 + 4
_DESC_LIMIT_BYTES = 1 << 20
_RANK_LIMIT = 64  # Paddle's own limit is 9


def read_params_file(path: Path) -> list[TensorDecl]:
    """The dims and element types of the tensors in a ``.pdiparams`` file, in file order,
    read from their headers only (the data is skipped). The file stores no names.

    The file is untrusted: every count, length and dim is checked against the bytes left
    in the file before it is used, so each tensor moves the reader forward and the reading
    ends (a UsageError, exit 2, for anything that does not fit)."""
    tensors: list[TensorDecl] = []
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            while handle.tell() < size:
                start = handle.tell()
                where = f"tensor #{len(tensors)} (byte {start})"
                if size - start < _HEADER_BYTES:
                    raise ValueError(f"the file ends inside the header of {where}")
                if _unpack(handle, "<I") != 0:
                    raise ValueError(f"{where} has an unknown version")
                levels = _unpack(handle, "<Q")
                if levels > (size - handle.tell()) // 8:
                    raise ValueError(f"{where} claims {levels} LoD levels, more than the "
                                     "file holds")
                for _ in range(levels):
                    level_bytes = _unpack(handle, "<Q")
                    if level_bytes > size - handle.tell():
                        raise ValueError(f"a LoD level of {where} claims {level_bytes} bytes, "
                                         "more than the file holds")
                    handle.seek(level_bytes, 1)
                if _unpack(handle, "<I") != 0:
                    raise ValueError(f"{where} has an unknown tensor version")
                length = _unpack(handle, "<i")
                if not 0 < length <= min(size - handle.tell(), _DESC_LIMIT_BYTES):
                    raise ValueError(f"{where} has a description of {length} bytes")
                code, dims = _tensor_desc(handle.read(length))
                dtype = VARTYPE_DTYPES.get(code)
                if dtype not in _DTYPE_SIZES:
                    raise ValueError(f"{where} has an unknown element type {code}")
                if len(dims) > _RANK_LIMIT or any(d < 0 for d in dims):
                    raise ValueError(f"{where} has dims {_dims_text(dims)}")
                data_bytes = _DTYPE_SIZES[dtype]
                for dim in dims:  # Python ints: no overflow; stop once past the file
                    data_bytes *= dim
                    if data_bytes > size:
                        break
                if data_bytes > size - handle.tell():
                    raise ValueError(f"{where} ({dtype}{_dims_text(dims)}) needs more bytes "
                                     f"than the file has left ({size - handle.tell()})")
                handle.seek(data_bytes, 1)
                tensors.append(TensorDecl(f"#{len(tensors)}", tuple(dims), dtype))
    except (OSError, ValueError, struct.error) as exc:
        raise UsageError(
            f"cannot read Paddle parameters file {path.name}: {first_line(exc, limit=240)}",
            hint="pass the .pdiparams written together with the model file",
            code="bad-paddle-params") from exc
    return tensors


def _dims_text(dims: Sequence[int]) -> str:
    text = "[" + ", ".join(str(d) for d in dims[:8]) + (", ...]" if len(dims) > 8 else "]")
    return text if len(text) <= 120 else text[:117] + "..."


def _unpack(handle, layout: str) -> int:
    size = struct.calcsize(layout)
    data = handle.read(size)
    if len(data) != size:
        raise ValueError("the file ends inside a tensor header")
    return struct.unpack(layout, data)[0]


def _tensor_desc(data: bytes) -> tuple[int, list[int]]:
    """Decode a TensorDesc protobuf: field 1 the element type, field 2 the dims."""
    code, dims, index = -1, [], 0
    while index < len(data):
        key, index = _varint(data, index)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, index = _varint(data, index)
            if field == 1:
                code = value
            elif field == 2:
                dims.append(_signed(value))
        elif wire == 2:  # packed dims
            length, index = _varint(data, index)
            end = index + length
            if end > len(data):
                raise ValueError("truncated tensor header")
            while index < end:
                value, index = _varint(data, index)
                if field == 2:
                    dims.append(_signed(value))
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    return code, dims


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _varint(data: bytes, index: int) -> tuple[int, int]:
    value = shift = 0
    while shift < 64:
        if index >= len(data):
            raise ValueError("truncated tensor header")
        byte = data[index]
        index += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value & ((1 << 64) - 1), index
    raise ValueError("a varint in a tensor header is longer than 10 bytes")


def check_params(model: InferenceModel, program: ProgramInfo) -> None:
    """Raise a UsageError when the program declares parameters and no parameters file is
    beside it, or when the file beside it was written with another program."""
    if model.params_path is None:
        if program.parameters:
            raise UsageError(
                f"{model.model_path.name} declares {len(program.parameters)} parameters but "
                f"no {PARAMS_SUFFIX} file is beside it",
                hint=f"put {model.model_path.with_suffix(PARAMS_SUFFIX).name}, written with "
                f"{model.model_path.name}, in {model.model_path.parent}",
                code="params-missing")
        return
    # Read (and so bounds-check) the file before Paddle does, even when the program's
    # parameter shapes are unknown and there is nothing to compare.
    stored = read_params_file(model.params_path)
    if program.has_parameter_shapes:
        check_params_belong(model, program.parameters, stored)


def check_params_belong(model: InferenceModel, declared: Sequence[TensorDecl],
                        stored: Sequence[TensorDecl]) -> None:
    """Raise a UsageError when the parameters file was not written with this program.
    Paddle itself loads such a pair silently when the counts agree, and then computes with
    tensors of the wrong shapes."""
    model_name = model.model_path.name
    params_name = model.params_path.name if model.params_path else "(none)"
    hint = (f"pass the {PARAMS_SUFFIX} written together with {model_name} (paddle.jit.save "
            "writes both with one prefix)")
    if len(declared) != len(stored):
        raise UsageError(
            f"{model_name} and {params_name} do not belong together: the model declares "
            f"{len(declared)} parameters, the file holds {len(stored)}",
            hint=hint, code="params-mismatch")
    for want, have in zip(declared, stored, strict=True):
        if list(want.dims) != list(have.dims) or (want.dtype != "?" and want.dtype != have.dtype):
            raise UsageError(
                f"{model_name} and {params_name} do not belong together: parameter "
                f"{want.name} is {_shape_text(want)} in the model, {_shape_text(have)} in "
                "the file",
                hint=hint, code="params-mismatch")


def _shape_text(tensor: TensorDecl) -> str:
    return f"{tensor.dtype}[{'x'.join(str(d) for d in tensor.dims)}]"
