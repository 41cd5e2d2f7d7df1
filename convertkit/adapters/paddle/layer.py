"""Lowering a ``paddle.nn.Layer`` named by ``FILE.py:NAME`` or ``module:NAME``: load it (and
``--weights``), find its inputs, run it in dygraph mode for the reference outputs, save it
with ``paddle.jit.save`` and export the saved program with paddle2onnx."""

from __future__ import annotations

import inspect
import linecache
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convertkit.adapters import LowerRequest, make_check_feeds, merge_specs, plan_check_samples
from convertkit.adapters.outputs import output_name, to_numpy
from convertkit.adapters.paddle.export import Exported, export
from convertkit.adapters.paddle.model_files import PARAMS_SUFFIX, PIR_SUFFIX, InferenceModel
from convertkit.adapters.paddle.pir_program import read_pir_program
from convertkit.adapters.paddle.program import TensorDecl, input_specs_from, user_frame
from convertkit.adapters.paddle.reasons import error_reason
from convertkit.adapters.paddle.safe_pickle import load_state_dict
from convertkit.adapters.python_source import model_from_python
from convertkit.errors import ConversionError, UsageError, first_line, listed
from convertkit.spec import InputSpec


def lower_layer(request: LowerRequest, paddle, scratch: Path) -> Exported:
    layer = model_from_python(request.source, paddle.nn.Layer, "a paddle.nn.Layer")
    if request.options.weights is not None:
        _load_weights(layer, request.options.weights, paddle, request.options.trust_code)
    layer.eval()
    parameters, flexible = _forward_parameters(layer)
    specs = _layer_specs(layer, request, parameters, flexible)

    example = make_check_feeds(request, specs, None)
    example_outputs = _run_layer(layer, example, specs, parameters, paddle)
    output_names = [output_name(path) for path, _ in _paddle_leaves(example_outputs, paddle)]
    savable = _savable(layer, specs, paddle)
    saved = _save_layer(savable, specs, scratch / "layer" / "model", paddle)
    program = read_pir_program(saved.model_path)
    notes = [f"saved with paddle.jit.save ({saved.format}, paddle {paddle.__version__}) "
             "from the Layer; reference outputs from the Layer in dygraph mode"]
    exporter, output_names = export(saved, program, specs, output_names, request, scratch,
                                    lambda: _operator_lines(savable, specs, paddle))

    plan = plan_check_samples(request, specs, request.export_path)
    references = []
    for feeds in plan.evaluation.samples:
        outputs = _paddle_leaves(_run_layer(layer, feeds, specs, parameters, paddle), paddle)
        references.append(dict(zip(output_names, [to_numpy(t) for _, t in outputs],
                                   strict=True)))
    return Exported(exporter, tuple(specs), tuple(output_names), plan, tuple(references),
                    tuple(notes))


def _load_weights(layer, path: Path, paddle, trust_code: bool = False) -> None:
    if trust_code:
        try:
            state = paddle.load(str(path))  # pickle: runs what the file names
        except Exception as exc:
            raise UsageError(
                f"cannot load --weights {path}: {first_line(exc, limit=240)}",
                hint="pass a state_dict saved with paddle.save(layer.state_dict(), "
                "'FILE.pdparams')", code="bad-weights") from exc
    else:
        state = load_state_dict(path)  # arrays only; anything else is refused, exit 2
    if isinstance(state, dict):  # the name table older Paddle versions saved alongside
        state = {k: v for k, v in state.items() if k != "StructuredToParameterName@@"}
    if not isinstance(state, dict) or not state:
        raise UsageError(f"--weights {path} holds a {type(state).__name__}, not a state_dict",
                         hint="save it with paddle.save(layer.state_dict(), 'FILE.pdparams')",
                         code="bad-weights")
    expected = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    given = {k: tuple(getattr(v, "shape", ())) for k, v in state.items()}
    problems = []
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [f"{k} {list(given[k])} (model: {list(expected[k])})" for k in expected
             if k in given and given[k] != expected[k]]
    if missing:
        problems.append(f"missing {listed(missing)}")
    if unexpected:
        problems.append(f"unexpected {listed(unexpected)}")
    if wrong:
        problems.append(f"shapes differ for {listed(wrong)}")
    if problems:
        raise UsageError(
            f"--weights {path.name} does not fit the model: {'; '.join(problems)}",
            hint="pass the state_dict saved from this model's architecture",
            code="weights-mismatch")
    layer.set_state_dict(state)


