"""ONNX test models: the "light" models shipped inside the onnx package, with real weights.

The light models store every weight as a ConstantOfShape of one value, so all channels of
a layer are equal and a perturbation often cancels out. ``random_weight_model`` turns each
of those into a seeded random initializer (He-scaled), which gives a real architecture
with random weights, as the transformers test models have."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LIGHT_MODELS = Path(onnx.__file__).parent / "backend/test/data/light"


def random_weight_model(name: str, path: Path, seed: int = 0) -> Path:
    """LIGHT_MODELS/<name> with its ConstantOfShape weights made seeded random initializers."""
    model = onnx.load(str(LIGHT_MODELS / name))
    rng = np.random.default_rng(seed)
    shapes = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    kept, weights = [], []
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in shapes:
            shape = tuple(int(d) for d in shapes[node.input[0]])
            if len(shape) > 1:
                fan_in = int(np.prod(shape[1:]))
                value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            else:  # biases, batch-norm statistics: a small constant is realistic enough
                value = np.full(shape, 0.01 if "var" not in node.output[0] else 1.0)
            weights.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
        else:
            kept.append(node)
    used = {name for node in kept for name in node.input}
    initializers = [t for t in model.graph.initializer if t.name in used] + weights
    initializer_names = {t.name for t in initializers}
    inputs = [i for i in model.graph.input if i.name not in initializer_names]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    del model.graph.input[:]
    model.graph.input.extend(i for i in inputs if i.name in used)
    model.ir_version = max(model.ir_version, 4)  # initializers no longer listed as inputs
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def scale_initializer(source: Path, path: Path, name: str, factor: float) -> Path:
    """A copy of ``source`` with initializer ``name`` multiplied by ``factor``."""
    model = onnx.load(str(source))
    tensor = next(t for t in model.graph.initializer if t.name == name)
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * factor, name))
    onnx.save(model, str(path))
    return path


def consumer_of(path: Path, tensor: str) -> onnx.NodeProto:
    """The first node of the model at ``path`` that reads ``tensor``."""
    return next(n for n in onnx.load(str(path)).graph.node if tensor in n.input)


def conv_relu_model(path: Path, *, batch: int | str = 1, extra_op: str | None = None,
                    opset: int = 17) -> Path:
    """A Conv (seeded weights) + Relu on a [batch, 3, 16, 16] input, optionally followed by
    one more single-input op (one a target lacks). A name for ``batch`` makes it dynamic."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r" if extra_op else "y"])]
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["r"], ["y"]))
    graph = helper.make_graph(
        nodes, "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 8, 16, 16])],
        [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]),
              str(path))
    return path


def odd_and_even_samples(path: Path, count: int = 8, shape=(1, 3, 16, 16)) -> Path:
    """An .npz of ``count`` stacked samples (x: [count, *shape]) whose odd positions, which
    calibrate, lie in [0, 1] and whose even positions, which the check grades, lie in
    [0, 50]: an artifact's quantisation ranges show which ones it saw."""
    rng = np.random.default_rng(0)
    samples = rng.uniform(0, 1, (count, *shape)).astype(np.float32)
    samples[0::2] *= 50
    np.savez(path, x=samples)
    return path
