"""PaddlePaddle sources: inference models (a Paddle 3 PIR ``*.json`` or a legacy
``*.pdmodel``, each with its ``*.pdiparams``; a folder holding one model is enough) and
``FILE.py:NAME`` / ``module:NAME`` naming a ``paddle.nn.Layer`` or a callable returning one.

A Layer is saved with ``paddle.jit.save`` (InputSpecs from ``-i``, named axes left dynamic)
and then lowered like an inference model. The exporter is paddle2onnx, run in a process of
its own: it aborts the process (SIGABRT) on an unsupported operator without naming it, and
``paddle.onnx.export`` calls ``sys.exit``. When it fails, this adapter reads the program
itself to name the operators paddle2onnx lacks and where they are.

References come from Paddle itself: the Layer in dygraph mode for Python sources, the
Paddle Inference predictor for inference models.
"""

from __future__ import annotations

import inspect
import json
import linecache
import re
import struct
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from convertkit.adapters import Adapter, Lowered, LowerRequest, make_check_feeds, merge_specs
from convertkit.adapters.python_source import load_python_object, source_mentions
from convertkit.checker.inputs import save_arrays
from convertkit.dependencies import require
from convertkit.errors import ConversionError, ConvertkitError, MissingDependencyError, UsageError
from convertkit.spec import InputSpec, SourceRef

PIR_SUFFIX = ".json"
LEGACY_SUFFIX = ".pdmodel"
PARAMS_SUFFIX = ".pdiparams"
DEFAULT_OPSET = 17
_PIR_MAGIC = re.compile(rb'"magic"\s*:\s*"pir"')
_PIR_HEAD_BYTES = 512

# Element types: the VarType enum of .pdiparams / .pdmodel, and PIR's type names.
_VARTYPE_DTYPES = {0: "bool", 1: "int16", 2: "int32", 3: "int64", 4: "float16", 5: "float32",
                   6: "float64", 20: "uint8", 21: "int8", 22: "bfloat16", 23: "complex64",
                   24: "complex128"}
_DTYPE_SIZES = {"bool": 1, "int16": 2, "int32": 4, "int64": 8, "float16": 2, "float32": 4,
                "float64": 8, "uint8": 1, "int8": 1, "bfloat16": 2, "complex64": 8,
                "complex128": 16}
_PIR_DTYPES = {"t_bool": "bool", "t_i8": "int8", "t_ui8": "uint8", "t_i16": "int16",
               "t_i32": "int32", "t_i64": "int64", "t_f16": "float16", "t_bf16": "bfloat16",
               "t_f32": "float32", "t_f64": "float64", "t_c64": "complex64",
               "t_c128": "complex128"}
# PIR serialises an operator's dialect as a number: "1.conv2d" is pd_op.conv2d.
_PIR_DIALECTS = {"0": "builtin", "1": "pd_op", "2": "cf", "3": "pd_dist"}
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


# --- plain records -----------------------------------------------------------------------

@dataclass(frozen=True)
class InferenceModel:
    """An inference model on disk: its program file and its parameters file, if any."""

    model_path: Path
    params_path: Path | None

    @property
    def is_legacy(self) -> bool:
        return self.model_path.suffix.lower() == LEGACY_SUFFIX

    @property
    def format(self) -> str:
        return "legacy .pdmodel" if self.is_legacy else "PIR .json"


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


class PaddleAdapter(Adapter):
    name: ClassVar[str] = "paddle"
    options: ClassVar[frozenset[str]] = frozenset()  # none of the TensorFlow-only options

    def detect(self, source: SourceRef) -> bool:
        if source.is_python_object:
            return source_mentions(source, ("paddle",))
        path = source.path
        if path is None or not path.exists():
            return False
        if path.is_dir():
            return bool(model_files_in(path))
        suffix = path.suffix.lower()
        if suffix == LEGACY_SUFFIX:
            return True
        if suffix == PIR_SUFFIX:
            return is_pir_json(path)
        if suffix == PARAMS_SUFFIX:
            return bool(_models_beside(path))
        return False

    def lower(self, request: LowerRequest) -> Lowered:
        paddle = _import_paddle()
        with tempfile.TemporaryDirectory(prefix="convertkit-paddle-") as scratch:
            if request.source.is_python_object:
                return _lower_layer(request, paddle, Path(scratch))
            return _lower_inference_model(request, paddle, Path(scratch))


def _import_paddle():
    return require("paddle", name="PaddlePaddle", extra="paddle")


