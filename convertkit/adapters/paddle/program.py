"""What an inference program records about itself, whichever format it is read from (a
Paddle 3 PIR ``.json``: pir_program.py; a legacy ``.pdmodel``: legacy_program.py): its
inputs, parameters and operators, and the InputSpecs its inputs give."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from convertkit.spec import InputSpec

# Element types: the VarType enum of .pdiparams and .pdmodel files.
VARTYPE_DTYPES = {0: "bool", 1: "int16", 2: "int32", 3: "int64", 4: "float16", 5: "float32",
                  6: "float64", 20: "uint8", 21: "int8", 22: "bfloat16", 23: "complex64",
                  24: "complex128"}


@dataclass(frozen=True)
class TensorDecl:
    """A tensor's name, dims (-1: unknown) and element type."""

    name: str
    dims: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class OperatorSite:
    """One operator of a program and where it is, in words."""

    type: str  # "pd_op.svd", or a legacy op type such as "svd"
    where: str


@dataclass(frozen=True)
class ProgramInfo:
    """What an inference program records about itself."""

    inputs: tuple[TensorDecl, ...]  # the feed (data) ops, in order
    parameters: tuple[TensorDecl, ...]  # persistable tensors, sorted by name (file order)
    operators: tuple[OperatorSite, ...]
    # False when some parameter could not be read: then the parameters file is not
    # compared with the program (Paddle's own loader still checks the tensor count).
    has_parameter_shapes: bool = True


def input_specs_from(declared: Sequence[TensorDecl]) -> list[InputSpec]:
    """InputSpecs for a program's inputs: unknown dims (-1) become named dynamic axes,
    ``batch`` for the first axis."""
    specs = []
    for tensor in declared:
        dims: list[int | str] = []
        for axis, dim in enumerate(tensor.dims):
            dims.append(int(dim) if dim >= 0 else dynamic_axis_name(tensor.name, axis))
        specs.append(InputSpec(tensor.name, tuple(dims), tensor.dtype))
    return specs


def dynamic_axis_name(input_name: str, axis: int) -> str:
    if axis == 0:
        return "batch"
    return re.sub(r"\W", "_", f"{input_name}_dim{axis}")


def user_frame(stack: list[str]) -> str:
    """The last frame of an op's recorded call stack that is not inside Paddle."""
    for entry in reversed(stack):
        match = re.search(r'File "([^"]+)", line (\d+), in (\S+)', entry)
        if match and "site-packages" not in match.group(1) and "/paddle/" not in match.group(1):
            return f"{Path(match.group(1)).name}:{match.group(2)} in {match.group(3)}"
    return ""
