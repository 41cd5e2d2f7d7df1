"""PyTorch sources: FILE.py:NAME / module:NAME (an nn.Module or a callable returning one),
TorchScript files (.pt/.pth from torch.jit.save) and ExportedPrograms (.pt2).

Exporter strategy: torch.onnx's dynamo exporter first, the TorchScript exporter as the
fallback. The report says which one produced the model and why the other was not used.
"""

from __future__ import annotations

import inspect
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from convertkit.adapters import (
    Adapter,
    Lowered,
    LowerRequest,
    is_renamed_single_input,
    make_check_feeds,
    plan_check_samples,
    save_check_data,
)
from convertkit.adapters.hf_folder import is_hf_folder
from convertkit.adapters.outputs import output_name, to_numpy
from convertkit.adapters.python_source import model_from_python, source_mentions
from convertkit.adapters.torch_archives import check_archive, check_sample_inputs
from convertkit.dependencies import require
from convertkit.errors import ConversionError, UsageError, first_line, listed
from convertkit.spec import InputSpec, SourceRef

if TYPE_CHECKING:
    import torch

TORCHSCRIPT_SUFFIXES = {".pt", ".pth", ".ptl"}
EXPORTED_PROGRAM_SUFFIXES = {".pt2"}
_OPERATOR = re.compile(r"(aten::[\w.]+|aten\.[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)?|prim::\w+|"
                       r"torchvision::\w+|[a-z_]+::[A-Za-z_]\w+)")


@dataclass
class _LoadedModel:
    module: Any  # nn.Module, ScriptModule or ExportedProgram
    kind: str  # "module" | "torchscript" | "exported-program"
    parameter_names: list[str]  # forward's parameters, in order (empty: positional only)
    declared: list[InputSpec]  # input specs the model records itself (ExportedProgram)

    def call(self, feeds: dict[str, Any]) -> Any:
        import torch

        with torch.no_grad():
            if self.kind == "exported-program":
                return self.module.module()(*feeds.values())
            if self.parameter_names:
                return self.module(**feeds)
            return self.module(*feeds.values())


class PyTorchAdapter(Adapter):
    name: ClassVar[str] = "pytorch"
    # --trust-code: let torch.export.load (.pt2) and torch.load (--weights) unpickle, and
    # a Hugging Face folder run its own code or load pickled weights. --task: what a
    # Hugging Face model is exported as.
    options: ClassVar[frozenset[str]] = frozenset({"trust_code", "task"})

    def detect(self, source: SourceRef) -> bool:
        if is_hf_folder(source.path):
            return True
        if source.path is not None and source.path.suffix.lower() in (
            TORCHSCRIPT_SUFFIXES | EXPORTED_PROGRAM_SUFFIXES
        ):
            return True
        return source.is_python_object and source_mentions(source, ("torch",))

    def lower(self, request: LowerRequest) -> Lowered:
        torch = _import_torch()
        if is_hf_folder(request.source.path):
            return _lower_hf_folder(request)
        loaded = _load(request, torch)
        if _is_pretrained_model(loaded.module):
            lowered = _lower_pretrained(loaded.module, request)
            if lowered is not None:
                return lowered
        elif request.options.task is not None:
            raise UsageError("--task applies to Hugging Face folders and transformers "
                             "models only", hint="drop --task",
                             code="option-not-applicable")
        return _lower_module(loaded, request, torch)


def _lower_module(loaded: _LoadedModel, request: LowerRequest, torch,
                  notes: Sequence[str] = ()) -> Lowered:
    """Export a loaded module, and write the check's samples and its outputs for them."""
    specs = _input_specs(loaded, request)
    if is_renamed_single_input(specs, loaded.parameter_names):
        loaded = replace(loaded, parameter_names=[])  # called positionally
    example = _to_tensors(make_check_feeds(request, specs, None), torch)
    output_names = _output_names(_run(loaded, example, specs, request))

    exporter, export_notes = _export(loaded, example, specs, output_names, request,
                                     torch)
    plan = plan_check_samples(request, specs, request.export_path)
    references = []
    for feeds in plan.evaluation.samples:
        outputs = _flatten(_run(loaded, _to_tensors(feeds, torch), specs, request))
        references.append({name: to_numpy(value) for name, value in
                           zip(output_names, outputs, strict=True)})
    return Lowered(
        framework=PyTorchAdapter.name, onnx_path=request.export_path,
        check=save_check_data(request, plan, references), exporter=exporter,
        inputs=tuple(specs), output_names=tuple(output_names),
        notes=(*notes, *export_notes),
    )


def _import_torch():
    return require("torch", name="PyTorch", extra="torch")


# --- Hugging Face models -----------------------------------------------------------------