# --- finding and reading inference models (no framework needed) --------------------------

def is_pir_json(path: Path) -> bool:
    """Whether ``path`` is a program written by Paddle 3 (PIR), judged from its first bytes:
    any other JSON (a config, a tokenizer) is not claimed."""
    try:
        with path.open("rb") as handle:
            head = handle.read(_PIR_HEAD_BYTES)
    except OSError:
        return False
    return _PIR_MAGIC.search(head) is not None


def model_files_in(folder: Path) -> list[Path]:
    """The Paddle program files in ``folder``: ``*.pdmodel`` and PIR ``*.json``."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [p for p in entries if p.is_file() and (
        p.suffix.lower() == LEGACY_SUFFIX or (p.suffix.lower() == PIR_SUFFIX and is_pir_json(p)))]


def _models_beside(params: Path) -> list[Path]:
    return [p for p in (params.with_suffix(PIR_SUFFIX), params.with_suffix(LEGACY_SUFFIX))
            if p.is_file() and (p.suffix == LEGACY_SUFFIX or is_pir_json(p))]


def find_inference_model(path: Path) -> InferenceModel:
    """The program and parameters files that ``path`` (a folder, a program file or a
    ``.pdiparams`` file) names. The parameters file has the program's stem, or is the only
    ``.pdiparams`` beside it."""
    if path.is_dir():
        models = model_files_in(path)
        if not models:
            raise UsageError(
                f"{path} holds no Paddle inference model (*.json or *.pdmodel)",
                hint="pass the folder written by paddle.jit.save or "
                "paddle.static.save_inference_model, or the model file itself",
                code="source-not-found")
        if len(models) > 1:
            raise UsageError(
                f"{path} holds {len(models)} Paddle models: {', '.join(p.name for p in models)}",
                hint=f"pass one of them as SOURCE, e.g. {models[0]}",
                code="ambiguous-source")
        model = models[0]
    elif path.suffix.lower() == PARAMS_SUFFIX:
        models = _models_beside(path)
        if len(models) != 1:
            raise UsageError(
                f"{path.name} is a parameters file; "
                + ("no model file with its name is beside it" if not models else
                   f"both {' and '.join(p.name for p in models)} are beside it"),
                hint="pass the model file (.json or .pdmodel) or its folder as SOURCE",
                code="source-not-found")
        model = models[0]
    else:
        model = path
    params = model.with_suffix(PARAMS_SUFFIX)
    if not params.is_file():
        others = sorted(model.parent.glob("*" + PARAMS_SUFFIX))
        params = others[0] if len(others) == 1 and len(model_files_in(model.parent)) == 1 \
            else None
    return InferenceModel(model, params)


def read_pir_program(path: Path) -> ProgramInfo:
    """Inputs, parameters and operators of a PIR program file (paddle.jit.save's .json)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        blocks = document["program"]["regions"][0]["blocks"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise UsageError(f"cannot read Paddle program {path.name}: {_first_line(exc)}",
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


def read_params_file(path: Path) -> list[TensorDecl]:
    """The dims and element types of the tensors in a ``.pdiparams`` file, in file order,
    read from their headers only (the data is skipped). The file stores no names."""
    tensors: list[TensorDecl] = []
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            while handle.tell() < size:
                _unpack(handle, "<I")  # version
                for _ in range(_unpack(handle, "<Q")):  # LoD levels
                    handle.seek(_unpack(handle, "<Q"), 1)
                _unpack(handle, "<I")  # tensor version
                length = _unpack(handle, "<i")
                if not 0 < length < 1 << 20:
                    raise ValueError(f"bad tensor header at byte {handle.tell()}")
                code, dims = _tensor_desc(handle.read(length))
                dtype = _VARTYPE_DTYPES.get(code)
                if dtype is None:
                    raise ValueError(f"unknown element type {code}")
                count = int(np.prod(dims, dtype=np.int64)) if dims else 1
                handle.seek(count * _DTYPE_SIZES[dtype], 1)
                if handle.tell() > size:
                    raise ValueError("the file ends inside a tensor")
                tensors.append(TensorDecl(f"#{len(tensors)}", tuple(dims), dtype))
    except (OSError, ValueError, struct.error) as exc:
        raise UsageError(f"cannot read Paddle parameters file {path.name}: {_first_line(exc)}",
                         hint="pass the .pdiparams written together with the model file",
                         code="bad-paddle-params") from exc
    return tensors


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
                dims.append(value - (1 << 64) if value >= 1 << 63 else value)
        elif wire == 2:  # packed dims
            length, index = _varint(data, index)
            end = index + length
            while index < end:
                value, index = _varint(data, index)
                if field == 2:
                    dims.append(value - (1 << 64) if value >= 1 << 63 else value)
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    return code, dims


def _varint(data: bytes, index: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if index >= len(data):
            raise ValueError("truncated tensor header")
        byte = data[index]
        index += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, index


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


# --- naming operators paddle2onnx lacks --------------------------------------------------

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


# --- renaming ONNX inputs' axes and outputs ----------------------------------------------

def rename_onnx(model, specs: Sequence[InputSpec],
                output_names: Sequence[str] | None) -> list[str]:
    """Give the exported model the inputs' axis names from ``specs`` (paddle2onnx writes
    DynamicDimension.N) and, when given, ``output_names`` in place of its outputs' names
    (kept as written where a name is already taken). Returns the outputs' names."""
    graph = model.graph
    by_name = {s.name: s for s in specs}
    dims: dict[str, str] = {}
    for value in graph.input:
        spec = by_name.get(value.name)
        if spec is None or not value.type.tensor_type.HasField("shape"):
            continue
        for dim, wanted in zip(value.type.tensor_type.shape.dim, spec.dims, strict=False):
            if not isinstance(wanted, str) or dim.HasField("dim_value"):
                continue  # a size the program fixed stays fixed
            if dim.HasField("dim_param"):
                dims.setdefault(dim.dim_param, wanted)
            dim.dim_param = wanted
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.HasField("shape"):
            for dim in value.type.tensor_type.shape.dim:
                if dim.HasField("dim_param") and dim.dim_param in dims:
                    dim.dim_param = dims[dim.dim_param]
    written = [o.name for o in graph.output]
    if output_names is None:
        return written
    if len(written) != len(output_names):
        raise ConversionError(
            f"paddle2onnx wrote {len(written)} outputs ({', '.join(written)}), the model "
            f"returns {len(output_names)} tensors ({', '.join(output_names)})",
            hint="return tensors only from forward (no None, ints or strings)",
            code="output-mismatch")
    mapping = {old: new for old, new in zip(written, output_names, strict=True) if old != new}
    produced = {name for node in graph.node for name in node.output}
    others = ({v.name for v in graph.input} | {i.name for i in graph.initializer}
              | produced) - set(written)
    if others & set(mapping.values()) or not set(mapping) <= produced:
        return written  # a new name is taken, or an output is an input or a constant
    _rename_values(graph, mapping)
    return list(output_names)


def _rename_values(graph, mapping: dict[str, str]) -> None:
    import onnx

    for value in [*graph.output, *graph.value_info]:
        value.name = mapping.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _rename_values(attribute.g, mapping)
            for subgraph in attribute.graphs:
                _rename_values(subgraph, mapping)


# --- Layers (FILE.py:NAME, module:NAME) --------------------------------------------------

def _lower_layer(request: LowerRequest, paddle, scratch: Path) -> Lowered:
    layer = _layer_from_python(request.source, paddle)
    if request.options.weights is not None:
        _load_weights(layer, request.options.weights, paddle)
    layer.eval()
    parameters, flexible = _forward_parameters(layer)
    specs = _layer_specs(layer, request, parameters, flexible)

    example = make_check_feeds(request, specs, None)
    output_names = _output_names(_run_layer(layer, example, specs, parameters, paddle))
    savable = _savable(layer, specs, paddle)
    saved = _save_layer(savable, specs, scratch / "layer" / "model", paddle)
    program = read_pir_program(saved.model_path)
    notes = [f"saved with paddle.jit.save ({saved.format}, paddle {paddle.__version__}) "
             "from the Layer; reference outputs from the Layer in dygraph mode"]
    exporter, output_names = _export(saved, program, specs, output_names, request, scratch,
                                     lambda: _operator_lines(savable, specs, paddle))

    feeds = make_check_feeds(request, specs, request.export_path)
    outputs = _flatten(_run_layer(layer, feeds, specs, parameters, paddle), paddle)
    reference = dict(zip(output_names, [_to_numpy(t) for t in outputs], strict=True))
    save_arrays(request.feeds_path, feeds)
    save_arrays(request.reference_path, reference)
    return Lowered(
        framework=PaddleAdapter.name, onnx_path=request.export_path,
        feeds_path=request.feeds_path, reference_path=request.reference_path,
        exporter=exporter, inputs=tuple(specs), output_names=tuple(output_names),
        notes=tuple(notes),
    )


def _layer_from_python(source: SourceRef, paddle):
    obj = load_python_object(source)
    if isinstance(obj, paddle.nn.Layer):
        return obj
    if not callable(obj):
        raise UsageError(
            f"{source.text} is a {type(obj).__name__}, not a paddle.nn.Layer or a callable",
            hint="name a paddle.nn.Layer, a Layer class, or a function returning one",
            code="not-a-model")
    try:
        layer = obj()
    except Exception as exc:
        raise UsageError(
            f"{source.text}() raised {type(exc).__name__}: {_first_line(exc)}",
            hint="the factory must build the model with no arguments",
            code="factory-failed") from exc
    if not isinstance(layer, paddle.nn.Layer):
        raise UsageError(
            f"{source.text}() returned a {type(layer).__name__}, not a paddle.nn.Layer",
            hint="return the model (a paddle.nn.Layer) from the factory",
            code="not-a-model")
    return layer


def _load_weights(layer, path: Path, paddle) -> None:
    try:
        state = paddle.load(str(path))
    except Exception as exc:
        raise UsageError(
            f"cannot load --weights {path}: {_first_line(exc)}",
            hint="pass a state_dict saved with paddle.save(layer.state_dict(), 'FILE.pdparams')",
            code="bad-weights") from exc
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
        problems.append(f"missing {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected {_few(unexpected)}")
    if wrong:
        problems.append(f"shapes differ for {_few(wrong)}")
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
    from convertkit.checker.inputs import read_data, specs_from_data

    declared = _decorated_specs(layer)
    if declared and request.options.inputs:
        specs = merge_specs(declared, request.options.inputs, "forward's to_static input_spec")
    elif declared:
        specs = declared
    else:
        specs = list(request.options.inputs)
        if not specs and request.options.data is not None:
            specs = specs_from_data(read_data(request.options.data))
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
            f"the model rejects inputs {shapes}: {_reason(exc)}",
            hint="fix the shapes and dtypes given with -i (or the arrays in --data) so that "
            "forward accepts them",
            code="shape-rejected") from exc


def _flatten(outputs, paddle) -> list:
    return [leaf for _, leaf in _leaves(outputs, (), paddle)]


def _leaves(value, path: tuple[str, ...], paddle):
    """Tensors in ``value`` with their paths, in paddle.utils.flatten's order (dict keys
    sorted), which is the order of the saved program's outputs."""
    if isinstance(value, paddle.Tensor):
        yield path, value
    elif isinstance(value, dict):
        for key in sorted(value):
            yield from _leaves(value[key], (*path, str(key)), paddle)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, str(index)), paddle)


