"""A model's outputs as named numpy arrays, the same way for every framework.

Nested outputs are named by their path: ``output`` for a single tensor, dict keys and
attribute names as they are, positions as numbers, and ``output_`` in front of a name
that starts with a number (``output_0``, ``output_1.0``). Reference arrays are numpy;
bfloat16, which numpy lacks, becomes float32 (the check compares in float64 anyway).
Nothing here imports a framework: tensors are told apart by their type's module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np


def output_name(path: Sequence[str | int]) -> str:
    """The name of the output at ``path`` in a nested structure."""
    name = ".".join(str(part) for part in path) or "output"
    return f"output_{name}" if name[0].isdigit() else name


def tensor_leaves(value: Any, is_tensor: Callable[[Any], bool], *, sort_keys: bool = False,
                  path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every tensor in a nested output, with its path: through mappings (keys sorted when
    ``sort_keys``, the order tf.nest and paddle.utils.flatten use), lists and tuples (a
    named tuple's items by field name). Anything else is not an output and is skipped."""
    if is_tensor(value):
        return [(path, value)]
    if isinstance(value, Mapping):
        keys = sorted(value, key=str) if sort_keys else list(value)
        return [leaf for key in keys
                for leaf in tensor_leaves(value[key], is_tensor, sort_keys=sort_keys,
                                          path=(*path, str(key)))]
    if isinstance(value, list | tuple):
        names = getattr(value, "_fields", None) or range(len(value))
        return [leaf for name, item in zip(names, value, strict=True)
                for leaf in tensor_leaves(item, is_tensor, sort_keys=sort_keys,
                                          path=(*path, str(name)))]
    return []


def to_numpy(value: Any) -> np.ndarray:
    """A framework's tensor (PyTorch, MindSpore, Paddle, TensorFlow) or an array-like as
    a numpy array, bfloat16 as float32."""
    framework = type(value).__module__.partition(".")[0]
    if framework == "torch":
        value = value.detach().cpu()
        return (value.float() if str(value.dtype) == "torch.bfloat16" else value).numpy()
    if framework == "mindspore":
        is_bf16 = "bfloat16" in str(value.dtype).lower()
        return (value.astype("float32") if is_bf16 else value).asnumpy()
    if framework == "paddle":
        is_bf16 = "bfloat16" in str(value.dtype)
        return np.asarray((value.astype("float32") if is_bf16 else value).numpy())
    array = np.asarray(value)
    return array.astype(np.float32) if array.dtype.name == "bfloat16" else array
