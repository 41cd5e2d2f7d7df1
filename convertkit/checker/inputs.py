"""Generated check inputs (seeded random values), and casting inputs to a model's types.

Integer inputs that index an embedding table get values inside that table (its size is
read from the graph), so token-id models are checked on valid ids. Which samples a check
runs on, real or generated, is samples.py's business.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from convertkit.sample_files import save_npz
from convertkit.spec import InputSpec

DEFAULT_SEED = 0
# Integers that index nothing we can see get small values: valid as masks, flags and ids.
DEFAULT_INTEGER_HIGH = 2
# Ops that pass integer values through unchanged on the way to a Gather.
_VALUE_PRESERVING_OPS = {
    "Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand", "Slice",
    "Transpose", "Tile", "Concat",
}


def generate_feeds(
    specs: Sequence[InputSpec],
    model: onnx.ModelProto | None = None,
    seed: int = DEFAULT_SEED,
) -> dict[str, np.ndarray]:
    """Seeded random inputs of the specs' shapes and dtypes. With ``model``, integer
    inputs that index embedding tables stay inside the tables."""
    rng = np.random.default_rng(seed)
    limits = embedding_limits(model) if model is not None else {}
    feeds = {}
    for spec in specs:
        shape = spec.check_shape()
        dtype = np.dtype(spec.dtype)
        if dtype == np.bool_:
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        elif np.issubdtype(dtype, np.integer):
            high = min(limits.get(spec.name, DEFAULT_INTEGER_HIGH), int(np.iinfo(dtype).max) + 1)
            feeds[spec.name] = rng.integers(0, high, size=shape).astype(dtype)
        else:
            feeds[spec.name] = rng.standard_normal(size=shape).astype(dtype)
    return feeds


def embedding_limits(model: onnx.ModelProto) -> dict[str, int]:
    """For each graph input that (through value-preserving ops) indexes a constant table
    with Gather, the number of rows of the smallest such table."""
    graph = model.graph
    table_rows = {t.name: tuple(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            attr = node.attribute[0]
            if attr.name == "value":
                table_rows[node.output[0]] = tuple(attr.t.dims)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    limits = {}
    for graph_input in graph.input:
        frontier, seen, rows = [graph_input.name], set(), []
        while frontier:
            tensor = frontier.pop()
            if tensor in seen:
                continue
            seen.add(tensor)
            for node in consumers.get(tensor, []):
                if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == tensor:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    dims = table_rows.get(node.input[0])
                    if dims and axis < len(dims):
                        rows.append(dims[axis])
                elif node.op_type in _VALUE_PRESERVING_OPS:
                    frontier.extend(node.output)
        if rows:
            limits[graph_input.name] = min(rows)
    return limits


def cast_feeds(feeds: Mapping[str, np.ndarray],
               wanted: Mapping[str, str]) -> dict[str, np.ndarray]:
    """The feeds of the inputs a model takes (``wanted``: input name -> numpy dtype name,
    "" when unknown), each cast to its input's dtype where both are floating point or
    both are not: one set of fp32 check inputs feeds an fp16 model too, int64 token ids
    an int32 input. Feeds the model does not take are left out."""
    cast = {}
    for name, value in feeds.items():
        if name not in wanted:
            continue
        value = np.asarray(value)
        try:
            target = np.dtype(wanted[name])
        except TypeError:
            cast[name] = value
            continue
        same_kind = np.issubdtype(value.dtype, np.floating) == np.issubdtype(target, np.floating)
        cast[name] = value.astype(target) if same_kind and value.dtype != target else value
    return cast


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """One .npz of ``arrays`` under their names (any names: see sample_files.save_npz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        save_npz(handle, arrays)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}

