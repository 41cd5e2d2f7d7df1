"""What a target accepts, and what it would take to give it this model.

Each platform declares a ``Requirements`` record; ``preflight`` compares a model's
summary with it and returns a verdict listing every problem at once: the ones that
preparation fixes (opset conversion, fixing dynamic shapes) and the ones it cannot.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import onnx
from onnx import defs

from convertkit.ir.info import OnnxInfo
from convertkit.ir.opset import inexpressible_ops, newest_known_opset
from convertkit.spec import InputSpec


class OpSupport(Protocol):
    """Which operators a target runs, read from the toolkit's own registry."""

    source: str

    def supports(self, domain: str, op_type: str, version: int) -> bool: ...

    def table(self) -> list[tuple[str, str, str]]:
        """(domain, op_type, versions) rows for `convertkit targets --ops`."""
        ...


@dataclass(frozen=True)
class Requirements:
    """What a platform accepts, declared once on its class."""

    ops: OpSupport
    min_opset: int = 7
    max_opset: int | None = None  # None: the newest the installed onnx package knows
    static_shapes: bool = False  # every input dimension must be a number
    dtypes: frozenset[str] | None = None  # element types of inputs and outputs; None: any
    source: str = ""  # where these facts come from

    def opset_range(self) -> tuple[int, int]:
        return self.min_opset, min(self.max_opset or 10**6, newest_known_opset())


class Verdict(enum.StrEnum):
    ACCEPTED = "accepted"
    PREPARED = "accepted after preparation"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Preflight:
    """The verdict for one target, and the preparation it implies."""

    changes: tuple[str, ...] = ()  # what preparation will change
    problems: tuple[str, ...] = ()  # why the target cannot take the model
    target_opset: int | None = None  # convert to this opset first
    fix_shapes: bool = False  # fix dynamic input dims from -i first

    @property
    def verdict(self) -> Verdict:
        if self.problems:
            return Verdict.REJECTED
        return Verdict.PREPARED if self.changes else Verdict.ACCEPTED

    def to_dict(self) -> dict:
        return {"verdict": self.verdict.value, "changes": list(self.changes),
                "problems": list(self.problems)}


def preflight(model: onnx.ModelProto, info: OnnxInfo, requirements: Requirements, *,
              opset: int | None = None, inputs: Sequence[InputSpec] = ()) -> Preflight:
    """Compare ``model`` (loaded without weights is enough) with ``requirements``.
    ``opset`` is the one the user asked for; ``inputs`` the -i specs."""
    changes: list[str] = []
    problems: list[str] = []
    low, high = requirements.opset_range()
    wanted = opset or info.opset
    target_opset = None
    if opset is not None and not low <= opset <= high:
        problems.append(f"opset {opset} is outside the opsets it runs ({low}-{high})")
    elif not low <= wanted <= high:
        target_opset = min(max(wanted, low), high)
    elif wanted != info.opset:
        target_opset = wanted
    if target_opset is not None:
        blocked = inexpressible_ops(model, target_opset)
        if blocked:
            problems.append(f"cannot convert opset {info.opset} to {target_opset}: "
                            + "; ".join(blocked))
        else:
            changes.append(f"convert opset {info.opset} -> {target_opset}")

    opset_in_use = target_opset or info.opset
    unsupported = []
    for op in info.ops:
        version = opset_in_use if op.domain in ("", "ai.onnx") else info.opsets.get(
            op.domain, 1)
        if not requirements.ops.supports(op.domain, op.op_type, version):
            unsupported.append(f"{op.domain + '::' if op.domain else ''}{op.op_type}")
    if unsupported:
        problems.append(f"ops not supported at opset {opset_in_use}: {', '.join(unsupported)}")

    fix_shapes = False
    if requirements.static_shapes and info.dynamic_inputs:
        given = {s.name: s for s in inputs if not s.is_dynamic}
        missing = [t for t in info.dynamic_inputs if t.name not in given]
        for tensor in info.dynamic_inputs:
            spec = given.get(tensor.name)
            if spec is not None and not _shape_agrees(tensor.dims, spec.dims):
                problems.append(f"-i {spec} does not fit input {tensor.name} "
                                f"({'x'.join(map(str, tensor.dims))})")
        if missing:
            for tensor in missing:
                dims = "x".join(str(d) for d in tensor.dims)
                problems.append(f"input {tensor.name} has dynamic dims ({dims}) and the target "
                                f"needs static shapes: pass -i {tensor.name}:<numbers>")
        elif not problems:
            fix_shapes = True
            changes.append("fix dynamic input dims from -i: " + ", ".join(
                f"{t.name} -> {'x'.join(map(str, given[t.name].dims))}"
                for t in info.dynamic_inputs))

    if requirements.dtypes is not None:
        for tensor in (*info.inputs, *info.outputs):
            if tensor.dtype not in requirements.dtypes:
                problems.append(f"{tensor.name} has element type {tensor.dtype}; the target "
                                f"takes {', '.join(sorted(requirements.dtypes))}")
    return Preflight(tuple(changes), tuple(problems), target_opset, fix_shapes)