def _output_names(outputs) -> list[str]:
    import paddle

    names = []
    for path, _ in _leaves(outputs, (), paddle):
        name = ".".join(path) or "output"
        names.append(f"output_{name}" if name[0].isdigit() else name)
    return names


def _to_numpy(tensor) -> np.ndarray:
    if "bfloat16" in str(tensor.dtype):
        tensor = tensor.astype("float32")
    return np.asarray(tensor.numpy())


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
            f"{_reason(exc)}",
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
            frame = _user_frame(list(getattr(op, "callstack", None) or []))
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


# --- inference models --------------------------------------------------------------------

def _lower_inference_model(request: LowerRequest, paddle, scratch: Path) -> Lowered:
    source = request.source
    assert source.path is not None
    if request.options.weights is not None:
        raise UsageError(
            "--weights applies to FILE.py:NAME and module:NAME sources only",
            hint="an inference model's weights are its .pdiparams file; drop --weights",
            code="weights-not-applicable")
    model = find_inference_model(source.path)
    program = (_read_legacy_program(model.model_path) if model.is_legacy
               else read_pir_program(model.model_path))
    _check_params(model, program)
    specs = merge_specs(input_specs_from(program.inputs), request.options.inputs,
                        f"the Paddle model {model.model_path.name}")
    if not specs:
        raise UsageError(f"{model.model_path.name} declares no inputs (no feed/data ops)",
                         hint="pass a model saved with paddle.jit.save or "
                         "save_inference_model", code="bad-paddle-model")
    predictor = _open_predictor(model, paddle)
    # Inputs the model rejects are a usage error (exit 2), which outranks an export failure.
    _run_predictor(predictor, make_check_feeds(request, specs, None), specs)
    exporter, output_names = _export(model, program, specs, None, request, scratch)
    feeds = make_check_feeds(request, specs, request.export_path)
    reference_values = _run_predictor(predictor, feeds, specs)
    if len(output_names) != len(reference_values):
        raise ConversionError(
            f"paddle2onnx wrote {len(output_names)} outputs, the predictor returns "
            f"{len(reference_values)}", hint="the program's fetch targets could not all be "
            "exported", code="output-mismatch")
    reference = dict(zip(output_names, reference_values, strict=True))
    save_arrays(request.feeds_path, feeds)
    save_arrays(request.reference_path, reference)
    notes = [f"{model.format} program {model.model_path.name}"
             + (f" with {model.params_path.name}" if model.params_path else " (no parameters)"),
             "reference outputs from the Paddle Inference predictor (CPU, IR optimisation off)"]
    if model.is_legacy:
        notes.append("paddle2onnx translated the legacy program to PIR before exporting")
    return Lowered(
        framework=PaddleAdapter.name, onnx_path=request.export_path,
        feeds_path=request.feeds_path, reference_path=request.reference_path,
        exporter=exporter, inputs=tuple(specs), output_names=tuple(output_names),
        notes=tuple(notes),
    )


