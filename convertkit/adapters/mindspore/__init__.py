"""MindSpore sources: FILE.py:NAME / module:NAME naming a ``mindspore.nn.Cell`` (an
instance, a Cell class or a factory; ``--weights FILE.ckpt`` loads a checkpoint into it),
and ``.mindir`` files written by ``mindspore.export(..., file_format="MINDIR")``.

The exporter is MindSpore's own ``mindspore.onnx.export``, tried as it is first. Each time
it fails on a primitive it cannot map (InplaceAddExt from a residual ``+=``, Unstack in
ViT attention, ...), the rewrite of ``rewrites.py`` that removes that primitive is
added and the Cell exported again; the ONNX it writes is then checked and repaired where
MindSpore writes it wrongly (a Slice for index -1 that ONNX Runtime rejects). The report's
exporter and notes say what the native export did and which rewrites and repairs were
applied.

References come from MindSpore itself: the Cell run in PyNative mode, or the MindIR's
GraphCell in graph mode. MindSpore is imported only here, in the adapter's child process:
it needs numpy<2 and cannot share a process with paddle.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from convertkit.adapters import (
    Adapter,
    Lowered,
    LowerRequest,
    is_renamed_single_input,
    make_check_feeds,
    merge_specs,
    plan_check_samples,
    save_check_data,
    specs_from_request,
)
from convertkit.adapters.mindspore.onnx_repairs import rename_io, repair_onnx
from convertkit.adapters.mindspore.rewrites import (
    REWRITE_GROUPS,
    export_rewrites,
    unsupported_primitive,
)
from convertkit.adapters.outputs import output_name, tensor_leaves, to_numpy
from convertkit.adapters.python_source import model_from_python, source_mentions
from convertkit.config import quiet_mindspore
from convertkit.dependencies import require
from convertkit.errors import ConversionError, UsageError, first_line, listed
from convertkit.spec import InputSpec, SourceRef

if TYPE_CHECKING:
    import onnx

MINDIR_SUFFIX = ".mindir"
CHECKPOINT_SUFFIX = ".ckpt"
# mind_ir.proto's TensorProto.DataType names, lower-cased, to numpy dtype names.
_MINDIR_DTYPES = {"float": "float32", "float16": "float16", "double": "float64",
                  "float64": "float64", "float32": "float32", "bfloat16": "bfloat16",
                  "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64",
                  "uint8": "uint8", "uint16": "uint16", "uint32": "uint32",
                  "uint64": "uint64", "bool": "bool"}
# Where MindSpore's C++ errors stop saying what went wrong and start the call stack.
_STACK_START = re.compile(r"^-{10,}|^- C\+\+ Call Stack|^- Framework|^\[WARNING\]|^\[ERROR\]")
NATIVE_NOTE = "native mindspore.onnx.export:"
# A Python source that imports one of these (or is a module inside one) is MindSpore's.
_PACKAGES = ("mindspore", "mindcv")
_LOG = logging.getLogger(__name__)


@dataclass
class _LoadedModel:
    net: Any  # nn.Cell, or nn.GraphCell for a MindIR
    kind: str  # "cell" | "mindir"
    parameter_names: list[str]  # construct's parameters, in order (empty: unknown)
    declared: list[InputSpec]  # input specs the model records itself (MindIR)
    notes: list[str] = field(default_factory=list)
    mindir_path: Path | None = None


class MindSporeAdapter(Adapter):
    name: ClassVar[str] = "mindspore"
    options: ClassVar[frozenset[str]] = frozenset()  # none of the TensorFlow-only options

    def detect(self, source: SourceRef) -> bool:
        if source.is_python_object:
            package = (source.module or "").split(".")[0]
            return package in _PACKAGES or source_mentions(source, _PACKAGES)
        path = source.path
        if path is None or not path.exists():
            return False
        if path.is_dir():
            return bool(mindir_files_in(path))
        return path.suffix.lower() in (MINDIR_SUFFIX, CHECKPOINT_SUFFIX)

    def lower(self, request: LowerRequest) -> Lowered:
        given = request  # its paths, relative or not, are what the parent process knows
        request = _work_in_scratch_folder(request)
        ms = _import_mindspore()
        loaded = _load(request, ms)
        specs = _input_specs(loaded, request)
        static, static_notes = _static_specs(specs)
        example = make_check_feeds(request, static, None)
        first = _run(loaded, example, static, ms)
        output_names = _output_names(first)
        first_arrays = [to_numpy(value) for value in _flatten(first)]

        exporter, notes = _export(loaded, example, static, output_names, request, ms)
        # The exported graph can narrow integer inputs to its embedding tables; float
        # inputs come out the same, and the first run is that sample's reference.
        plan = plan_check_samples(request, static, request.export_path)
        references = []
        for feeds in plan.evaluation.samples:
            same = all(np.array_equal(feeds[name], example[name]) for name in feeds)
            outputs = first_arrays if same else [
                to_numpy(value) for value in _flatten(_run(loaded, feeds, static, ms))]
            references.append(dict(zip(output_names, outputs, strict=True)))
        check = save_check_data(request, plan, references)
        return Lowered(
            framework=self.name, onnx_path=given.export_path,
            check=replace(check, feeds_path=given.feeds_path,
                          reference_path=given.reference_path,
                          calibration_path=given.calibration_path,
                          labels_path=given.labels_path if check.labels_path else None),
            exporter=exporter, inputs=tuple(static), output_names=tuple(output_names),
            notes=tuple(loaded.notes + static_notes + notes),
        )


def _work_in_scratch_folder(request: LowerRequest) -> LowerRequest:
    """Make the request's paths absolute and move into its work folder: MindSpore writes
    rank_0/om/analyze_fail.ir into the working folder when a graph fails to compile, and
    no setting moves it. The user's folder stays importable (module:NAME sources), last on
    sys.path as python_source.py puts it."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    source = request.source
    if source.path is not None:
        source = replace(source, path=source.path.resolve())

    def absolute(path: Path | None) -> Path | None:
        return path.resolve() if path is not None else None

    options = replace(request.options, data=absolute(request.options.data),
                      weights=absolute(request.options.weights))
    request = replace(request, source=source, options=options,
                      work_dir=request.work_dir.resolve())
    os.chdir(request.work_dir)
    return request


