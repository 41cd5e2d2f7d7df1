"""Reading a Paddle 3 PIR program (the ``.json`` paddle.jit.save writes) without Paddle:
its inputs, parameters and operators."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from convertkit.adapters.paddle.program import OperatorSite, ProgramInfo, TensorDecl
from convertkit.errors import UsageError, first_line

# PIR's element type names.
_PIR_DTYPES = {"t_bool": "bool", "t_i8": "int8", "t_ui8": "uint8", "t_i16": "int16",
               "t_i32": "int32", "t_i64": "int64", "t_f16": "float16", "t_bf16": "bfloat16",
               "t_f32": "float32", "t_f64": "float64", "t_c64": "complex64",
               "t_c128": "complex128"}
# PIR serialises an operator's dialect as a number: "1.conv2d" is pd_op.conv2d.
_PIR_DIALECTS = {"0": "builtin", "1": "pd_op", "2": "cf", "3": "pd_dist"}


def read_pir_program(path: Path) -> ProgramInfo:
    """Inputs, parameters and operators of a PIR program file (paddle.jit.save's .json)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        blocks = document["program"]["regions"][0]["blocks"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise UsageError(f"cannot read Paddle program {path.name}: {first_line(exc, limit=240)}",
                         hint="pass a .json written by paddle.jit.save (Paddle 3)",
                         code="bad-paddle-model") from exc
    types: dict[int, str] = {}
    inputs: list[TensorDecl] = []
    parameters: list[TensorDecl] = []
    operators: list[OperatorSite] = []

    def walk(ops: list, place: str) -> None:
        counted = [op for op in ops if isinstance(op, dict) and op.get("#") != "p"]
        for op in ops:
            for value in _pir_results(op):
                if isinstance(value, dict) and "%" in value:
                    types[value["%"]] = _pir_type_text(value.get("TT"))
        for index, op in enumerate(counted, start=1):
            name = _pir_op_name(op.get("#", ""))
            operands = [types.get(v.get("%"), "?") for v in op.get("I", [])
                        if isinstance(v, dict)]
            where = f"op {index} of {len(counted)} in {place}"
            if operands:
                where += f", on {', '.join(operands)}"
            operators.append(OperatorSite(name, where))
            for region in op.get("regions", []) or []:
                for block in region.get("blocks", []):
                    walk(block.get("ops", []), f"a block inside {name} ({where})")

    top = blocks[0].get("ops", [])
    readable = True
    for op in top:
        if not isinstance(op, dict):
            continue
        if op.get("#") == "p":
            declared = _pir_parameter(op)
            readable = readable and declared is not None
            parameters.append(declared or TensorDecl(f"parameter {len(parameters)}", (), "?"))
        elif _pir_op_name(op.get("#", "")) == "pd_op.data":
            attributes = _pir_attributes(op)
            result = _pir_results(op)
            dtype = attributes.get("dtype") or _pir_type_dtype(
                result[0].get("TT") if result else None)
            inputs.append(TensorDecl(str(attributes.get("name", f"input_{len(inputs)}")),
                                     tuple(int(d) for d in attributes.get("shape", [])),
                                     str(dtype or "float32")))
    walk(top, "the main block")
    return ProgramInfo(tuple(inputs), tuple(sorted(parameters, key=lambda p: p.name)),
                       tuple(operators), has_parameter_shapes=readable)


def _pir_op_name(text: str) -> str:
    if text == "p":
        return "builtin.parameter"
    dialect, dot, name = text.partition(".")
    return f"{_PIR_DIALECTS.get(dialect, dialect)}.{name}" if dot else text


def _pir_results(op: dict) -> list:
    results = op.get("O", [])
    return [results] if isinstance(results, dict) else list(results or [])


def _pir_attributes(op: dict) -> dict[str, Any]:
    found = {}
    for attribute in op.get("A", []):
        if isinstance(attribute, dict) and "N" in attribute:
            found[attribute["N"]] = (attribute.get("AT") or {}).get("D")
    return found


def _pir_parameter(op: dict) -> TensorDecl | None:
    attributes, results = op.get("A"), _pir_results(op)
    if not (isinstance(attributes, list) and attributes and isinstance(attributes[-1], str)
            and results):
        return None
    data = (results[0].get("TT") or {}).get("D") or []
    if len(data) < 2 or not isinstance(data[1], list):
        return None
    return TensorDecl(attributes[-1], tuple(int(d) for d in data[1]),
                      _pir_type_dtype(results[0].get("TT")) or "?")


def _pir_type_dtype(tensor_type: dict | None) -> str | None:
    data = (tensor_type or {}).get("D") or []
    if not data or not isinstance(data[0], dict):
        return None
    return _PIR_DTYPES.get(str(data[0].get("#", "")).partition(".")[2])


def _pir_type_text(tensor_type: dict | None) -> str:
    dtype = _pir_type_dtype(tensor_type)
    data = (tensor_type or {}).get("D") or []
    if dtype is None or len(data) < 2 or not isinstance(data[1], list):
        return "?"
    return f"{dtype}[{','.join(str(d) for d in data[1])}]"
