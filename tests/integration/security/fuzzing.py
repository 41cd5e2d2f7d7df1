"""A fuzzer for untrusted model files (issue 16): small real models of every source kind,
written by the real frameworks, mutated with a seeded generator and run through the real
CLI (`convert` and `inspect`) in a subprocess. Used by test_fuzz.py (a few mutants per
kind) and benchmarks/robustness.py (many). No test functions here.

    build_seeds(folder)                 -> {kind: Seed}, each seed in folder/KIND/
    mutants(seeds_folder, rng, count)   -> (kind, mutated copy, description), count per kind
    run_mutant(kind, path, work)        -> Finding: exit codes, stderr, time, RSS, strays

Each framework writes its seed in its own child process (paddle and mindspore cannot share
one), from the builders in tests/models where they exist. Nothing comes from the network.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[3]
CONVERTKIT = Path(sys.executable).parent / "convertkit"
KINDS = ("onnx", "keras", "savedmodel", "paddle", "pt2", "mindir", "hf")
# The exit codes a hostile file may cause (README "Exit codes"): 0 built and passed, 1 a
# check failed, 2 unreadable input, 3 the conversion failed, 4 a framework is missing.
# 5 means convertkit itself failed: for a fuzzer, a bug.
DOCUMENTED_EXITS = frozenset({0, 1, 2, 3, 4})
TRACEBACK = "Traceback (most recent call last)"
# What libraries leave in TMPDIR whatever the model: onnxruntime writes `.ses` (one file,
# reused by every process) when it is imported.
TEMP_FILES = frozenset({".ses"})


@dataclass(frozen=True)
class Seed:
    kind: str
    path: Path  # the SOURCE given to the CLI: a file, or the folder of a SavedModel/Paddle model
    args: tuple[str, ...] = ()  # what `convert` needs besides SOURCE (e.g. -i x:1x8)


# --- seeds --------------------------------------------------------------------------------

def _onnx_seed(folder: Path) -> Path:
    """A small conv net written with onnx.helper: Conv, Relu, GlobalAveragePool, Flatten,
    Gemm, with a named input x:1x3x8x8 and output y:1x4."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "conv_b"),
        numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "fc_b"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Reshape", ["g", "shape"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="fuzz-seed")
    onnx.checker.check_model(model, full_check=True)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    return path


# Each runs as `python -c SCRIPT FOLDER` from the repository root.
_KERAS = """
import sys, keras
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((8,), name="x"), keras.layers.Dense(6, activation="relu"),
                          keras.layers.Dense(3, name="y")], name="small")
model.save(sys.argv[1] + "/model.keras")
"""
_SAVEDMODEL = """
import sys
from tests.models.keras_models import write_saved_model_from_module
write_saved_model_from_module(__import__("pathlib").Path(sys.argv[1]) / "saved_model")
"""
_PT2 = """
import sys, torch
from tests.models.torch_models import small_cnn
program = torch.export.export(small_cnn().eval(), (torch.randn(1, 3, 16, 16),))
torch.export.save(program, sys.argv[1] + "/model.pt2")
"""
_SCRIPTS: dict[str, tuple[list[str], str, tuple[str, ...]]] = {
    # kind: (command after the interpreter, SOURCE relative to the folder, convert args)
    "keras": (["-c", _KERAS], "model.keras", ()),
    "savedmodel": (["-c", _SAVEDMODEL], "saved_model", ("-i", "x:2x6")),
    "pt2": (["-c", _PT2], "model.pt2", ()),
    "paddle": (["tests/models/paddle_models.py", "save", "mlp", "{folder}/paddle/inference",
                "x:2x8"], "paddle", ()),
    "mindir": (["tests/models/mindspore_models.py", "mindir", "mlp", "{folder}/model.mindir",
                "x:2x8"], "model.mindir", ()),
    # A Hugging Face folder: config.json (mutated as JSON) and model.safetensors.
    "hf": (["examples/tiny_llm.py", "{folder}/hf", "--kind", "gpt2"], "hf", ()),
}