def _import_mindspore():
    if "mindspore" not in sys.modules:
        quiet_mindspore()
    mindspore = require("mindspore", name="MindSpore", extra="mindspore")
    if hasattr(mindspore, "set_device"):
        mindspore.set_device("CPU")
    else:  # before MindSpore 2.5
        mindspore.set_context(device_target="CPU")
    return mindspore


def mindir_files_in(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir()
                      if p.is_file() and p.suffix.lower() == MINDIR_SUFFIX)
    except OSError:
        return []


# --- loading -----------------------------------------------------------------------------

def _load(request: LowerRequest, ms) -> _LoadedModel:
    source = request.source
    if source.is_python_object:
        ms.set_context(mode=ms.PYNATIVE_MODE)
        net = model_from_python(source, ms.nn.Cell, "a mindspore.nn.Cell")
        notes = []
        if request.options.weights is not None:
            notes += _load_weights(net, request.options.weights, ms)
        net.set_train(False)
        return _LoadedModel(net, "cell", _construct_parameters(net), [], notes)
    assert source.path is not None
    path = source.path
    if path.suffix.lower() == CHECKPOINT_SUFFIX:
        raise UsageError(
            f"{path.name} is a MindSpore checkpoint: it holds weights, not the network",
            hint=f"pass the Cell's code as FILE.py:NAME (or module:NAME) with --weights "
            f"{path}", code="weights-only")
    if request.options.weights is not None:
        raise UsageError(
            "--weights applies to FILE.py:NAME and module:NAME sources only",
            hint=f"{path.name} already holds its weights; drop --weights",
            code="weights-not-applicable")
    return _load_mindir(_find_mindir(path), ms)


def _load_weights(net, path: Path, ms) -> list[str]:
    """Load a .ckpt into ``net``. A checkpoint that does not fit (a shape differs, or none
    of its parameters names one of the Cell's) is refused; parameters left at their
    initial values are named in the notes."""
    try:
        parameters = ms.load_checkpoint(str(path))
    except Exception as exc:
        raise UsageError(
            f"cannot read --weights {path.name} as a MindSpore checkpoint: {_first_line(exc)}",
            hint="pass a .ckpt written by mindspore.save_checkpoint", code="bad-weights",
        ) from exc
    own = [p.name for p in net.get_parameters()]
    if parameters and own and not set(parameters) & set(own):
        raise UsageError(
            f"--weights {path.name} does not fit the Cell: none of its {len(parameters)} "
            f"parameters ({listed(sorted(parameters))}) is one of the Cell's "
            f"({listed(own)})",
            hint="pass the checkpoint saved from this Cell's architecture "
            "(mindspore.save_checkpoint(net, FILE))", code="weights-mismatch")
    try:
        not_loaded, unused = ms.load_param_into_net(net, parameters, strict_load=False)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise UsageError(
            f"--weights {path.name} does not fit the Cell: {_shape_reason(exc)}",
            hint="pass the checkpoint saved from this Cell's architecture and configuration",
            code="weights-mismatch") from exc
    notes = [f"weights loaded from {path.name}: {len(own) - len(not_loaded)} of "
             f"{len(own)} parameters"]
    if not_loaded:
        notes.append(f"{len(not_loaded)} parameter(s) not in {path.name} kept their initial "
                     f"values: {listed(list(not_loaded), 8)}")
    if unused:
        notes.append(f"{len(unused)} checkpoint entr{'y' if len(unused) == 1 else 'ies'} "
                     f"matched no parameter of the Cell: {listed(list(unused), 8)}")
    return notes


