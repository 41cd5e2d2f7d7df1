"""Naming what paddle2onnx cannot convert. It aborts the process (SIGABRT) on an operator
it has no mapper for without naming it, so the program is read here and its operators are
checked against paddle2onnx's registry; its own error lines are the fallback."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from convertkit.adapters.paddle.model_files import InferenceModel
from convertkit.adapters.paddle.program import OperatorSite, ProgramInfo
from convertkit.errors import ConversionError, ConvertkitError

# Operators paddle2onnx handles outside its mapper registry (exporter.cc, IsOpsRegistered).
_PASS_THROUGH_OPS = {"pd_op.data", "pd_op.feed", "pd_op.fetch", "pd_op.if", "pd_op.while",
                     "cf.yield", "pd_op.print", "builtin.parameter", "builtin.shadow_output",
                     "feed", "fetch", "conditional_block", "select_input", "while"}
# paddle2onnx's own renaming of PIR operators to its mapper names (convert_pir_op_name).
_PADDLE2ONNX_NAMES = {
    "matmul": "matmul_v2", "batch_norm_": "batch_norm", "topk": "top_k_v2",
    "repeat_interleave_with_tensor_index": "repeat_interleave", "expand": "expand_v2",
    "assign_value_": "assign_value", "flatten": "flatten_contiguous_range",
    "unsqueeze": "unsqueeze2", "arange": "range", "argmax": "arg_max",
    "floor_divide": "elementwise_floordiv", "subtract": "elementwise_sub",
    "multiply": "elementwise_mul", "divide": "elementwise_div", "remainder": "elementwise_mod",
    "minimum": "elementwise_min", "maximum": "elementwise_max", "min": "reduce_min",
    "max": "reduce_max", "mean": "reduce_mean", "sum": "reduce_sum", "prod": "reduce_prod",
    "any": "reduce_any", "all": "reduce_all", "numel": "size", "hardswish": "hard_swish",
    "hardsigmoid": "hard_sigmoid", "add": "elementwise_add", "add_n": "sum",
    "grid_sample": "grid_sampler", "nonzero": "where_index",
}
_UNSUPPORTED_LINE = re.compile(r"not supported (?:yet|by Paddle2ONNX yet)[^,\n]*,\s*including\s+"
                               r"([^\n]+)")


def paddle2onnx_name(operator: str) -> str:
    """The mapper name paddle2onnx looks up for an operator (its convert_pir_op_name)."""
    if operator.startswith("pd_op."):
        name = operator.removeprefix("pd_op.")
    elif operator.startswith("builtin."):
        name = "builtin_" + operator.removeprefix("builtin.")
    else:
        name = operator
    return _PADDLE2ONNX_NAMES.get(name, name)


def unsupported_operators(operators: Iterable[OperatorSite],
                          supported: Iterable[str]) -> list[OperatorSite]:
    """The operators (first site of each type) that have no paddle2onnx mapper."""
    known = set(supported)
    found: dict[str, OperatorSite] = {}
    for site in operators:
        if site.type in _PASS_THROUGH_OPS or site.type in found:
            continue
        if site.type not in known and paddle2onnx_name(site.type) not in known:
            found[site.type] = site
    return list(found.values())


def operators_named_in_log(text: str) -> list[str]:
    """Operator names from paddle2onnx's "not supported yet, including a,b," line."""
    names: list[str] = []
    for match in _UNSUPPORTED_LINE.finditer(text):
        names += [n.strip() for n in match.group(1).split(",") if n.strip()]
    return list(dict.fromkeys(names))


def paddle2onnx_error_lines(text: str) -> list[str]:
    """paddle2onnx's own error lines from its output, colour codes removed."""
    lines = []
    for raw in text.splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", raw).strip()
        if "[ERROR]" in line or "Failed to convert" in line:
            line = re.sub(r"^.*?\[ERROR\](?:\[Paddle2ONNX\])?\s*", "", line)
            if line and line not in lines:
                lines.append(line)
    return lines


def explain_export_failure(model: InferenceModel, program: ProgramInfo, log: Path,
                           error: ConvertkitError, version: str,
                           operator_lines: Callable[[], dict[str, str]] | None = None,
                           ) -> ConversionError:
    """Name what paddle2onnx (``version``) could not convert: the operators it has no
    mapper for (it aborts without naming them) and where they are, else its own error
    lines from ``log``."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        text = ""
    sites = _unsupported_sites(program, operators_named_in_log(text), model.is_legacy)
    if sites:
        lines = operator_lines() if operator_lines is not None else {}
        listed = "; ".join(f"{s.type} ({s.where}" + (f", {lines[s.type]})" if s.type in lines
                                                     else ")") for s in sites[:6])
        more = f" and {len(sites) - 6} more" if len(sites) > 6 else ""
        return ConversionError(
            f"paddle2onnx {version} does not support Paddle operator"
            f"{'s' if len(sites) > 1 else ''} {listed}{more}",
            hint="replace the operator in the model's code with supported ones, or export "
            "that part separately; paddle2onnx's output is in logs/export.log",
            code="unsupported-op")
    lines = paddle2onnx_error_lines(text)
    reason = "; ".join(lines[-2:]) if lines else error.message
    return ConversionError(
        f"paddle2onnx {version} could not convert {model.model_path.name}: {reason}",
        hint="paddle2onnx's output is in logs/export.log; rerun with --debug to see it live",
        code="export-failed")


def _unsupported_sites(program: ProgramInfo, named: list[str],
                       is_legacy: bool) -> list[OperatorSite]:
    if named:
        sites = {}
        for name in named:
            site = next((s for s in program.operators
                         if name in (s.type, paddle2onnx_name(s.type))), None)
            sites[name] = site or OperatorSite(name, "where: not found in the program")
        return list(sites.values())
    try:
        from paddle2onnx.utils import get_all_supported_operators, get_all_supported_operators_pir
    except ImportError:
        return []
    supported = set(get_all_supported_operators_pir())
    if is_legacy:
        supported |= set(get_all_supported_operators())
    return unsupported_operators(program.operators, supported)