def build_seed(kind: str, folder: Path) -> Seed:
    """Write the seed model of ``kind`` into ``folder`` (created) with its framework."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "onnx":
        return Seed(kind, _onnx_seed(folder))
    command, source, args = _SCRIPTS[kind]
    argv = [part.format(folder=folder) for part in command]
    if argv[0] == "-c":
        argv.append(str(folder))
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3",
               GLOG_minloglevel="2", POLYGRAPHY_AUTOINSTALL_DEPS="0")
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0 or not (folder / source).exists():
        raise RuntimeError(f"could not write the {kind} seed: {done.stderr[-3000:]}")
    return Seed(kind, folder / source, args)


def build_seeds(folder: Path, kinds: tuple[str, ...] = KINDS) -> dict[str, Seed]:
    """The seed of each kind in ``folder/KIND/``, written once: a folder that holds a seed
    already is reused (its ``seed.json`` says where the SOURCE is)."""
    seeds = {}
    for kind in kinds:
        record = folder / kind / "seed.json"
        if record.is_file():
            data = json.loads(record.read_text())
            seeds[kind] = Seed(kind, folder / kind / data["source"], tuple(data["args"]))
            continue
        seed = build_seed(kind, folder / kind)
        record.write_text(json.dumps({"source": str(seed.path.relative_to(folder / kind)),
                                      "args": list(seed.args)}))
        seeds[kind] = seed
    return seeds


# --- hostile values -----------------------------------------------------------------------

# A file name no run may create: mutations write it as `../` names and absolute paths; after
# each run it is looked for beside every ancestor of the mutant's folder.
ESCAPE_NAME = "convertkit-fuzz-escape"
ESCAPE_PATH = f"/tmp/{ESCAPE_NAME}"
# What a string from a model file may hold: paths out of its folder, terminal controls,
# shell syntax, NUL, bidi overrides, huge lengths.
HOSTILE_STRINGS = (
    f"../../{ESCAPE_NAME}", f"../../../../../../..{ESCAPE_PATH}", ESCAPE_PATH, "/etc/passwd",
    "/dev/zero", "..", ".", "", "a\nb", "x\r\n\x1b[2J\x1b]0;title\x07", "\x00", "a\x00b",
    "\u202eevil", f"x'; touch {ESCAPE_PATH} #", f"$(touch {ESCAPE_PATH})", "%s%n%x",
    "x" * 70000, "\U0001f600" * 64, "CON", "a/b/c", "\\..\\..\\win",
)
HUGE_INTS = (0, 1, -1, -2**31, 2**31 - 1, 2**31, 2**32, 2**40, 2**62, 2**63 - 1, -2**63)


def _hostile_string(rng: random.Random) -> str:
    return rng.choice(HOSTILE_STRINGS)


def _show(value: object, limit: int = 40) -> str:
    """A value for a description: escaped and cut, so that a report line stays one line."""
    text = ascii(value)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


# --- bytes --------------------------------------------------------------------------------

def mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One raw mutation: flips, truncation, insertion, a duplicated or zeroed run, a splice."""
    size = len(data)
    choice = rng.choice(("flip", "truncate", "insert", "duplicate", "zero", "ff", "empty"))
    if size == 0 or choice == "empty":
        return b"", "emptied"
    if choice == "flip":
        out = bytearray(data)
        count = rng.choice((1, 2, 8, 64))
        for _ in range(count):
            out[rng.randrange(size)] ^= 1 << rng.randrange(8)
        return bytes(out), f"{count} bit flips"
    if choice == "truncate":
        at = rng.randrange(size)
        return data[:at], f"truncated to {at} of {size} bytes"
    at = rng.randrange(size + 1)
    if choice == "insert":
        blob = rng.randbytes(rng.choice((1, 7, 100, 4096)))
        return data[:at] + blob + data[at:], f"{len(blob)} random bytes inserted at {at}"
    length = min(size - min(at, size - 1), rng.choice((4, 64, 1024)))
    start = min(at, size - 1)
    if choice == "duplicate":
        chunk = data[start:start + length]
        return data[:start] + chunk * rng.choice((2, 50)) + data[start:], (
            f"bytes {start}+{length} repeated")
    fill = b"\0" if choice == "zero" else b"\xff"
    return data[:start] + fill * length + data[start + length:], (
        f"bytes {start}+{length} set to {fill!r}")


# --- protobuf, without a schema -----------------------------------------------------------

def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        shift += 7
        if not byte & 0x80:
            return value, at


def _put_varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def wire_parse(data: bytes) -> list[list]:
    """A protobuf message as [field, wire type, value] entries (varints as ints, fixed
    fields and length-delimited ones as bytes); ValueError when it is not one."""
    fields, at = [], 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field 0")
        if wire == 0:
            value, at = _varint(data, at)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, at = data[at:at + width], at + width
            if len(value) != width:
                raise ValueError("short fixed field")
        elif wire == 2:
            length, at = _varint(data, at)
            value, at = data[at:at + length], at + length
            if len(value) != length:
                raise ValueError("short field")
        else:
            raise ValueError("group or bad wire type")
        fields.append([number, wire, value])
    return fields


def wire_encode(fields: list[list]) -> bytes:
    out = bytearray()
    for number, wire, value in fields:
        out += _put_varint(number << 3 | wire)
        if wire == 0:
            out += _put_varint(value)
        elif wire == 2:
            body = wire_encode(value) if isinstance(value, list) else value
            out += _put_varint(len(body)) + body
        else:
            out += value
    return bytes(out)


def _is_text(value: bytes) -> bool:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return text.isprintable()


def _wire_sites(fields: list[list], depth: int = 0) -> list[tuple[list[list], int, str]]:
    """Every field of the message and its sub-messages: (its list, index, what it is).
    Length-delimited fields that parse as messages are opened up in place."""
    sites = []
    for index, entry in enumerate(fields):
        _, wire, value = entry
        if wire == 2 and isinstance(value, bytes) and value and not _is_text(value) \
                and depth < 24:
            try:
                inner = wire_parse(value)
            except ValueError:
                inner = None
            if inner:
                entry[2] = value = inner
        kind = {0: "varint", 1: "fixed", 5: "fixed"}.get(wire) or (
            "message" if isinstance(value, list) else "text" if _is_text(value) else "bytes")
        sites.append((fields, index, kind))
        if isinstance(value, list):
            sites += _wire_sites(value, depth + 1)
    return sites