def _lower_hf_folder(request: LowerRequest) -> Lowered:
    from convertkit.adapters import hf_export

    assert request.source.path is not None
    if request.options.weights is not None:
        raise UsageError("--weights does not apply to a Hugging Face folder",
                         hint="the folder holds its weights; drop --weights",
                         code="weights-not-applicable")
    require("transformers", name="transformers", extra="torch")
    model, task, notes = hf_export.load_folder(request.source.path, request.options.task,
                                               request.options.trust_code)
    return _lower_task(model, task, request, notes)


def _is_pretrained_model(module: Any) -> bool:
    # transformers is imported only when the model's own code did.
    import sys

    if "transformers" not in sys.modules:
        return False
    from convertkit.adapters.hf_export import is_pretrained_model

    return is_pretrained_model(module)


def _lower_pretrained(model: Any, request: LowerRequest) -> Lowered | None:
    """A PreTrainedModel a factory returned: as its task when that is a decoder with a
    KV cache or --task names one; None to export it as any module."""
    from convertkit.adapters import hf_export

    task = hf_export.task_of_model(model, request.options.task)
    if not task.with_past and request.options.task is None:
        return None
    return _lower_task(model, task, request, [])


def _lower_task(model: Any, task: Any, request: LowerRequest, notes: list[str]) -> Lowered:
    from convertkit.adapters import hf_export

    model.eval()
    if task.encoder_decoder:
        from convertkit.adapters.hf_seq2seq import lower_seq2seq

        return lower_seq2seq(model, request, notes)
    if task.with_past:
        return hf_export.lower_decoder(model, request, notes)
    module, parameters, declared = hf_export.task_module(model, task)
    return _lower_module(_LoadedModel(module, "module", parameters, declared), request,
                         _import_torch(), notes)


# --- loading -----------------------------------------------------------------------------

def _load(request: LowerRequest, torch) -> _LoadedModel:
    source = request.source
    trust_code = request.options.trust_code
    if source.is_python_object:
        module = model_from_python(source, torch.nn.Module, "an nn.Module")
        if request.options.weights is not None:
            _load_weights(module, request.options.weights, torch, trust_code)
        elif trust_code:
            _refuse_trust_code(source.text)
        module.eval()
        return _LoadedModel(module, "module", _forward_parameters(module), [])
    assert source.path is not None
    if request.options.weights is not None:
        raise UsageError(
            "--weights applies to FILE.py:NAME and module:NAME sources only",
            hint=f"{source.path.name} already holds its weights; drop --weights",
            code="weights-not-applicable",
        )
    if source.path.suffix.lower() in EXPORTED_PROGRAM_SUFFIXES:
        return _load_exported_program(source.path, torch, trust_code)
    if trust_code:
        _refuse_trust_code(source.path.name)
    return _load_torchscript(source.path, torch)


def _refuse_trust_code(source: str) -> None:
    raise UsageError(f"--trust-code does not apply to {source}",
                     hint="drop --trust-code; for PyTorch it applies to .pt2 sources and "
                     "--weights files",
                     code="option-not-applicable")


def _load_weights(module, path: Path, torch, trust_code: bool = False) -> None:
    try:
        # Without --trust-code, torch's weights_only unpickler: tensors and plain
        # containers only, nothing that can run code.
        state = torch.load(str(path), map_location="cpu", weights_only=not trust_code)
    except Exception as exc:
        raise UsageError(
            f"cannot load --weights {path}: {first_line(exc)}",
            hint="pass a state_dict saved with torch.save(model.state_dict(), FILE); "
            "files holding pickled objects beyond tensors are refused (weights_only=True) "
            "unless you pass --trust-code, which you should only for files you trust",
            code="bad-weights",
        ) from exc
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UsageError(f"--weights {path} holds a {type(state).__name__}, not a state_dict",
                         hint="save it with torch.save(model.state_dict(), FILE)",
                         code="bad-weights")
    result = module.load_state_dict(state, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing {listed(result.missing_keys)}")
    if result.unexpected_keys:
        problems.append(f"unexpected {listed(result.unexpected_keys)}")
    if problems:
        raise UsageError(
            f"--weights {path.name} does not fit the model: {'; '.join(problems)}",
            hint="pass the state_dict saved from this model's architecture",
            code="weights-mismatch",
        )


def _load_torchscript(path: Path, torch) -> _LoadedModel:
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        if _is_torch_save_archive(path):
            raise UsageError(
                f"{path.name} was written by torch.save, not torch.jit.save (TorchScript)",
                hint=f"pass the model's code as FILE.py:NAME with --weights {path.name}, "
                "or save it with torch.jit.save / torch.export.save",
                code="not-torchscript",
            ) from exc
        raise UsageError(f"cannot read TorchScript file {path}: {first_line(exc)}",
                         hint="pass a file written by torch.jit.save", code="bad-torchscript",
                         ) from exc
    module.eval()
    try:
        arguments = [a.name for a in module.forward.schema.arguments][1:]
    except (AttributeError, RuntimeError):
        arguments = []
    return _LoadedModel(module, "torchscript", arguments, [])


def _is_torch_save_archive(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("data.pkl") for n in names) and not any(
        "/code/" in n for n in names)


def _load_exported_program(path: Path, torch, trust_code: bool = False) -> _LoadedModel:
    if not trust_code:
        # torch.export.load unpickles, evaluates and compiles what the archive holds:
        # read it as data first, and refuse what would run code (exit 2).
        check_archive(path)
        check_sample_inputs(path, torch)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise UsageError(f"cannot read ExportedProgram {path}: {first_line(exc)}",
                         hint="pass a file written by torch.export.save", code="bad-pt2",
                         ) from exc
    declared = []
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        value = node.meta.get("val")
        if value is None or not hasattr(value, "shape"):
            continue
        dims = tuple(int(d) if str(d).isdigit() else str(d) for d in value.shape)
        declared.append(InputSpec(node.name, dims, str(value.dtype).removeprefix("torch.")))
    return _LoadedModel(program, "exported-program", [], declared)


def _forward_parameters(module) -> list[str]:
    try:
        signature = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in signature.parameters.values() if p.kind in kinds]