def _read_legacy_program(path: Path) -> ProgramInfo:
    """Inputs, parameters and operators of a legacy ProgramDesc (.pdmodel)."""
    from paddle.base.proto import framework_pb2

    program = framework_pb2.ProgramDesc()
    try:
        program.ParseFromString(path.read_bytes())
        block = program.blocks[0]
    except Exception as exc:
        raise UsageError(f"cannot read Paddle program {path.name}: {_first_line(exc)}",
                         hint="pass a .pdmodel written by paddle.static.save_inference_model "
                         "or paddle.jit.save", code="bad-paddle-model") from exc
    variables = {v.name: v for v in block.vars}
    dense = {framework_pb2.VarType.DENSE_TENSOR} if hasattr(
        framework_pb2.VarType, "DENSE_TENSOR") else {framework_pb2.VarType.LOD_TENSOR}

    def tensor(name: str) -> TensorDecl:
        desc = variables[name].type.dense_tensor.tensor if hasattr(
            variables[name].type, "dense_tensor") else variables[name].type.lod_tensor.tensor
        return TensorDecl(name, tuple(int(d) for d in desc.dims),
                          _VARTYPE_DTYPES.get(int(desc.data_type), "?"))

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
            frame = _user_frame(stack)
            operators.append(OperatorSite(op.type, f"{where}, {frame}" if frame else where))
    return ProgramInfo(tuple(t for _, t in sorted(feeds, key=lambda f: f[0])),
                       tuple(parameters), tuple(operators))


