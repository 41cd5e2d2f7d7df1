"""Whether ``torch.export.load`` can read a ``.pt2`` archive without running code from it.

PyTorch documents ``torch.export.load`` as unsafe for untrusted files, and it is: besides
unpickling the weights and constants an archive marks ``use_pickle`` (and any opaque
object), it hands the archive's strings to Python. Shape expressions go through
``sympy.sympify`` (which calls ``eval``), ``guards_code`` is compiled into a guard
function by ``ExportedProgram.module()``, and argument names and input keys are pasted
into the source of the generated ``forward``. An AOTInductor package is a shared library
that is loaded. Each was made to run a shell command from a crafted file.

``check_archive`` reads the archive with ``zipfile`` and ``json`` only (no torch) and
refuses, before torch sees the file, anything that would be unpickled, evaluated or
loaded as a library, and any string headed for generated code that is not plain data.
What an ordinary ``torch.export.save`` writes passes: raw tensor records, sympy reprs of
shape symbols (``Symbol('s77', positive=True, integer=True)``), operator names under
``torch.ops``. ``check_sample_inputs`` reads the example inputs with torch's
``weights_only`` unpickler, so torch's own fall-back to a full unpickler never fires.
``--trust-code`` skips both.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from convertkit.errors import UsageError, first_line

TRUST_HINT = ("pass --trust-code only if you trust this file (torch.export.load then runs "
              "what it holds), or save the model again with torch.export.save from plain "
              "tensors")
_UNSAFE = "unsafe-deserialization"
# The archive's layout (torch/export/pt2_archive/constants.py).
_FORMAT_MEMBER, _VERSION_MEMBER = "archive_format", "archive_version"
_WEIGHTS_DIR, _CONSTANTS_DIR = "data/weights/", "data/constants/"
_SAMPLE_INPUTS = re.compile(r"data/sample_inputs/[^/]+\.pt")
_LIBRARY_DIRS = ("data/aotinductor/",)
_TENSOR_CONSTANT_PREFIX = "tensor_"
# The layout torch 2.7 and earlier wrote: its weights go through a full unpickler.
_LEGACY_MEMBERS = re.compile(r"(version|serialized_\w+\.(pt|json))")
_JSON_LIMIT_BYTES = 1 << 30
# torch/_export/serde/schema.py ScalarType -> bytes per element.
_ELEMENT_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 2, 7: 4, 8: 8, 9: 4, 10: 8, 11: 16, 12: 1,
                  13: 2, 28: 2, 29: 1, 30: 1, 31: 1, 32: 1, 33: 1, 34: 4, 35: 8}

# Operators a graph may call besides those under torch.ops (torch's _SYM_OPS and the
# arithmetic of symbolic shapes), and torch.ops operators that touch the file system.
_PLAIN_CALLABLES = frozenset(
    [f"_operator.{name}" for name in (
        "getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos",
        "abs", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert",
        "lshift", "rshift", "truth", "index")]
    + [f"torch.{name}" for name in (
        "sym_not", "sym_int", "sym_float", "sym_ite", "sym_max", "sym_min", "sym_sqrt",
        "_sym_sqrt", "sym_sum")])
_FILE_OPERATORS = frozenset({("aten", "save"), ("aten", "from_file"),
                             ("debugprims", "load_tensor")})
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SYMBOL_NAME = re.compile(r"[a-z]+[0-9]{1,6}")
# Text pasted between quotes into generated Python: no quote, backslash or control
# character can end the literal early.
_PLAIN_TEXT = re.compile(r"[^'\"\\\x00-\x1f\x7f]{0,256}")

# What a shape expression (sympy's repr of a symbolic size) may name.
_SYMPY_NAMES = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality", "StrictLessThan",
    "StrictGreaterThan", "LessThan", "GreaterThan", "And", "Or", "Not", "Piecewise",
    "ExprCondPair", "floor", "ceiling", "sqrt", "true", "false", "True", "False", "oo",
    "zoo", "nan", "int_oo", "IntInfinity", "NegativeIntInfinity", "Infinity",
    "NegativeInfinity", "BooleanTrue", "BooleanFalse", "Half", "One", "Zero", "NegativeOne",
    # torch.utils._sympy.functions, as the deserializer names them
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt",
    "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv",
    "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
    "RoundToInt", "RoundDecimal", "ToFloat", "Identity"})
_SYMPY_NAME_PREFIXES = ("OpaqueUnaryFn_", "BitwiseFn_")
# What a guard (``L['x'].size()[0] <= 64``) may name.
_GUARD_NAMES = frozenset({"L", "math", "inf", "IsNonOverlappingAndDenseIndicator",
                          "cast_symbool_to_symint_guardless"})
_GUARD_METHODS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})
_EXPRESSION_NODES = (ast.Expression, ast.Load, ast.BinOp, ast.UnaryOp, ast.BoolOp,
                     ast.Compare, ast.operator, ast.unaryop, ast.boolop, ast.cmpop)
_EXPRESSION_LIMIT = 100_000


def check_archive(path: Path) -> None:
    """Raise a UsageError naming the first thing in the ``.pt2`` at ``path`` that
    torch.export.load would unpickle, evaluate or load as a library, or the first tensor
    record that does not fit its member (exit 2)."""
    try:
        with zipfile.ZipFile(path) as archive:
            _check_archive(path, archive)
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:
        raise UsageError(f"cannot read ExportedProgram {path.name}: {first_line(exc)}",
                         hint="pass a file written by torch.export.save",
                         code="bad-pt2") from exc


def check_sample_inputs(path: Path, torch: Any) -> None:
    """Read the example inputs torch.export.load would read, with torch's weights_only
    unpickler; torch itself retries a failure with the full unpickler."""
    with zipfile.ZipFile(path) as archive:
        members = _members(path, archive)
        for name, info in members.items():
            if not _SAMPLE_INPUTS.fullmatch(name):
                continue
            try:
                inputs = torch.load(io.BytesIO(archive.read(info)), weights_only=True)
            except Exception as exc:
                raise UsageError(
                    f"{path.name}: its example inputs ({name}) hold pickled objects beyond "
                    f"tensors: {first_line(exc, limit=160)}",
                    hint=TRUST_HINT, code=_UNSAFE) from exc
            for text in _strings(inputs):
                _check_plain(path, text, f"a key of its example inputs ({name})")


# --- the archive -------------------------------------------------------------------------

def _check_archive(path: Path, archive: zipfile.ZipFile) -> None:
    members = _members(path, archive)
    if _FORMAT_MEMBER not in members:
        if any(_LEGACY_MEMBERS.fullmatch(info.filename) for info in archive.infolist()):
            raise UsageError(f"{path.name} was written by torch 2.7 or earlier, whose "
                             ".pt2 files keep their weights pickled", hint=TRUST_HINT,
                             code=_UNSAFE)
        raise UsageError(f"{path.name} is not a .pt2 archive (it has no {_FORMAT_MEMBER})",
                         hint="pass a file written by torch.export.save", code="bad-pt2")
    for name in members:
        if name.startswith(_LIBRARY_DIRS):
            raise UsageError(
                f"{path.name} holds an AOTInductor package ({name}): torch.export.load "
                "loads its compiled library", hint=TRUST_HINT, code=_UNSAFE)
        if name.startswith((_WEIGHTS_DIR, _CONSTANTS_DIR)) and name.endswith(".pt"):
            raise UsageError(f"{path.name} keeps its tensors pickled ({name})",
                             hint=TRUST_HINT, code=_UNSAFE)
    for name, info in members.items():
        if not name.endswith(".json"):
            continue
        document = _read_json(path, archive, info)
        if name.startswith(_WEIGHTS_DIR):
            _check_payloads(path, archive, members, document, _WEIGHTS_DIR, "weight")
        elif name.startswith(_CONSTANTS_DIR):
            _check_payloads(path, archive, members, document, _CONSTANTS_DIR, "constant")
        elif name.startswith("models/"):
            _check_program(path, document)


def _members(path: Path, archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The archive's members by their names below its one top folder, as torch's reader
    (miniz) finds them. Names that differ only in case are refused: miniz matches names
    without regard to case and zipfile with it, so they could be read as different
    members."""
    infos = archive.infolist()
    if not infos:
        raise UsageError(f"{path.name} is an empty zip archive",
                         hint="pass a file written by torch.export.save", code="bad-pt2")
    top = infos[0].filename.split("/", 1)[0]
    members: dict[str, zipfile.ZipInfo] = {}
    seen: set[str] = set()
    for info in infos:
        if info.filename.lower() in seen:
            raise UsageError(f"{path.name} holds {info.filename!r} twice",
                             hint="pass a file written by torch.export.save", code="bad-pt2")
        seen.add(info.filename.lower())
        if info.filename.startswith(top + "/"):
            members[info.filename[len(top) + 1:]] = info
    return members