def _input_specs(loaded: _LoadedModel, request: LowerRequest) -> list[InputSpec]:
    from convertkit.adapters import merge_specs, specs_from_request

    if loaded.declared:
        return merge_specs(loaded.declared, request.options.inputs, "the ExportedProgram")
    return specs_from_request(request, loaded.parameter_names, model="a PyTorch model",
                              method="forward")


# --- running -----------------------------------------------------------------------------

def _to_tensors(feeds: dict[str, np.ndarray], torch) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.array(value)) for name, value in feeds.items()}


def _run(loaded: _LoadedModel, feeds: dict, specs: list[InputSpec], request: LowerRequest):
    try:
        return loaded.call(feeds)
    except Exception as exc:
        if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc):
            raise ConversionError(
                f"out of memory running the model: {first_line(exc)}",
                hint="give the process more memory, or declare smaller inputs with -i",
                code="out-of-memory",
            ) from exc
        shapes = ", ".join(str(s) for s in specs)
        raise UsageError(
            f"the model rejects inputs {shapes}: {type(exc).__name__}: {first_line(exc)}",
            hint="fix the shapes and dtypes given with -i (or the arrays in --data)",
            code="shape-rejected",
        ) from exc


def _flatten(outputs) -> list:
    import torch
    from torch.utils._pytree import tree_flatten

    return [leaf for leaf in tree_flatten(outputs)[0] if isinstance(leaf, torch.Tensor)]


def _output_names(outputs) -> list[str]:
    """Stable names for a model's (possibly nested) outputs: ``output`` for one tensor,
    dict keys and attribute names as they are, sequence positions as numbers."""
    import torch
    from torch.utils._pytree import GetAttrKey, MappingKey, SequenceKey, tree_flatten_with_path

    names = []
    for path, leaf in tree_flatten_with_path(outputs)[0]:
        if not isinstance(leaf, torch.Tensor):
            continue
        parts = []
        for key in path:
            if isinstance(key, MappingKey):
                parts.append(str(key.key))
            elif isinstance(key, SequenceKey):
                parts.append(str(key.idx))
            elif isinstance(key, GetAttrKey):
                parts.append(key.name)
            else:
                parts.append(str(key))
        names.append(output_name(parts))
    return names



# --- exporting ---------------------------------------------------------------------------

def _export(loaded: _LoadedModel, example: dict, specs: list[InputSpec],
            output_names: list[str], request: LowerRequest, torch) -> tuple[str, list[str]]:
    """Dynamo first, TorchScript second. Returns (exporter, notes)."""
    failures: dict[str, BaseException] = {}
    attempts = [("dynamo", _export_dynamo), ("torchscript", _export_torchscript)]
    if loaded.kind == "exported-program":
        attempts = attempts[:1]  # an ExportedProgram is already a dynamo graph
    elif loaded.kind == "torchscript":
        attempts = attempts[1:]
        failures["dynamo"] = ConversionError("it cannot export TorchScript modules")
    for label, export in attempts:
        try:
            export(loaded, example, specs, output_names, request, torch)
        except Exception as exc:
            failures[label] = exc
            request.export_path.unlink(missing_ok=True)
            continue
        _check_output_count(request.export_path, output_names, label)
        written = _written_opset(request.export_path)
        opset = request.options.opset
        if opset is not None and written != opset and label == "dynamo" and len(attempts) > 1:
            # The dynamo exporter writes opset 18 at least; below that the TorchScript
            # exporter lowers ops (LayerNormalization...) that older opsets lack.
            failures[label] = ConversionError(
                f"it wrote opset {written}, not the requested {request.options.opset}")
            request.export_path.unlink(missing_ok=True)
            continue
        notes = [f"{other} exporter not used: {_summarise(error)}"
                 for other, error in failures.items()]
        if not failures and len(attempts) > 1:
            notes.append("torchscript exporter not tried: the dynamo exporter succeeded")
        return f"torch.onnx ({label})", notes
    summaries = "; ".join(f"{label}: {_summarise(error)}" for label, error in failures.items())
    has_op = any(_OPERATOR.search(str(e)) for e in failures.values())
    raise ConversionError(
        f"PyTorch could not export the model to ONNX. {summaries}",
        hint="an unsupported operator can often be replaced in the model's code, or try "
        "another --opset; the exporters' full output is in logs/export.log",
        code="unsupported-op" if has_op else "export-failed",
    )