def _shape_reason(exc: BaseException) -> str:
    text = _first_line(exc)
    match = re.search(r"(\S+) in the argument 'net' should have the same shape.*?got its shape "
                      r"(\([^)]*\)) in the argument 'net' and shape (\([^)]*\))", str(exc))
    if match:
        return (f"parameter {match.group(1)} has shape {match.group(2)} in the Cell and "
                f"{match.group(3)} in the checkpoint")
    return text


def _find_mindir(path: Path) -> Path:
    if not path.is_dir():
        return path
    found = mindir_files_in(path)
    if len(found) == 1:
        return found[0]
    raise UsageError(
        f"{path} holds {len(found) or 'no'} .mindir files"
        + (f": {', '.join(p.name for p in found)}" if found else ""),
        hint="pass one .mindir file as SOURCE", code="ambiguous-source" if found
        else "source-not-found")


def _load_mindir(path: Path, ms) -> _LoadedModel:
    # A GraphCell runs, and exports, only in graph mode.
    ms.set_context(mode=ms.GRAPH_MODE)
    declared = read_mindir_inputs(path)
    try:
        graph = ms.load(str(path))
        net = ms.nn.GraphCell(graph)
    except Exception as exc:
        raise UsageError(f"MindSpore cannot load {path.name}: {_first_line(exc)}",
                         hint="pass a .mindir written by mindspore.export(..., "
                         "file_format='MINDIR')", code="bad-mindir") from exc
    return _LoadedModel(net, "mindir", [s.name for s in declared], declared,
                        mindir_path=path)


def read_mindir_inputs(path: Path) -> list[InputSpec]:
    """The graph inputs a MindIR file records: names, dims (-1 read as dynamic) and
    element types, read from its protobuf (the weights are parsed but not used)."""
    from mindspore.train import mind_ir_pb2

    model = mind_ir_pb2.ModelProto()
    try:
        model.ParseFromString(path.read_bytes())
    except Exception as exc:
        raise UsageError(f"{path.name} is not a readable MindIR file: {_first_line(exc)}",
                         hint="pass a .mindir written by mindspore.export(..., "
                         "file_format='MINDIR')", code="bad-mindir") from exc
    specs = []
    names = mind_ir_pb2.TensorProto.DataType
    for index, value in enumerate(model.graph.input):
        name = value.name.rsplit(":", 1)[-1] or f"input_{index}"
        tensor = value.tensor[0] if value.tensor else None
        dims: tuple[int | str, ...] = ()
        dtype = "float32"
        if tensor is not None:
            dims = tuple(int(d) if d >= 0 else f"{name}_dim{axis}"
                         for axis, d in enumerate(tensor.dims))
            dtype = _MINDIR_DTYPES.get(names.Name(tensor.data_type).lower(), "float32")
        specs.append(InputSpec(name, dims, dtype))
    return specs


def _construct_parameters(net) -> list[str]:
    try:
        signature = inspect.signature(net.construct)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in signature.parameters.values() if p.kind in kinds]


def _input_specs(loaded: _LoadedModel, request: LowerRequest) -> list[InputSpec]:
    if loaded.declared:
        specs = merge_specs(loaded.declared, request.options.inputs, "the MindIR")
        unknown = [s for s in specs if s.is_dynamic and s not in request.options.inputs]
        if unknown:
            raise UsageError(
                f"the MindIR leaves dims of input(s) {', '.join(s.name for s in unknown)} "
                "unknown", hint=f"give concrete shapes with -i, e.g. -i {unknown[0].name}:"
                + "x".join("1" if isinstance(d, str) else str(d) for d in unknown[0].dims),
                code="inputs-required")
        return specs
    specs = specs_from_request(request, loaded.parameter_names, model="a MindSpore Cell",
                               method="construct")
    if loaded.parameter_names and not is_renamed_single_input(specs, loaded.parameter_names):
        order = {name: index for index, name in enumerate(loaded.parameter_names)}
        specs.sort(key=lambda s: order[s.name])
        missing = [n for n in loaded.parameter_names[:len(specs)] if n not in
                   {s.name for s in specs}]
        if missing:
            raise UsageError(
                f"construct's input(s) {', '.join(missing)} have no -i",
                hint="declare every input construct takes, in any order, with -i",
                code="inputs-required")
    return specs