def _user_frame(stack: list[str]) -> str:
    """The last frame of an op's recorded call stack that is not inside Paddle."""
    for entry in reversed(stack):
        match = re.search(r'File "([^"]+)", line (\d+), in (\S+)', entry)
        if match and "site-packages" not in match.group(1) and "/paddle/" not in match.group(1):
            return f"{Path(match.group(1)).name}:{match.group(2)} in {match.group(3)}"
    return ""


def _check_params(model: InferenceModel, program: ProgramInfo) -> None:
    if model.params_path is None:
        if program.parameters:
            raise UsageError(
                f"{model.model_path.name} declares {len(program.parameters)} parameters but "
                f"no {PARAMS_SUFFIX} file is beside it",
                hint=f"put {model.model_path.with_suffix(PARAMS_SUFFIX).name}, written with "
                f"{model.model_path.name}, in {model.model_path.parent}",
                code="params-missing")
        return
    if program.has_parameter_shapes:
        check_params_belong(model, program.parameters, read_params_file(model.params_path))


def _open_predictor(model: InferenceModel, paddle):
    from paddle import inference

    config = inference.Config(str(model.model_path),
                              str(model.params_path) if model.params_path else "")
    config.disable_gpu()
    config.disable_glog_info()
    config.switch_ir_optim(False)  # the program as written, not a fused rewrite of it
    config.disable_mkldnn()  # plain CPU kernels; oneDNN's set-up alone takes ~1.5 s
    try:
        return inference.create_predictor(config)
    except Exception as exc:
        raise UsageError(
            f"Paddle cannot load {model.model_path.name}"
            + (f" with {model.params_path.name}" if model.params_path else "")
            + f": {_first_line(exc)}",
            hint="pass the model and the .pdiparams written together by paddle.jit.save or "
            "save_inference_model", code="bad-paddle-model") from exc