def _shape_agrees(model_dims: tuple, spec_dims: tuple) -> bool:
    return len(model_dims) == len(spec_dims) and all(
        isinstance(m, str) or m == s for m, s in zip(model_dims, spec_dims, strict=True))


@dataclass(frozen=True)
class OnnxSchemaOps:
    """Every operator the installed onnx package defines (the ONNX specification)."""

    source: str = "the ONNX operator schemas of the installed onnx package (onnx.defs)"

    def supports(self, domain: str, op_type: str, version: int) -> bool:
        return _schema(op_type, version, domain) is not None

    def table(self) -> list[tuple[str, str, str]]:
        return _schema_table()


@dataclass(frozen=True)
class ListedOps:
    """The operators a toolkit's documentation lists, kept in the package as a text file:
    one ``OpType`` per line, optionally ``OpType MIN-MAX`` (the opsets it is listed for) or
    ``domain::OpType``; ``#`` starts a comment. For toolkits that cannot be asked (they are
    not installed here, or live in another environment)."""

    path: Path
    source: str

    def supports(self, domain: str, op_type: str, version: int) -> bool:
        domain = "" if domain == "ai.onnx" else domain
        low, high = self._ops().get((domain, op_type), (None, None))
        return low is not None and low <= version <= high

    def table(self) -> list[tuple[str, str, str]]:
        return [(domain or "ai.onnx", op_type, f"{low}-{high}" if high < 10**6 else f"{low}+")
                for (domain, op_type), (low, high) in sorted(self._ops().items())]

    def _ops(self) -> dict[tuple[str, str], tuple[int, int]]:
        return _listed_ops(self.path)


@functools.cache
def _listed_ops(path: Path) -> dict[tuple[str, str], tuple[int, int]]:
    ops: dict[tuple[str, str], tuple[int, int]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        domain, _, op_type = fields[0].rpartition("::")
        low, high = 1, 10**6
        if len(fields) > 1:
            first, _, last = fields[1].partition("-")
            low, high = int(first), int(last) if last else 10**6
        ops[(domain, op_type)] = (low, high)
    return ops


@dataclass(frozen=True)
class OrtKernelOps:
    """The operators an ONNX Runtime execution provider has kernels for, read from ORT's
    own kernel registry, plus ops ONNX defines as functions (ORT inlines their bodies)."""

    provider: str = "CPUExecutionProvider"
    source: str = field(default="ONNX Runtime's kernel registry "
                        "(onnxruntime.capi get_all_opkernel_def), per execution provider")

    def supports(self, domain: str, op_type: str, version: int) -> bool:
        domain = "" if domain == "ai.onnx" else domain
        for low, high in _ort_kernels(self.provider).get((domain, op_type), ()):
            schema = _schema(op_type, version, domain)
            wanted = schema.since_version if schema is not None else version
            if low <= wanted <= high:
                return True
        if op_type == "Constant" and domain == "":
            return True  # ORT turns Constant nodes into initializers
        schema = _schema(op_type, version, domain)
        return schema is not None and (schema.has_function or
                                       schema.has_context_dependent_function)

    def table(self) -> list[tuple[str, str, str]]:
        rows = []
        for (domain, op_type), ranges in sorted(_ort_kernels(self.provider).items()):
            versions = ", ".join(f"{lo}+" if hi >= 2**30 else f"{lo}-{hi}" if lo != hi
                                 else str(lo) for lo, hi in sorted(set(ranges)))
            rows.append((domain or "ai.onnx", op_type, versions))
        return rows


def _schema(op_type: str, version: int, domain: str) -> defs.OpSchema | None:
    try:
        return defs.get_schema(op_type, version, "" if domain == "ai.onnx" else domain)
    except defs.SchemaError:
        return None


@functools.cache
def _schema_table() -> list[tuple[str, str, str]]:
    versions: dict[tuple[str, str], list[int]] = {}
    for schema in defs.get_all_schemas_with_history():
        versions.setdefault((schema.domain or "ai.onnx", schema.name), []).append(
            schema.since_version)
    return [(d, o, ", ".join(map(str, sorted(v)))) for (d, o), v in sorted(versions.items())]


@functools.cache
def _ort_kernels(provider: str) -> dict[tuple[str, str], list[tuple[int, int]]]:
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    kernels: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for kernel in ort_state.get_all_opkernel_def():
        if kernel.provider == provider:
            low, high = kernel.version_range
            kernels.setdefault((kernel.domain, kernel.op_name), []).append((low, high))
    return kernels