def _static_specs(specs: list[InputSpec]) -> tuple[list[InputSpec], list[str]]:
    """MindSpore's ONNX exporter bakes shapes into the graph (Reshape targets, LSTM
    states), so named axes are fixed at their check size and the notes say so."""
    fixed: dict[str, int] = {}
    for spec in specs:
        for dim, size in zip(spec.dims, spec.check_shape(), strict=True):
            if isinstance(dim, str):
                fixed.setdefault(dim, size)
    static = [InputSpec(s.name, s.check_shape(), s.dtype) for s in specs]
    if not fixed:
        return static, []
    sizes = ", ".join(f"{name}={size}" for name, size in fixed.items())
    return static, [f"MindSpore's ONNX export is static: dynamic axes fixed at their check "
                    f"sizes ({sizes}); give -i the sizes to deploy"]


# --- running -----------------------------------------------------------------------------

def _to_tensors(feeds: dict[str, np.ndarray], ms) -> list:
    return [ms.Tensor(np.ascontiguousarray(value)) for value in feeds.values()]


def _run(loaded: _LoadedModel, feeds: dict[str, np.ndarray], specs: list[InputSpec], ms):
    try:
        return loaded.net(*_to_tensors(feeds, ms))
    except Exception as exc:
        if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc):
            raise ConversionError(
                f"out of memory running the model: {_first_line(exc)}",
                hint="give the process more memory, or declare smaller inputs with -i",
                code="out-of-memory") from exc
        if isinstance(exc, (NameError, AttributeError, ImportError, SyntaxError)):
            raise ConversionError(
                f"the model's code fails: {type(exc).__name__}: {_first_line(exc)}",
                hint="fix the Cell's construct(); rerun with --debug for MindSpore's full "
                "message", code="model-code-failed") from exc
        shapes = ", ".join(str(s) for s in specs)
        raise UsageError(
            f"the model rejects inputs {shapes}: {type(exc).__name__}: {_first_line(exc)}",
            hint="fix the shapes and dtypes given with -i (or the arrays in --data); "
            "rerun with --debug for MindSpore's full message", code="shape-rejected",
        ) from exc


def _leaves(outputs: Any) -> list[tuple[tuple[str, ...], Any]]:
    import mindspore as ms

    return tensor_leaves(outputs, lambda value: isinstance(value, ms.Tensor))


def _flatten(outputs: Any) -> list:
    return [leaf for _, leaf in _leaves(outputs)]


def _output_names(outputs: Any) -> list[str]:
    """``output`` for one tensor, else positions (and dict keys) joined by dots, with
    ``output_`` in front of a leading number: ``output_0``, ``output_1.0``."""
    names = []
    for path, _ in _leaves(outputs):
        names.append(output_name(path))
    if not names:
        raise ConversionError(
            f"the model returned a {type(outputs).__name__}, not tensors",
            hint="return a Tensor (or a tuple of them) from construct",
            code="output-mismatch")
    return names



# --- exporting ---------------------------------------------------------------------------