def _export_dynamo(loaded, example, specs, output_names, request, torch) -> None:
    kwargs: dict[str, Any] = {"dynamo": True, "output_names": output_names,
                              "external_data": False}
    if request.options.opset is not None:
        kwargs["opset_version"] = request.options.opset
    if loaded.kind == "exported-program":
        program = torch.onnx.export(loaded.module, (), **kwargs)
    else:
        dims: dict[str, Any] = {}
        shapes: dict[str, dict[int, Any]] = {}
        for spec in specs:
            axes = {}
            for axis, dim in enumerate(spec.dims):
                if isinstance(dim, str):
                    axes[axis] = dims.setdefault(dim, torch.export.Dim(_dim_name(dim)))
            shapes[spec.name] = axes
        has_dynamic = any(shapes.values())
        if loaded.parameter_names:
            program = torch.onnx.export(
                loaded.module, (), kwargs=example, input_names=list(example),
                dynamic_shapes=shapes if has_dynamic else None, **kwargs)
        else:
            program = torch.onnx.export(
                loaded.module, tuple(example.values()), input_names=list(example),
                dynamic_shapes=tuple(shapes.values()) if has_dynamic else None, **kwargs)
    if program is None:
        raise ConversionError("the dynamo exporter returned no program")
    _save_program(program, request.export_path)


def _save_program(program, path: Path) -> None:
    from convertkit.ir.io import PROTOBUF_LIMIT_BYTES

    size = sum(t.nbytes for t in program.model.graph.initializers.values()
               if getattr(t, "nbytes", None) is not None)
    program.save(str(path), external_data=size > PROTOBUF_LIMIT_BYTES // 2)


def _export_torchscript(loaded, example, specs, output_names, request, torch) -> None:
    dynamic_axes = {
        spec.name: {axis: dim for axis, dim in enumerate(spec.dims) if isinstance(dim, str)}
        for spec in specs if spec.is_dynamic
    }
    module = loaded.module
    if loaded.kind == "module" and loaded.parameter_names:
        module = _keyword_call(loaded.module, list(example), torch)
    elif loaded.parameter_names:  # TorchScript: positional, in forward's order
        example = {name: example[name] for name in loaded.parameter_names if name in example}
    torch.onnx.export(
        module, tuple(example.values()), str(request.export_path), dynamo=False,
        input_names=list(example), output_names=output_names,
        dynamic_axes=dynamic_axes or None, opset_version=request.options.opset or 18,
    )


def _keyword_call(module, names: list[str], torch):
    """Wrap ``module`` so that positional inputs reach forward as keywords. The TorchScript
    exporter mishandles keyword inputs (transformers' BertModel: "got multiple values for
    argument 'use_cache'"), and positional order need not match forward's."""

    class KeywordCall(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *args):
            return self.inner(**dict(zip(names, args, strict=True)))

    return KeywordCall().eval()


def _check_output_count(path: Path, output_names: list[str], label: str) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    written = [o.name for o in model.graph.output]
    if written != output_names:
        raise ConversionError(
            f"the {label} exporter wrote outputs {written}, expected {output_names}",
            hint="outputs that are not tensors (None, ints) cannot be compared; return "
            "tensors only from forward",
            code="output-mismatch",
        )


def _written_opset(path: Path) -> int:
    import onnx

    from convertkit.ir.info import default_opset

    return default_opset(onnx.load(str(path), load_external_data=False))


def _dim_name(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _summarise(exc: BaseException) -> str:
    """One line per exporter: the failing operator where there is one, else the root
    cause's first line."""
    texts = []
    cause: BaseException | None = exc
    while cause is not None and len(texts) < 8:
        texts.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    if isinstance(root, ConversionError):  # convertkit's own reason, already readable
        return root.message
    for text in texts:
        match = _OPERATOR.search(text)
        if match:
            return f"unsupported operator {match.group(1)} ({type(root).__name__})"
    return f"{type(root).__name__}: {first_line(root)}"