def _forward_signature(layer) -> inspect.Signature | None:
    """forward's signature, self included (a to_static-decorated forward unwrapped)."""
    function = getattr(type(layer).forward, "dygraph_function", None) or type(layer).forward
    try:
        return inspect.signature(function)
    except (TypeError, ValueError):
        return None


def _forward_parameters(layer) -> tuple[list[str], bool]:
    """forward's parameter names after the first (self), and whether it takes *args."""
    signature = _forward_signature(layer)
    if signature is None:
        return [], True
    values = list(signature.parameters.values())[1:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY)
    names = [p.name for p in values if p.kind in kinds]
    flexible = any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in values)
    return names, flexible


def _required_parameters(layer) -> list[str]:
    signature = _forward_signature(layer)
    values = list(signature.parameters.values())[1:] if signature else []
    return [p.name for p in values if p.default is inspect.Parameter.empty and p.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY)]


def _layer_specs(layer, request: LowerRequest, parameters: list[str],
                 flexible: bool) -> list[InputSpec]:
    from convertkit.checker.samples import read_arrays, specs_from_data

    declared = _decorated_specs(layer)
    if declared and request.options.inputs:
        specs = merge_specs(declared, request.options.inputs, "forward's to_static input_spec")
    elif declared:
        specs = declared
    else:
        specs = list(request.options.inputs)
        if not specs and request.options.data is not None:
            specs = specs_from_data(read_arrays(request.options.data)[0])
    shown = f"forward({', '.join(parameters)})" if parameters else "forward"
    if not specs:
        raise UsageError(
            "a paddle.nn.Layer does not record its input shapes",
            hint=f"declare each input with -i NAME:DIMS[:DTYPE] ({shown} takes: "
            f"{', '.join(parameters) or 'x'}), e.g. -i x:batchx3x224x224, or pass --data",
            code="inputs-required")
    if parameters and not flexible and not declared:
        unknown = [s.name for s in specs if s.name not in parameters]
        if unknown:
            raise UsageError(
                f"input(s) {', '.join(unknown)} are not parameters of {shown}",
                hint="name -i inputs after forward's parameters",
                code="unknown-input")
        missing = [n for n in _required_parameters(layer) if n not in {s.name for s in specs}]
        if missing:
            raise UsageError(
                f"{shown} needs input(s) {', '.join(missing)}, which -i does not declare",
                hint="declare every input forward needs with -i NAME:DIMS[:DTYPE]",
                code="inputs-required")
        order = {name: index for index, name in enumerate(parameters)}
        specs = sorted(specs, key=lambda s: order[s.name])
    return specs


def _decorated_specs(layer) -> list[InputSpec]:
    """The input_spec of a forward decorated with @paddle.jit.to_static(input_spec=...)."""
    function_spec = getattr(layer.forward, "_function_spec", None)
    found = getattr(function_spec, "input_spec", None) or ()
    declared = []
    for index, spec in enumerate(found):
        shape = getattr(spec, "shape", None)
        if shape is None:
            return []
        dtype = str(getattr(spec, "dtype", "float32")).removeprefix("paddle.")
        name = getattr(spec, "name", None) or f"input_{index}"
        declared.append(TensorDecl(name, tuple(-1 if d is None else int(d) for d in shape),
                                   dtype))
    return input_specs_from(declared)


def _run_layer(layer, feeds: dict[str, np.ndarray], specs: Sequence[InputSpec],
               parameters: list[str], paddle):
    tensors = [paddle.to_tensor(np.ascontiguousarray(feeds[s.name])) for s in specs]
    try:
        with paddle.no_grad():
            if parameters and all(s.name in parameters for s in specs):
                return layer(**{s.name: t for s, t in zip(specs, tensors, strict=True)})
            return layer(*tensors)
    except Exception as exc:
        shapes = ", ".join(str(s) for s in specs)
        raise UsageError(
            f"the model rejects inputs {shapes}: {error_reason(exc)}",
            hint="fix the shapes and dtypes given with -i (or the arrays in --data) so that "
            "forward accepts them",
            code="shape-rejected") from exc