def _read_json(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Any:
    if info.file_size > _JSON_LIMIT_BYTES:
        raise UsageError(f"{path.name}: {info.filename} is {info.file_size} bytes, more than "
                         "any program record", hint="pass a file written by torch.export.save",
                         code="bad-pt2")
    try:
        return json.loads(archive.read(info))
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"{path.name}: {info.filename} is not valid JSON: "
                         f"{first_line(exc, limit=120)}",
                         hint="pass a file written by torch.export.save", code="bad-pt2",
                         ) from exc


def _check_payloads(path: Path, archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo],
                    document: Any, folder: str, kind: str) -> None:
    """A weights or constants config: every entry a raw tensor record that holds it."""
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise UsageError(f"{path.name}: its {kind} table is not a JSON object of entries",
                         hint="pass a file written by torch.export.save", code="bad-pt2")
    for fqn, entry in config.items():
        where = f"{kind} {_shown(fqn)}"
        if not isinstance(entry, dict):
            raise UsageError(f"{path.name}: {where} has no entry",
                             hint="pass a file written by torch.export.save", code="bad-pt2")
        record = str(entry.get("path_name", ""))
        if entry.get("use_pickle") or (kind == "constant"
                                       and not record.startswith(_TENSOR_CONSTANT_PREFIX)):
            raise UsageError(
                f"{path.name} holds {where} as a pickled object ({_shown(folder + record)}): "
                "torch.export.load would unpickle it, which can run code",
                hint=TRUST_HINT, code=_UNSAFE)
        info = members.get(folder + record)
        if info is None:
            raise UsageError(f"{path.name}: {where} names record {_shown(record)}, which the "
                             "archive does not hold",
                             hint="pass a file written by torch.export.save", code="bad-pt2")
        _check_tensor_fits(path, where, entry.get("tensor_meta"), info.file_size)