def mutate_protobuf(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One mutation of a decoded field (anywhere in the message tree, found without a
    schema): a varint set to an extreme, a string made hostile, a sub-message or bytes
    truncated or flipped, a field dropped, repeated or added. Raw bytes if it does not
    parse."""
    try:
        fields = wire_parse(data)
    except ValueError:
        return mutate_bytes(data, rng)
    sites = _wire_sites(fields)
    if not sites:
        return mutate_bytes(data, rng)
    container, index, kind = rng.choice(sites)
    number, wire, value = container[index]
    where = f"field {number} ({kind}) #{index}"
    action = rng.random()
    if action < 0.1:
        del container[index]
        what = f"{where} dropped"
    elif action < 0.18:
        container.insert(index, [number, wire, value])
        what = f"{where} repeated"
    elif action < 0.24:
        container.insert(index, [rng.randrange(1, 2**29), 0, rng.choice(HUGE_INTS) % 2**64])
        what = "an unknown varint field inserted"
    elif kind == "varint":
        new = rng.choice((*HUGE_INTS, value + 1, value - 1, value * 1000))
        container[index][2] = new % 2**64
        what = f"{where} {value} -> {new}"
    elif kind == "fixed":
        container[index][2] = rng.choice((b"\xff" * len(value), b"\x7f\xf8" + b"\0" * (
            len(value) - 2), rng.randbytes(len(value))))
        what = f"{where} set to {container[index][2].hex()}"
    elif kind == "text" or (kind == "bytes" and rng.random() < 0.3):
        new = _hostile_string(rng)
        container[index][2] = new.encode("utf-8")
        what = f"{where} {_show(value.decode('utf-8', 'replace'), 24)} -> {_show(new)}"
    else:
        body = wire_encode(value) if isinstance(value, list) else value
        new_body, how = mutate_bytes(body, rng)
        container[index][2] = new_body
        what = f"{where}: {how}"
    return wire_encode(fields), what


# --- JSON ---------------------------------------------------------------------------------

def _json_sites(value: object, path: tuple = ()) -> list[tuple[tuple, object]]:
    sites = [(path, value)]
    if isinstance(value, dict):
        for key, item in value.items():
            sites += _json_sites(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            sites += _json_sites(item, (*path, index))
    return sites


def _json_replace(document: object, path: tuple, new: object) -> object:
    if not path:
        return new
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = new
    return document


def mutate_json(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One mutation of a decoded JSON value: a number made extreme or of another type, a
    string made hostile, a list emptied or blown up, a key dropped or added, a value nested
    far deeper than any parser recurses. Raw bytes if it does not parse."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return mutate_bytes(data, rng)
    path, value = rng.choice(_json_sites(document))
    where = "/".join(str(part) for part in path[-4:]) or "(root)"
    action = rng.random()
    if action < 0.05:
        depth = rng.choice((1000, 100000))
        raw = json.dumps(_json_replace(document, path, "\0NEST\0"))
        text = raw.replace('"\\u0000NEST\\u0000"', "[" * depth + "]" * depth, 1)
        return text.encode(), f"{_show(where)} nested {depth} lists deep"
    if isinstance(value, dict) and value and action < 0.4:
        key = rng.choice(sorted(value, key=str))
        if rng.random() < 0.5:
            del value[key]
            return json.dumps(document).encode(), f"{_show(where + '/' + key)} dropped"
        value[_hostile_string(rng)] = value.pop(key)
        return json.dumps(document).encode(), f"{_show(where + '/' + key)} renamed"
    if isinstance(value, list) and value and action < 0.4:
        new = rng.choice(([], value * rng.choice((2, 1000)), value[:-1], [None] * len(value)))
    elif isinstance(value, bool) or value is None:
        new = rng.choice((not value, "true", 0, [], {}))
    elif isinstance(value, (int, float)):
        new = rng.choice((*HUGE_INTS, -value, 1e308, -1e308, 1e-320, str(value), None,
                          [value]))
    elif isinstance(value, str):
        new = rng.choice((_hostile_string(rng), _hostile_string(rng), 0, None, [value]))
    else:
        new = rng.choice((None, 0, "x", [], {}))
    document = _json_replace(document, path, new)
    return json.dumps(document).encode(), f"{_show(where)} -> {_show(new)}"


# --- ONNX, decoded ------------------------------------------------------------------------

def _onnx_tensor_names(model: onnx.ModelProto) -> list[str]:
    names = [i.name for i in model.graph.input] + [o.name for o in model.graph.output]
    names += [t.name for t in model.graph.initializer]
    names += [o for node in model.graph.node for o in node.output]
    return sorted(set(names))


def _rename_everywhere(model: onnx.ModelProto, old: str, new: str) -> None:
    graph = model.graph
    for item in [*graph.input, *graph.output, *graph.initializer, *graph.value_info]:
        if item.name == old:
            item.name = new
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def mutate_onnx(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One mutation of a decoded ONNX field: tensor dims, types, data and external data,
    names, attributes, operators, opsets, shapes, graph structure, recursion. A schema-free
    protobuf mutation where protobuf itself refuses the result (e.g. too deep)."""
    model = onnx.load_from_string(data)
    try:
        what = _mutate_onnx_model(model, rng)
        return model.SerializeToString(), what
    except Exception:
        return mutate_protobuf(data, rng)


def _mutate_onnx_model(model: onnx.ModelProto, rng: random.Random) -> str:
    graph = model.graph
    tensor = rng.choice(list(graph.initializer))
    node = rng.choice(list(graph.node))
    choice = rng.choice((
        "dims", "data_type", "raw_data", "external", "external", "rename", "rename_one",
        "attribute", "op_type", "opset", "ir_version", "input_shape", "elem_type", "cycle",
        "dangling", "metadata", "recursive_function", "nested_if", "drop_node",
        "float_data"))
    if choice == "dims":
        dims = list(tensor.dims) or [1]
        dims[rng.randrange(len(dims))] = new = rng.choice((-1, 0, -2**40, 2**31, 2**40, 2**62))
        if rng.random() < 0.3:
            dims.append(new)
        tensor.ClearField("dims")
        tensor.dims.extend(dims)
        what = f"initializer {tensor.name} dims -> {dims}"
    elif choice == "data_type":
        tensor.data_type = new = rng.choice((0, 8, 99, 2**31 - 1, -5, 16, 23, 40))
        what = f"initializer {tensor.name} data_type -> {new}"
    elif choice == "raw_data":
        raw = tensor.raw_data
        tensor.raw_data = new = rng.choice((raw[:len(raw) // 2], raw[:1], b"", raw * 3))
        what = f"initializer {tensor.name} raw_data {len(raw)} -> {len(new)} bytes"
    elif choice == "float_data":
        tensor.ClearField("raw_data")
        tensor.float_data.extend([1.0] * rng.choice((0, 1, 1000)))
        what = f"initializer {tensor.name} raw_data -> {len(tensor.float_data)} float_data"
    elif choice == "external":
        location = rng.choice((f"../{ESCAPE_NAME}", "/etc/passwd", "../../../../../etc/shadow",
                               "sub/../../x", "/dev/zero", "/dev/urandom", "/proc/self/mem",
                               "model.onnx", "", ".", "missing.bin", "a\nb"))
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        tensor.external_data.add(key="location", value=location)
        extra = ""
        if rng.random() < 0.4:
            offset, length = rng.choice(((0, 2**40), (2**62, 4), (-1, 16), (0, 0)))
            tensor.external_data.add(key="offset", value=str(offset))
            tensor.external_data.add(key="length", value=str(length))
            extra = f" offset {offset} length {length}"
        what = f"initializer {tensor.name} external data at {_show(location)}{extra}"
    elif choice in ("rename", "rename_one"):
        old = rng.choice(_onnx_tensor_names(model))
        new = _hostile_string(rng)
        if choice == "rename":
            _rename_everywhere(model, old, new)
            what = f"tensor {old} renamed to {_show(new)} everywhere"
        else:
            target = rng.choice([*graph.input, *graph.output, *graph.initializer, node])
            what = f"{type(target).__name__} {target.name} alone renamed to {_show(new)}"
            target.name = new
    elif choice == "attribute":
        if not node.attribute:
            node.attribute.append(helper.make_attribute("axis", 0))
        attribute = rng.choice(list(node.attribute))
        if attribute.ints or rng.random() < 0.5:
            values = rng.choice(([0, 0], [-1, -1], [2**31, 1], [2**62] * 4, [], [1] * 100))
            attribute.ClearField("ints")
            attribute.ints.extend(values)
            attribute.type = onnx.AttributeProto.INTS
            what = f"{node.op_type} attribute {attribute.name} -> {_show(values)}"
        else:
            attribute.type = new = rng.choice((0, 2, 3, 99))
            what = f"{node.op_type} attribute {attribute.name} type -> {new}"
    elif choice == "op_type":
        node.op_type, node.domain = rng.choice((
            ("Evil\nOp", ""), ("Conv", "com.evil"), ("Loop", ""), ("If", ""), ("", ""),
            (_hostile_string(rng), "ai.onnx.ml")))
        what = f"node {node.name} -> op {_show(node.op_type)} domain {node.domain!r}"
    elif choice == "opset":
        model.opset_import[0].version = new = rng.choice((0, 1, 6, 999, -1, 2**62))
        what = f"opset -> {new}"
    elif choice == "ir_version":
        model.ir_version = new = rng.choice((0, 1, 99, -1, 2**62))
        what = f"ir_version -> {new}"
    elif choice == "input_shape":
        dim = rng.choice(list(graph.input[0].type.tensor_type.shape.dim))
        if rng.random() < 0.7:
            dim.dim_value = new = rng.choice((-1, 0, 2**31, 2**40, 2**62))
        else:
            dim.dim_param = new = _hostile_string(rng)
        what = f"input dim -> {_show(new)}"
    elif choice == "elem_type":
        graph.input[0].type.tensor_type.elem_type = new = rng.choice((0, 8, 99, -3, 2**30))
        what = f"input elem_type -> {new}"
    elif choice == "cycle":
        node.input[0] = node.output[0]
        what = f"node {node.name} reads its own output"
    elif choice == "dangling":
        node.input[0] = "nowhere"
        what = f"node {node.name} reads a tensor nothing makes"
    elif choice == "drop_node":
        graph.node.remove(node)
        what = f"node {node.name} removed"
    elif choice == "metadata":
        model.metadata_props.add(key=_hostile_string(rng), value=_hostile_string(rng))
        model.doc_string = _hostile_string(rng) * rng.choice((1, 100))
        what = "hostile metadata_props and doc_string"
    elif choice == "recursive_function":
        call = helper.make_node("Loopy", ["x"], ["x2"], domain="local")
        function = helper.make_function("local", "Loopy", ["a"], ["b"], [
            helper.make_node("Loopy", ["a"], ["b"], domain="local")],
            [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
        model.functions.append(function)
        model.opset_import.append(helper.make_opsetid("local", 1))
        graph.node.insert(0, call)
        graph.output.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, None))
        what = "a model-local function that calls itself"
    else:  # nested_if
        depth = rng.choice((20, 90, 200))
        inner = helper.make_graph([helper.make_node("Identity", ["x"], ["z0"])], "g0", [],
                                  [helper.make_tensor_value_info("z0", TensorProto.FLOAT, None)])
        leaf = inner
        for level in range(1, depth):  # else is the leaf: a copy per level, not 2**depth
            branch = helper.make_node("If", ["cond"], [f"z{level}"], then_branch=inner,
                                      else_branch=leaf)
            inner = helper.make_graph([branch], f"g{level}", [], [
                helper.make_tensor_value_info(f"z{level}", TensorProto.FLOAT, None)])
        graph.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
        graph.node.append(helper.make_node("If", ["cond"], ["deep"], then_branch=inner,
                                           else_branch=leaf))
        graph.output.append(helper.make_tensor_value_info("deep", TensorProto.FLOAT, None))
        what = f"If subgraphs nested {depth} deep"
    return what


# --- Paddle parameters --------------------------------------------------------------------

def _pdiparams_tensors(data: bytes) -> list[tuple[int, int, int]]:
    """(offset of the desc size, desc length, data end) of each tensor in a .pdiparams."""
    import struct

    tensors, at = [], 0
    while at + 20 <= len(data):
        lod_level = struct.unpack_from("<Q", data, at + 4)[0]
        at += 12
        for _ in range(lod_level):
            size = struct.unpack_from("<Q", data, at)[0]
            at += 8 + size
        at += 4  # the tensor's version
        desc_size = struct.unpack_from("<i", data, at)[0]
        desc = wire_parse(data[at + 4:at + 4 + desc_size])
        dims = [value for number, _, value in desc if number == 2]
        width = {5: 4, 6: 8, 4: 2, 3: 8, 2: 4, 0: 1, 1: 2, 20: 1, 21: 1, 22: 2}.get(
            next((value for number, _, value in desc if number == 1), 5), 4)
        count = 1
        for dim in dims:
            count *= dim
        tensors.append((at, desc_size, at + 4 + desc_size + count * width))
        at = tensors[-1][2]
    return tensors


def mutate_pdiparams(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A tensor's description (dims, data type) or its declared size, or raw bytes."""
    import struct

    try:
        tensors = _pdiparams_tensors(data)
    except (ValueError, OverflowError, MemoryError, struct.error):
        tensors = []
    if not tensors or rng.random() < 0.3:
        return mutate_bytes(data, rng)
    index = rng.randrange(len(tensors))
    at, size, _ = tensors[index]
    if rng.random() < 0.3:
        new = rng.choice((-1, 0, 2**31 - 1, size + 1000))
        return data[:at] + struct.pack("<i", new) + data[at + 4:], (
            f"tensor {index} desc size {size} -> {new}")
    desc, how = mutate_protobuf(data[at + 4:at + 4 + size], rng)
    return (data[:at] + struct.pack("<i", len(desc)) + desc + data[at + 4 + size:],
            f"tensor {index} desc: {how}")


# --- zip archives (.keras, .pt2) ----------------------------------------------------------

def _member_mutator(name: str) -> Callable[[bytes, random.Random], tuple[bytes, str]]:
    if name.endswith(".json"):
        return mutate_json
    if name.endswith("archive_format") or name.endswith("version") or name.endswith("byteorder"):
        return lambda data, rng: ((_hostile_string(rng).encode("utf-8", "surrogatepass"),
                                   "made hostile") if rng.random() < 0.5
                                  else mutate_bytes(data, rng))
    return mutate_bytes


def _pickle_that_writes(marker: Path) -> bytes:
    """A pickle that, if anything unpickles it, creates ``marker`` (and runs nothing
    else): the proof that a .pt2 member was loaded as code."""
    import pickle

    class Writes:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return pickle.dumps(Writes(), protocol=2)


def _zip_bomb_member(archive: zipfile.ZipFile, name: str, size: int) -> None:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    chunk = b"\0" * (1 << 20)
    with archive.open(info, "w", force_zip64=True) as member:
        for _ in range(size >> 20):
            member.write(chunk)


def _lie_about_sizes(data: bytes, name: str, size: int) -> bytes:
    """Rewrite the uncompressed size the local and central headers declare for ``name``."""
    import struct

    out, encoded = bytearray(data), name.encode()
    for signature, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        at = out.find(signature)
        while at >= 0:
            length = struct.unpack_from("<H", out, at + name_at - (4 if signature ==
                                                                   b"PK\x03\x04" else 18))[0]
            if bytes(out[at + name_at:at + name_at + length]) == encoded:
                struct.pack_into("<I", out, size_at + at, size & 0xFFFFFFFF)
            at = out.find(signature, at + 4)
    return bytes(out)


def mutate_zip(path: Path, rng: random.Random, marker: Path) -> str:
    """Rewrite the archive at ``path`` with one member changed (its JSON decoded, its bytes,
    its name, its declared size, a pickle in its place, a bomb), dropped or added with a
    name that leaves the archive; or flip the archive's own bytes."""
    choice = rng.choice(("json", "json", "json", "bytes", "bytes", "drop", "rename", "add",
                         "duplicate", "pickle", "lie", "bomb", "archive_bytes", "class"))
    with zipfile.ZipFile(path) as archive:
        if any(info.file_size > 64 << 20 for info in archive.infolist()):
            choice = "archive_bytes"  # a bomb already: not read into this process
        members = [] if choice == "archive_bytes" else [
            (info, archive.read(info)) for info in archive.infolist()]
    if choice == "archive_bytes":
        data, how = mutate_bytes(path.read_bytes(), rng)
        path.write_bytes(data)
        return f"archive: {how}"
    names = [info.filename for info, _ in members]
    target = rng.randrange(len(members))
    name = names[target]
    json_members = [i for i, n in enumerate(names) if n.endswith(".json")]
    if choice in ("json", "class") and json_members:
        target = rng.choice(json_members)
        name = names[target]
    extra: list[tuple[str, bytes]] = []
    what = ""
    if choice == "json" and json_members:
        data, how = mutate_json(members[target][1], rng)
        members[target] = (members[target][0], data)
        what = f"member {name}: {how}"
    elif choice == "class" and json_members:
        data, how = _hostile_class(members[target][1], rng, marker)
        members[target] = (members[target][0], data)
        what = f"member {name}: {how}"
    elif choice == "drop":
        del members[target]
        what = f"member {name} dropped"
    elif choice == "rename":
        new = rng.choice((f"../../{ESCAPE_NAME}", ESCAPE_PATH, "a\nb", name.upper(),
                          name + "/", "./" + name, name.replace("/", "\\")))
        members[target][0].filename = new
        what = f"member {name} renamed to {_show(new)}"
    elif choice == "add":
        new = rng.choice((f"../../{ESCAPE_NAME}", f"../../../../../../..{ESCAPE_PATH}",
                          ESCAPE_PATH, f"model/../../{ESCAPE_NAME}"))
        extra.append((new, b"escaped"))
        what = f"member {_show(new)} added"
    elif choice == "duplicate":
        extra.append((name, mutate_bytes(members[target][1], rng)[0]))
        what = f"member {name} twice, the second mutated"
    elif choice == "pickle" or (choice in ("json", "class") and not json_members):
        pickled = [i for i, n in enumerate(names) if n.endswith((".pt", ".pkl"))] or [target]
        target = rng.choice(pickled)
        name = names[target]
        members[target] = (members[target][0], _pickle_that_writes(marker))
        what = f"member {name} replaced by a pickle that writes {marker.name}"
    elif choice == "bytes":
        data, how = _member_mutator(name)(members[target][1], rng)
        members[target] = (members[target][0], data)
        what = f"member {name}: {how}"
    elif choice == "lie":
        what = f"member {name} declares {'4 GiB' if rng.random() < 0.5 else '0 bytes'}"
    else:  # bomb
        what = f"member {name} is 512 MiB of zeros, deflated"
    with zipfile.ZipFile(path, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": on purpose
        for info, data in members:
            if choice == "bomb" and info.filename == name:
                _zip_bomb_member(archive, name, 512 << 20)
                continue
            archive.writestr(info, data)
        for new, data in extra:
            archive.writestr(zipfile.ZipInfo(new), data)
    if choice == "lie":
        path.write_bytes(_lie_about_sizes(path.read_bytes(), name,
                                          0xFFFFFFFF if "4 GiB" in what else 0))
    return what


def _hostile_class(data: bytes, rng: random.Random, marker: Path) -> tuple[bytes, str]:
    """A Keras config whose layers name a callable that would write ``marker``: a module
    function in place of a layer class, or a Lambda layer (Python code)."""
    try:
        document = json.loads(data)
    except ValueError:
        return mutate_json(data, rng)
    sites = [value for _, value in _json_sites(document)
             if isinstance(value, dict) and "class_name" in value]
    if not sites:
        return mutate_json(data, rng)
    site = rng.choice(sites)
    module, name, config = rng.choice((
        ("builtins", "open", {"file": str(marker), "mode": "w"}),
        ("os", "system", f"touch {marker}"),
        ("subprocess", "Popen", {"args": ["touch", str(marker)]}),
        ("pathlib", "Path.touch", {"self": str(marker)}),
        ("keras.layers", "Lambda", {"function": {
            "class_name": "__lambda__", "config": {
                "code": __import__("base64").b64encode(__import__("marshal").dumps(compile(
                    f"open({str(marker)!r}, 'w')", "<fuzz>", "exec"))).decode(),
                "defaults": None, "closure": None}}}),
    ))
    site.update(module=module, class_name=name, config=config,
                registered_name=f"{module}>{name}")
    return json.dumps(document).encode(), f"a layer made {module}.{name}"


# --- folders (SavedModel, Paddle) ---------------------------------------------------------

def _file_mutator(path: Path) -> Callable[[bytes, random.Random], tuple[bytes, str]]:
    if path.suffix in (".pb", ".pdmodel", ".mindir", ".onnx"):
        return mutate_protobuf
    if path.suffix == ".json":
        return mutate_json
    if path.suffix == ".pdiparams":
        return mutate_pdiparams
    return mutate_bytes


def mutate_folder(source: Path, rng: random.Random, outside: Path) -> str:
    """A file of the model folder mutated by what it holds, deleted, or replaced by a
    symlink (to a device, to a file outside the folder, to itself) or a FIFO."""
    files = sorted(p for p in source.rglob("*") if p.is_file())
    weights = [3 if p.suffix in (".pb", ".json") else 2 if p.suffix == ".pdiparams" else 1
               for p in files]
    target = rng.choices(files, weights)[0]
    relative = target.relative_to(source)
    special = rng.random()
    if special < 0.04:
        target.unlink()
        return f"{relative} deleted"
    if special < 0.1:
        link = rng.choice(("/dev/zero", "/dev/urandom", "/etc/passwd", str(outside),
                           target.name))
        target.unlink()
        target.symlink_to(link)
        return f"{relative} is a symlink to {link}"
    if special < 0.13:
        target.unlink()
        os.mkfifo(target)
        return f"{relative} is a FIFO"
    data, how = _file_mutator(target)(target.read_bytes(), rng)
    target.write_bytes(data)
    return f"{relative}: {how}"


def mutate_file(path: Path, rng: random.Random, kind: str) -> str:
    """A single-file model (ONNX, MindIR): decoded fields first, raw bytes sometimes."""
    data = path.read_bytes()
    roll = rng.random()
    if kind == "onnx" and roll < 0.55:
        try:
            new, how = mutate_onnx(data, rng)
        except Exception:
            new, how = mutate_protobuf(data, rng)
    elif roll < 0.8:
        new, how = mutate_protobuf(data, rng)
    else:
        new, how = mutate_bytes(data, rng)
    path.write_bytes(new)
    return how


# --- mutants ------------------------------------------------------------------------------

@dataclass
class Mutant:
    kind: str
    path: Path         # the mutated SOURCE, in folder/model/
    description: str
    args: tuple[str, ...]
    folder: Path       # the mutant's own folder: model/, and the runs' cwd, OUT, TMPDIR
    marker: Path       # created only if something in the model ran as code

    def __iter__(self) -> Iterator:
        return iter((self.kind, self.path, self.description))


def mutate(seed: Seed, folder: Path, rng: random.Random) -> Mutant:
    """A copy of ``seed`` in ``folder/model/`` with one to three stacked mutations."""
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "model").mkdir(parents=True)
    path = folder / "model" / seed.path.name
    if seed.path.is_dir():
        shutil.copytree(seed.path, path, symlinks=True)
    else:
        shutil.copyfile(seed.path, path)
    outside = folder / "outside.txt"  # a file beside the model a symlink may point at
    outside.write_text("not part of the model\n")
    marker = folder / "PWNED"
    steps = []
    for _ in range(rng.choices((1, 2, 3), (75, 20, 5))[0]):
        if seed.kind in ("keras", "pt2"):
            try:
                steps.append(mutate_zip(path, rng, marker))
            except (zipfile.BadZipFile, OSError, ValueError, EOFError):
                data, how = mutate_bytes(path.read_bytes(), rng)
                path.write_bytes(data)
                steps.append(f"archive: {how}")
        elif path.is_dir():
            steps.append(mutate_folder(path, rng, outside))
        else:
            steps.append(mutate_file(path, rng, seed.kind))
    return Mutant(seed.kind, path, "; ".join(steps), seed.args, folder, marker)


def mutants(seed_folder: Path, rng: random.Random, count: int, *,
            kinds: tuple[str, ...] = KINDS, into: Path | None = None) -> Iterator[Mutant]:
    """``count`` mutants of each kind's seed (built into ``seed_folder`` if not there yet),
    each in its own folder under ``into`` (default: beside ``seed_folder``), kinds
    interleaved. A Mutant unpacks as (kind, path, description)."""
    seeds = build_seeds(seed_folder, kinds)
    into = into or seed_folder.parent / "mutants"
    for index in range(count):
        for kind in kinds:
            yield mutate(seeds[kind], into / f"{kind}-{index:03d}", rng)


# --- running the CLI on a mutant ----------------------------------------------------------

@dataclass
class Run:
    command: str            # convert or inspect
    argv: list[str]
    exit_code: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_mb: float       # the largest process of the run's tree the CLI waited for
    timed_out: bool
    left_running: list[str]  # processes of the run that outlived the CLI (command lines)

    @property
    def traceback(self) -> bool:
        return TRACEBACK in self.stdout or TRACEBACK in self.stderr


@dataclass
class Finding:
    mutant: Mutant
    runs: list[Run]
    strays: list[str] = field(default_factory=list)  # files created outside OUT
    # Left in the run's TMPDIR (a framework's temp files or caches): reported, not refused.
    temp_left: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f\u200e\u200f\u202a-\u202e"
                       r"\u2066-\u2069\u2028\u2029]")


def _snapshot(mutant: Mutant) -> set[str]:
    """Every path under the mutant's folder, and the names beside it and beside each of its
    ancestors that a `../` or absolute name could reach."""
    paths = {str(p) for p in mutant.folder.rglob("*")}
    paths |= {str(p) for p in mutant.folder.parent.iterdir()}
    paths |= {str(parent / ESCAPE_NAME) for parent in mutant.folder.parents
              if (parent / ESCAPE_NAME).exists() or (parent / ESCAPE_NAME).is_symlink()}
    return paths


# Runs the CLI and writes its peak RSS (KiB) to argv[1]. A small process of its own: Linux
# gives a child the peak RSS of the process it was forked from (kept across exec), so a
# fork from the fuzzer itself would report the fuzzer's peak. A signal is exit 128+N.
_RSS_WRAPPER = """
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as rss:
    rss.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def _run(command: list[str], cwd: Path, env: dict, hard_limit_s: float) -> Run:
    stdout_path, stderr_path = cwd.parent / "stdout.txt", cwd.parent / "stderr.txt"
    rss_path = cwd.parent / "rss.txt"
    wrapped = [sys.executable, "-S", "-c", _RSS_WRAPPER, str(rss_path), *command]
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        start = time.monotonic()
        process = subprocess.Popen(wrapped, cwd=cwd, env=env, stdout=stdout, stderr=stderr,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            process.wait(hard_limit_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        seconds = time.monotonic() - start
    left_running = _left_running(process.pid)
    out = stdout_path.read_bytes().decode("utf-8", "replace")
    err = stderr_path.read_bytes().decode("utf-8", "replace")
    rss_kb = int(rss_path.read_text() or 0) if rss_path.exists() else 0
    for path in (stdout_path, stderr_path, rss_path):
        path.unlink(missing_ok=True)
    return Run(command[1] if len(command) > 1 else "", command, process.returncode, out, err,
               seconds, rss_kb / 1024, timed_out, left_running)


def _left_running(group: int) -> list[str]:
    """The processes of the run's group still alive once the CLI exited (killed now): a
    short grace for children that are on their way out."""
    deadline = time.monotonic() + 2
    while True:
        alive = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and os.getpgid(int(entry.name)) == group:
                    stat = (entry / "stat").read_text()
                    if stat.rsplit(")", 1)[1].split()[0] != "Z":
                        alive.append((entry / "cmdline").read_bytes().replace(b"\0", b" ")
                                     .decode(errors="replace")[:200])
            except (OSError, ProcessLookupError):
                continue
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    return alive


def cli_command() -> list[str]:
    script = Path(sys.executable).parent / "convertkit"
    return [str(script)] if script.exists() else [sys.executable, "-m", "convertkit"]


def run_mutant(mutant: Mutant, *, timeout_s: int = 60, memory_mb: int = 4096,
               grace_s: float = 30, commands: tuple[str, ...] = ("convert", "inspect"),
               ) -> Finding:
    """`convert MUTANT -o OUT -t onnx` and `inspect MUTANT`, each from a fresh cwd with its
    own TMPDIR, under ``--timeout`` and ``--memory-mb``; killed ``grace_s`` after the
    timeout. The Finding lists every break of the contract (see ``problems_of``)."""
    finding = Finding(mutant, [])
    tool = cli_command()
    limits = ["--timeout", str(timeout_s), "--memory-mb", str(memory_mb)]
    for command in commands:
        cwd, tmp, out = (mutant.folder / f"{command}-{name}" for name in ("cwd", "tmp", "out"))
        cwd.mkdir()
        tmp.mkdir()
        argv = [*tool, command, str(mutant.path), *mutant.args, *limits]
        if command == "convert":
            argv += ["-o", str(out), "-t", "onnx"]
        env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=str(ROOT),
                   POLYGRAPHY_AUTOINSTALL_DEPS="0")
        before = _snapshot(mutant)
        run = _run(argv, cwd, env, timeout_s + grace_s * 2)
        run.command = command
        finding.runs.append(run)
        after = _snapshot(mutant)
        for path in sorted(after - before):
            if not (path == str(out) or path.startswith(str(out) + os.sep)
                    or path.startswith(str(tmp) + os.sep)):
                finding.strays.append(path)
        finding.temp_left += sorted(str(p) for p in tmp.iterdir() if p.name not in TEMP_FILES)
        if Path(ESCAPE_PATH).exists() or Path(ESCAPE_PATH).is_symlink():
            finding.strays.append(ESCAPE_PATH)
        finding.problems += problems_of(run, timeout_s + grace_s)
    if finding.strays:
        finding.problems.append(f"files outside OUT: {finding.strays[:5]}")
    return finding


def _progress_line(line: str) -> bool:
    return line.startswith("... ")


def problems_of(run: Run, limit_s: float) -> list[str]:
    """How ``run`` breaks the contract for untrusted input: an undocumented exit code
    (5 is convertkit's own failure), a traceback, more than one error line and one hint
    on stderr for a failed run, raw control characters on the terminal, a time over the
    limit, processes left behind."""
    problems, name = [], run.command
    if run.exit_code not in DOCUMENTED_EXITS:
        problems.append(f"{name}: exit {run.exit_code}")
    if run.traceback:
        problems.append(f"{name}: a traceback")
    lines = [line for line in run.stderr.splitlines() if not _progress_line(line)]
    errors = [line for line in lines if line.startswith("error:")]
    failed = run.exit_code >= 2 and not (name == "inspect" and run.exit_code == 3
                                         and not errors)
    if failed and not (errors and lines[0] == errors[0] and len(errors) == 1 and (
            len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint:")))):
        problems.append(f"{name}: stderr is not one error line and a hint: {lines[:4]!r}")
    if _CONTROLS.search(run.stdout + run.stderr):
        problems.append(f"{name}: raw control characters on the terminal")
    if run.seconds > limit_s or run.timed_out:
        problems.append(f"{name}: took {run.seconds:.0f} s (limit {limit_s:.0f} s)")
    if run.left_running:
        problems.append(f"{name}: processes left running after the CLI exited: "
                        f"{run.left_running[:3]}")
    return problems


def command_line(run: Run) -> str:
    """The shell command that reproduces ``run`` (for reports)."""
    import shlex

    return shlex.join(run.argv)