def _run_predictor(predictor, feeds: dict[str, np.ndarray],
                   specs: Sequence[InputSpec]) -> list[np.ndarray]:
    try:
        for spec in specs:
            value = np.ascontiguousarray(feeds[spec.name])
            handle = predictor.get_input_handle(spec.name)
            handle.reshape(list(value.shape))
            handle.copy_from_cpu(value)
        predictor.run()
        return [np.asarray(predictor.get_output_handle(n).copy_to_cpu())
                for n in predictor.get_output_names()]
    except Exception as exc:
        shapes = ", ".join(str(s) for s in specs)
        raise UsageError(
            f"the model rejects inputs {shapes}: {_reason(exc)}",
            hint="fix the shapes and dtypes given with -i (or the arrays in --data)",
            code="shape-rejected") from exc


# --- exporting ---------------------------------------------------------------------------

def _export(model: InferenceModel, program: ProgramInfo, specs: Sequence[InputSpec],
            output_names: Sequence[str] | None, request: LowerRequest, scratch: Path,
            operator_lines: Callable[[], dict[str, str]] | None = None,
            ) -> tuple[str, list[str]]:
    """paddle2onnx, in a process of its own. Returns the exporter's name and the exported
    model's output names.
    ``operator_lines`` says where in the model's code each operator type comes from."""
    import onnx

    from convertkit.isolation import run_in_child

    raw = scratch / "paddle2onnx.onnx"
    log = scratch / "paddle2onnx.log"
    try:
        result = run_in_child(
            "convertkit.adapters.paddle:export_in_child",
            {"model": str(model.model_path),
             "params": str(model.params_path) if model.params_path else "",
             "opset": request.options.opset or DEFAULT_OPSET, "out": str(raw)},
            what="paddle2onnx", log_path=log, echo=True)
    except MissingDependencyError:
        raise
    except ConvertkitError as error:
        raise _explain_export_failure(model, program, log, error, operator_lines) from None
    exported = onnx.load(str(raw))
    names = rename_onnx(exported, specs, output_names)
    onnx.save(exported, str(request.export_path))
    return f"paddle2onnx {result['version']}", names


def export_in_child(payload: dict) -> dict:
    """Run paddle2onnx on one program (in its own process: it aborts on failure)."""
    paddle2onnx = require("paddle2onnx", name="paddle2onnx", extra="paddle")
    # save_file=None returns the model unfolded: with a save_file paddle2onnx folds
    # constants with polygraphy after forcing POLYGRAPHY_AUTOINSTALL_DEPS=1, which lets
    # polygraphy pip-install packages. The hub folds constants with onnxslim instead.
    data = paddle2onnx.export(payload["model"], payload["params"], save_file=None,
                              opset_version=payload["opset"], auto_upgrade_opset=True,
                              enable_onnx_checker=True)
    if not isinstance(data, bytes) or not data:
        raise ConversionError("paddle2onnx returned no model", code="export-failed")
    Path(payload["out"]).write_bytes(data)
    return {"version": _version("paddle2onnx")}


def _explain_export_failure(model: InferenceModel, program: ProgramInfo, log: Path,
                            error: ConvertkitError,
                            operator_lines: Callable[[], dict[str, str]] | None = None,
                            ) -> ConversionError:
    """Name what paddle2onnx could not convert: the operators it has no mapper for (it
    aborts without naming them) and where they are, else its own error lines."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        text = ""
    sites = _unsupported_sites(program, operators_named_in_log(text), model.is_legacy)
    version = _version("paddle2onnx")
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


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "(unknown version)"


# --- small helpers -----------------------------------------------------------------------

def _first_line(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        line = line.strip()
        if line:
            return line[:240]
    return type(exc).__name__


def _reason(exc: BaseException) -> str:
    """The line of a Paddle error that says what went wrong: Paddle puts "In user code:"
    and the transformed code first, and the reason ("InvalidArgumentError: ...",
    "(InvalidArgument) ...") further down."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    found = next((ln for ln in lines if re.match(r"(\w+Error: |\(\w+\) )", ln)), None)
    if found is None:
        found = next((ln for ln in reversed(lines) if "<--- HERE" not in ln and not
                      ln.startswith(("File ", "[", "^", "~", "In user code"))), "")
    if re.match(r"\w+Error: ", found):
        return found[:300]
    return f"{type(exc).__name__}: {found[:300]}" if found else type(exc).__name__


def _few(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