def _check_tensor_fits(path: Path, where: str, meta: Any, record_bytes: int) -> None:
    """The sizes, strides and offset of a tensor stay inside its record: torch makes a
    tensor of the declared size from an empty record, and views the others in place."""
    try:
        sizes = [int(item["as_int"]) for item in meta["sizes"]]
        strides = [int(item["as_int"]) for item in meta["strides"]]
        offset = int(meta["storage_offset"]["as_int"])
        element_bytes = _ELEMENT_BYTES[int(meta["dtype"])]
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{path.name}: {where} has no readable dtype, sizes, strides and "
                         "offset", hint="pass a file written by torch.export.save",
                         code="bad-pt2") from exc
    if len(sizes) != len(strides) or min([offset, *sizes, *strides]) < 0:
        raise UsageError(f"{path.name}: {where} has sizes {sizes}, strides {strides}, offset "
                         f"{offset}", hint="pass a file written by torch.export.save",
                         code="bad-pt2")
    if 0 in sizes:
        return
    last = offset + sum((size - 1) * stride for size, stride in zip(sizes, strides,
                                                                       strict=True))
    if (last + 1) * element_bytes > record_bytes:
        raise UsageError(f"{path.name}: {where} reaches byte {(last + 1) * element_bytes} of "
                         f"a {record_bytes}-byte record",
                         hint="pass a complete file written by torch.export.save",
                         code="bad-pt2")


# --- the program -------------------------------------------------------------------------

def _check_program(path: Path, document: Any) -> None:
    """Every string of a serialized ExportedProgram that torch evaluates, compiles or
    pastes into generated code."""
    for key, value in _fields(document):
        if key == "expr_str":
            _check_expression(path, value, _SYMPY_NAMES, "a shape expression")
        elif key == "guards_code":
            for guard in value if isinstance(value, list) else [value]:
                _check_expression(path, guard, _GUARD_NAMES, "a guard")
        elif key == "range_constraints" and isinstance(value, dict):
            for symbol in value:
                if not _SYMBOL_NAME.fullmatch(str(symbol)):
                    raise UsageError(f"{path.name}: its range constraints name "
                                     f"{_shown(symbol)}, which is not a shape symbol",
                                     hint=TRUST_HINT, code=_UNSAFE)
        elif key == "forward_arg_names":
            for name in value if isinstance(value, list) else [value]:
                if not (isinstance(name, str) and _IDENTIFIER.fullmatch(name)):
                    raise UsageError(f"{path.name}: argument name {_shown(name)} is not a "
                                     "Python identifier", hint=TRUST_HINT, code=_UNSAFE)
        elif key in ("in_spec", "out_spec"):
            for text in _treespec_strings(path, value):
                _check_plain(path, text, f"a key of its {key}")
        elif key in ("target", "as_operator"):
            _check_target(path, value)
        elif key == "graph" and isinstance(value, dict):
            for item in value.get("inputs") or []:
                if isinstance(item, dict) and "as_string" in item:
                    _check_plain(path, item["as_string"], "a string input")