def _paddle_leaves(value, paddle,
                   path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Tensors in ``value`` with their paths, in paddle.utils.flatten's order, which is the
    order of the saved program's outputs. Not outputs.tensor_leaves: like Paddle's flatten
    this sorts dict keys by value (2 before 10, where sorting by text puts "10" first) and
    walks a named tuple as a plain tuple, so its items are named by position; paddle.jit.save
    accepts a forward returning either."""
    if isinstance(value, paddle.Tensor):
        return [(path, value)]
    if isinstance(value, dict):
        return [leaf for key in sorted(value)
                for leaf in _paddle_leaves(value[key], paddle, (*path, str(key)))]
    if isinstance(value, (list, tuple)):
        return [leaf for index, item in enumerate(value)
                for leaf in _paddle_leaves(item, paddle, (*path, str(index)))]
    return []


def _paddle_input_spec(specs: Sequence[InputSpec]) -> list:
    from paddle.static import InputSpec as PaddleInputSpec

    return [PaddleInputSpec([None if isinstance(d, str) else d for d in s.dims], s.dtype,
                            s.name) for s in specs]


def _savable(layer, specs: Sequence[InputSpec], paddle):
    if _first_forward_argument(layer) == "self":
        return layer
    return _forward_with_self(layer, [s.name for s in specs], paddle)


def _save_layer(saved, specs: Sequence[InputSpec], prefix: Path, paddle) -> InferenceModel:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    try:
        paddle.jit.save(saved, str(prefix), input_spec=_paddle_input_spec(specs))
    except Exception as exc:
        raise ConversionError(
            f"paddle.jit.save could not turn forward into a static program: "
            f"{error_reason(exc)}",
            hint="forward runs in dygraph mode on these inputs but paddle.jit.to_static "
            "cannot translate it; see Paddle's dy2static limits (logs/export.log has the "
            "whole message)",
            code="jit-save-failed") from exc
    model = prefix.with_suffix(PIR_SUFFIX)
    if not model.is_file():
        raise ConversionError(f"paddle.jit.save wrote no {PIR_SUFFIX} program",
                              hint="convertkit lowers Layers with Paddle 3's PIR programs",
                              code="jit-save-failed")
    params = prefix.with_suffix(PARAMS_SUFFIX)
    return InferenceModel(model, params if params.is_file() else None)


def _operator_lines(layer, specs: Sequence[InputSpec], paddle) -> dict[str, str]:
    """For each operator type of the Layer's static program, the line of the model's code
    that created its first instance ("net.py:12 in forward"). The saved program does not
    record it; the program built in memory does. Best effort: only for error messages."""
    try:
        static = paddle.jit.to_static(layer, input_spec=_paddle_input_spec(specs),
                                      full_graph=True)
        program = static.forward.concrete_program.main_program
        lines: dict[str, str] = {}
        for op in program.global_block().ops:
            frame = user_frame(list(getattr(op, "callstack", None) or []))
            if frame:
                lines.setdefault(op.name(), frame)
        return lines
    except Exception:  # a message detail must never hide the real error
        return {}


def _first_forward_argument(layer) -> str | None:
    signature = _forward_signature(layer)
    return next(iter(signature.parameters), None) if signature else None


def _forward_with_self(layer, names: list[str], paddle):
    """paddle.jit.save only recognises a forward whose first argument is named ``self``
    (``def forward(this, x)`` fails with "forward() requires `x` arguments"). Wrap the
    Layer in one whose forward is ``forward(self, <inputs>)``; dy2static needs its source,
    which is registered with linecache."""
    arguments = ", ".join(names)
    source = f"def forward(self, {arguments}):\n    return self.inner({arguments})\n"
    filename = f"<convertkit: forward({arguments}) with self>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {}
    exec(compile(source, filename, "exec"), namespace)

    class ForwardWithSelf(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.inner = layer

    ForwardWithSelf.forward = namespace["forward"]
    return ForwardWithSelf()
