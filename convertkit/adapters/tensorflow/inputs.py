"""The inputs to convert with: what the source declares, fitted to the user's ``-i`` or
``--data`` (no TensorFlow import). Specs here are in TensorFlow's layout unless they say
otherwise; see ``layout`` for --inputs-as-nchw."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from convertkit.adapters import LowerRequest
from convertkit.adapters.tensorflow.layout import NCHW_TO_NHWC, onnx_layout, tensorflow_layout
from convertkit.checker.samples import read_arrays, specs_from_data
from convertkit.errors import ConversionError, UsageError
from convertkit.spec import DTYPES, InputSpec


@dataclass(frozen=True)
class DeclaredInput:
    """An input as the source records it, in TensorFlow's layout. ``dims`` is None when the
    rank is unknown; a None axis is dynamic."""

    name: str
    dims: tuple[int | None, ...] | None
    dtype: str


def declared_spec(declared: DeclaredInput) -> InputSpec:
    """A declared input as an InputSpec: unknown axes named (``batch`` first, then
    ``NAME_AXIS``) so they stay dynamic in the ONNX model."""
    assert declared.dims is not None
    stem = re.sub(r"\W", "_", declared.name)
    dims = tuple(
        d if d is not None else ("batch" if axis == 0 else f"{stem}_{axis}")
        for axis, d in enumerate(declared.dims))
    return InputSpec(declared.name, dims, declared.dtype)


def resolve_inputs(declared: Sequence[DeclaredInput], user: Sequence[InputSpec],
                   nchw: Sequence[str], where: str, inputs_hint: str = "") -> list[InputSpec]:
    """The inputs to convert with, in TensorFlow's layout: the source's own, each fixed by
    the user's ``-i`` of the same name, or the user's alone when the source records none.
    ``user`` is in the ONNX model's layout (NCHW for the ``nchw`` inputs)."""
    user_tf = [tensorflow_layout(s, nchw) for s in user]
    if not declared:
        if not user_tf:
            raise UsageError(
                f"{where} does not record its input shapes",
                hint="declare each input with -i NAME:DIMS[:DTYPE]"
                + (f" ({inputs_hint})" if inputs_hint else "") + ", or pass --data FILE.npz",
                code="inputs-required")
        specs = list(user_tf)
    else:
        known = [d.name for d in declared]
        unknown = [s.name for s in user_tf if s.name not in known]
        if unknown:
            raise UsageError(
                f"-i names input(s) {', '.join(unknown)} that {where} does not have "
                f"(its inputs: {', '.join(known)})",
                hint="use the model's input names with -i", code="unknown-input")
        given = {s.name: s for s in user_tf}
        specs = [_fit(d, given.get(d.name), nchw) for d in declared]
    for spec in specs:
        if spec.dtype not in DTYPES:
            raise ConversionError(
                f"input {spec.name} of {where} has dtype {spec.dtype}, which the check "
                "cannot feed", hint=f"inputs must be one of: {', '.join(DTYPES)}",
                code="unsupported-input-dtype")
    names = [s.name for s in specs]
    for name in nchw:
        if name not in names:
            raise UsageError(
                f"--inputs-as-nchw names {name}, which is not an input of {where} "
                f"(its inputs: {', '.join(names)})",
                hint="name an NHWC image input", code="unknown-input")
        rank = len(next(s for s in specs if s.name == name).dims)
        if rank != 4:
            raise UsageError(
                f"--inputs-as-nchw {name}: the input has rank {rank}, not 4 (NHWC)",
                hint="only rank-4 NHWC inputs can be made NCHW", code="bad-layout")
    return specs


def _fit(declared: DeclaredInput, user: InputSpec | None, nchw: Sequence[str]) -> InputSpec:
    if user is None:
        if declared.dims is None:
            raise UsageError(
                f"input {declared.name} does not record its shape (unknown rank)",
                hint=f"declare it with -i {declared.name}:DIMS:{declared.dtype}",
                code="inputs-required")
        return declared_spec(declared)
    if user.dtype != declared.dtype and user.dtype != "float32":
        # float32 is -i's default: a user who wrote no dtype gets the declared one.
        raise UsageError(
            f"-i {user.name} asks for {user.dtype}, but the model's input is {declared.dtype}",
            hint=f"drop the dtype or write -i {user.name}:DIMS:{declared.dtype}",
            code="input-mismatch")
    if declared.dims is None:
        return InputSpec(user.name, user.dims, declared.dtype)
    expected = declared_spec(declared)
    layout = " (NCHW, as --inputs-as-nchw makes it)" if user.name in nchw else ""
    shown = onnx_layout(expected, nchw)
    if len(user.dims) != len(declared.dims):
        raise UsageError(
            f"-i {user.name} has {len(user.dims)} dims, the model's input has "
            f"{len(declared.dims)}: {dims_text(shown.dims)}{layout}",
            hint=f"give -i {user.name} in the model's shape{layout}", code="input-mismatch")
    dims: list[int | str] = []
    for axis, (want, got) in enumerate(zip(declared.dims, user.dims, strict=True)):
        if want is not None and got != want:
            hint = "only dynamic axes (names) can be given a size with -i"
            if user.name not in nchw and _fits_as_nchw(declared.dims, user.dims):
                hint = (f"-i {user.name} looks NCHW and the model takes NHWC: add "
                        f"--inputs-as-nchw {user.name} to make the ONNX input NCHW")
            raise UsageError(
                f"-i {onnx_layout(user, nchw)} does not fit the model's input "
                f"{dims_text(shown.dims)}{layout}: axis {axis} is fixed at {want}",
                hint=hint, code="input-mismatch")
        dims.append(got)
    return InputSpec(user.name, tuple(dims), declared.dtype)


def _fits_as_nchw(declared: Sequence[int | None], user: Sequence[int | str]) -> bool:
    if len(declared) != 4 or len(user) != 4:
        return False
    nhwc = [user[i] for i in NCHW_TO_NHWC]
    return all(want is None or want == got for want, got in zip(declared, nhwc, strict=True))


def dims_text(dims: Sequence[int | str]) -> str:
    return "x".join(str(d) for d in dims)


def user_specs(request: LowerRequest, declared: Sequence[DeclaredInput]) -> list[InputSpec]:
    """-i, or the shapes of --data's arrays for a source that records no inputs (both in
    the ONNX layout). A source's own dynamic axes stay dynamic with --data."""
    if request.options.inputs or request.options.data is None or declared:
        return list(request.options.inputs)
    return specs_from_data(read_arrays(request.options.data)[0])
