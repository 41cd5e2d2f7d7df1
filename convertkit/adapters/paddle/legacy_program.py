"""Reading a legacy Paddle program (a ProgramDesc protobuf, ``.pdmodel``): its inputs,
parameters and operators. The protobuf classes come from Paddle, imported on use."""

from __future__ import annotations

from pathlib import Path

from convertkit.adapters.paddle.program import (
    VARTYPE_DTYPES,
    OperatorSite,
    ProgramInfo,
    TensorDecl,
    user_frame,
)
from convertkit.errors import UsageError, first_line


def read_legacy_program(path: Path) -> ProgramInfo:
    """Inputs, parameters and operators of a legacy ProgramDesc (.pdmodel)."""
    from paddle.base.proto import framework_pb2

    program = framework_pb2.ProgramDesc()
    try:
        program.ParseFromString(path.read_bytes())
        block = program.blocks[0]
    except Exception as exc:
        raise UsageError(f"cannot read Paddle program {path.name}: {first_line(exc, limit=240)}",
                         hint="pass a .pdmodel written by paddle.static.save_inference_model "
                         "or paddle.jit.save", code="bad-paddle-model") from exc
    variables = {v.name: v for v in block.vars}
    dense = {framework_pb2.VarType.DENSE_TENSOR} if hasattr(
        framework_pb2.VarType, "DENSE_TENSOR") else {framework_pb2.VarType.LOD_TENSOR}

    def tensor(name: str) -> TensorDecl:
        desc = variables[name].type.dense_tensor.tensor if hasattr(
            variables[name].type, "dense_tensor") else variables[name].type.lod_tensor.tensor
        return TensorDecl(name, tuple(int(d) for d in desc.dims),
                          VARTYPE_DTYPES.get(int(desc.data_type), "?"))

    feeds = []
    for op in block.ops:
        if op.type == "feed":
            column = next((a.i for a in op.attrs if a.name == "col"), len(feeds))
            name = op.outputs[0].arguments[0]
            feeds.append((column, tensor(name)))
    parameters = sorted(
        (tensor(v.name) for v in block.vars
         if v.persistable and v.type.type in dense and v.name not in ("feed", "fetch")),
        key=lambda t: t.name)
    operators = []
    for blk in program.blocks:
        place = "the main block" if blk.idx == 0 else f"block {blk.idx}"
        ops = [op for op in blk.ops if op.type not in ("feed", "fetch")]
        for index, op in enumerate(ops, start=1):
            where = f"op {index} of {len(ops)} in {place}"
            stack = [s for a in op.attrs if a.name == "op_callstack" for s in a.strings]
            frame = user_frame(stack)
            operators.append(OperatorSite(op.type, f"{where}, {frame}" if frame else where))
    return ProgramInfo(tuple(t for _, t in sorted(feeds, key=lambda f: f[0])),
                       tuple(parameters), tuple(operators))