def _fields(document: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) of every object in a JSON document, depth first."""
    stack = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                yield key, item
                stack.append(item)
        elif isinstance(value, list):
            stack.extend(value)


def _check_target(path: Path, target: Any) -> None:
    if not isinstance(target, str):
        raise UsageError(f"{path.name}: an operator is named by {_shown(target)}",
                         hint="pass a file written by torch.export.save", code="bad-pt2")
    parts = target.split(".")
    is_operator = (len(parts) in (4, 5) and parts[:2] == ["torch", "ops"]
                   and all(_IDENTIFIER.fullmatch(p) and not p.startswith("__") for p in parts))
    if not (is_operator or target in _PLAIN_CALLABLES or _is_math_function(parts)):
        raise UsageError(f"{path.name} calls {_shown(target)}, which is not a PyTorch "
                         "operator", hint=TRUST_HINT, code=_UNSAFE)
    if is_operator and (parts[2], parts[3]) in _FILE_OPERATORS:
        raise UsageError(f"{path.name} calls {target}, which reads or writes files",
                         hint=TRUST_HINT, code=_UNSAFE)


def _is_math_function(parts: list[str]) -> bool:
    return (len(parts) == 2 and parts[0] == "math" and bool(_IDENTIFIER.fullmatch(parts[1]))
            and not parts[1].startswith("_"))


def _check_expression(path: Path, text: Any, names: frozenset[str], what: str) -> None:
    """``text`` is a Python expression of arithmetic, comparisons and calls of ``names``
    (or shape symbols), with no attribute but a guard's ``.size()`` and no string but a
    symbol's name: sympy.sympify and the guard function evaluate it."""
    if not isinstance(text, str) or len(text) > _EXPRESSION_LIMIT:
        raise UsageError(f"{path.name}: {what} is not a short text",
                         hint=TRUST_HINT, code=_UNSAFE)
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        tree = None
    bad = _unsafe_node(tree, names) if tree is not None else "text that is not an expression"
    if bad:
        raise UsageError(f"{path.name}: {what} holds {bad} ({_shown(text)}), which torch "
                         "would evaluate as Python", hint=TRUST_HINT, code=_UNSAFE)


def _unsafe_node(tree: ast.AST, names: frozenset[str]) -> str:
    """What in an expression's tree is not plain arithmetic over allowed names, or ""."""
    for node in ast.walk(tree):
        if isinstance(node, (*_EXPRESSION_NODES, ast.Tuple, ast.keyword)):
            if isinstance(node, ast.keyword) and not (
                    node.arg and _IDENTIFIER.fullmatch(node.arg)):
                return "a keyword argument that is not a name"
            continue
        if isinstance(node, ast.Name):
            if not (node.id in names or _SYMBOL_NAME.fullmatch(node.id)
                    or (names is _SYMPY_NAMES and node.id.startswith(_SYMPY_NAME_PREFIXES))):
                return f"the name {node.id!r}"
        elif isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, str):
                if not re.fullmatch(r"[A-Za-z0-9_.+\-]{0,64}", value):
                    return "a string"
            elif isinstance(value, bool) or value is None or isinstance(value, float):
                pass
            elif not (isinstance(value, int) and abs(value) < 1 << 64):
                return "a constant that is not a number"
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name | ast.Attribute):
                return "a call of a computed value"
        elif isinstance(node, ast.Attribute):
            owner = node.value
            is_math = isinstance(owner, ast.Name) and owner.id == "math" and "math" in names
            if not ((is_math and not node.attr.startswith("_"))
                    or (names is _GUARD_NAMES and node.attr in _GUARD_METHODS)):
                return f"the attribute {node.attr!r}"
        elif isinstance(node, ast.Subscript):
            if names is not _GUARD_NAMES:
                return "a subscript"
        else:
            return f"a {type(node).__name__} expression"
    return ""


def _treespec_strings(path: Path, text: Any) -> list[str]:
    """The strings (dict keys, field names) in a serialized pytree spec."""
    try:
        _protocol, tree = json.loads(text)
    except (TypeError, ValueError, RecursionError) as exc:
        raise UsageError(f"{path.name}: an input or output spec is not valid JSON",
                         hint="pass a file written by torch.export.save",
                         code="bad-pt2") from exc
    found: list[str] = []
    for key, value in _fields(tree):
        if key == "context" and isinstance(value, str):
            try:
                found += list(_strings(json.loads(value)))
            except (ValueError, RecursionError):
                found.append(value)
        elif key == "type" and value is not None:
            found.append(str(value))
    return found


def _strings(value: Any) -> Iterator[str]:
    """Every string in a nest of dicts (keys too), lists and tuples."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def _check_plain(path: Path, text: Any, what: str) -> None:
    if not (isinstance(text, str) and _PLAIN_TEXT.fullmatch(text)):
        raise UsageError(f"{path.name}: {what} is {_shown(text)}, which torch would paste "
                         "into generated Python (a quote, backslash or control character)",
                         hint=TRUST_HINT, code=_UNSAFE)


def _shown(value: Any) -> str:
    """A value from the file as one short, printable token."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