def _export(loaded: _LoadedModel, example: dict[str, np.ndarray], specs: list[InputSpec],
            output_names: list[str], request: LowerRequest, ms) -> tuple[str, list[str]]:
    """mindspore.onnx.export as it is; on a primitive it cannot map that convertkit can
    rewrite, again under ``export_rewrites``. Then the written model is repaired where
    MindSpore writes it wrongly. Returns (exporter, notes)."""
    import onnx

    tensors = _to_tensors(example, ms)
    version = ms.__version__
    net = loaded.net
    if loaded.mindir_path is not None:
        # A GraphCell that has run cannot be exported ("The pointer[context] is null"):
        # export a fresh one.
        net = ms.nn.GraphCell(ms.load(str(loaded.mindir_path)))
    notes: list[str] = []
    rewrites: list[str] = []
    groups: list[str] = []  # rewrite groups, enabled one at a time as the exporter asks
    rewritten: list[str] = []  # the primitives that asked for them
    while True:
        try:
            with export_rewrites(net, groups) as record:
                _write_onnx(net, tensors, request.export_path, ms)
            break
        except Exception as exc:
            primitive = unsupported_primitive(str(exc))
            group = REWRITE_GROUPS.get(primitive or "")
            if loaded.kind != "cell" or group is None or group in groups:
                raise _export_failure(exc, primitive, loaded, version, rewritten) from exc
            # MindSpore's full message, C++ call stack included, goes to the export log.
            _LOG.warning("mindspore.onnx.export failed on %s; exporting again with "
                         "convertkit's rewrite for it. MindSpore said: %s", primitive, exc)
            if not groups:
                notes.append(f"{NATIVE_NOTE} failed: {_first_line(exc)}")
            groups.append(group)
            rewritten.append(primitive or group)
            # Forget the graph compiled for the failed export, else the retry reuses it.
            net.compile_cache.clear()
    if groups:
        rewrites = record.applied
        notes.append("exported with convertkit's rewrites: " + "; ".join(rewrites))
    model = onnx.load(str(request.export_path))
    problem = _checker_problem(model)
    repairs = repair_onnx(model, rewritten=bool(rewrites))
    if not rewrites:
        notes.append(f"{NATIVE_NOTE} " + (f"wrote an invalid model: {problem}" if problem
                                          else "ok"))
    if repairs:
        notes.append("repaired the ONNX model MindSpore wrote: " + "; ".join(repairs))
    try:
        rename_io(model, [s.name for s in specs], output_names)
    except ValueError as exc:
        raise ConversionError(
            f"MindSpore's ONNX model has {len(model.graph.output)} outputs, the Cell returns "
            f"{len(output_names)} ({', '.join(output_names)})",
            hint="return tensors only (a Tensor or a tuple of Tensors) from construct",
            code="output-mismatch") from exc
    onnx.save(model, str(request.export_path))
    exporter = f"mindspore.onnx.export {version}"
    if rewrites:
        exporter += " + convertkit rewrites"
    if repairs:
        exporter += " + ONNX repairs"
    return exporter, notes


def _write_onnx(net, tensors: list, path: Path, ms) -> None:
    path.unlink(missing_ok=True)
    ms.onnx.export(net, *tensors, file_name=str(path))
    if not path.is_file():
        raise ConversionError("mindspore.onnx.export wrote no file", code="export-failed")


def _checker_problem(model: onnx.ModelProto) -> str:
    """What the full ONNX checker says about ``model`` ("" when it accepts it)."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        return lines[0][:240] if lines else type(exc).__name__
    return ""


def _export_failure(exc: BaseException, primitive: str | None, loaded: _LoadedModel,
                    version: str, rewritten: list[str]) -> ConversionError:
    after = f" (after rewriting {', '.join(rewritten)})" if rewritten else ""
    if primitive is not None and primitive in rewritten:
        after = " in a use that convertkit's rewrite for it does not cover"
    if primitive is not None:
        if loaded.kind == "mindir" and primitive in REWRITE_GROUPS:
            hint = ("a MindIR's graph is fixed, so convertkit cannot rewrite it before export: "
                    "pass the Cell's Python code as FILE.py:NAME (or module:NAME) with "
                    "--weights FILE.ckpt (mindspore.save_checkpoint) instead")
        elif loaded.kind == "mindir":
            hint = ("replace the operation in the Cell's construct with supported ones and "
                    "export the MindIR again, or pass the Cell as FILE.py:NAME with --weights "
                    "FILE.ckpt; MindSpore's output is in logs/export.log")
        else:
            hint = ("replace the operation in the Cell's construct with supported ones; "
                    "MindSpore's output is in logs/export.log")
        return ConversionError(
            f"MindSpore {version}'s ONNX exporter does not support primitive {primitive}"
            f"{after}", hint=hint, code="unsupported-op")
    return ConversionError(
        f"mindspore.onnx.export failed{after}: {type(exc).__name__}: {_first_line(exc)}",
        hint="MindSpore's full output is in logs/export.log (rerun with --debug to see it "
        "live)", code="export-failed")


# --- small helpers -----------------------------------------------------------------------

def _first_line(exc: BaseException) -> str:
    """The first line of an error, read before MindSpore's C++ call stack sections."""
    lines = []
    for line in str(exc).splitlines():
        if _STACK_START.match(line.strip()):
            break
        lines.append(line)
    return first_line("\n".join(lines), limit=240) or type(exc).__name__
