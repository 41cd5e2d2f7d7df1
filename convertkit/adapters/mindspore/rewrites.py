"""Rewrites of a Cell for MindSpore's own ONNX exporter (``mindspore.onnx.export``, 2.10),
applied for the export only (``export_rewrites``), each named for the case it fixes: for
primitives the
  exporter has no ONNX mapping for, each group enabled only when the exporter names one of
  its primitives (``REWRITE_GROUPS``): the in-place arithmetic that graph mode makes of
  ``out += identity`` (``InplaceAddExt``: ResNet-style residuals, EfficientNet), ``Unstack``
  (``q, k, v = unstack(qkv)`` in ViT attention), AdaptiveAvgPool2D, PadV3, GroupNorm,
  HSwish/HSigmoid, L2Normalize, LogicalNot, lists of tensors (``make_list``: nn.GRU,
  SK-Nets), Erf (exact GELU), CumSum (the positional encodings of XCiT and EdgeNeXt) and
  ResizeBilinearV2 (bilinear ops.interpolate: CrossViT, CoaT) become ops it does map.
  What the exporter then writes wrongly is repaired in the ONNX model (onnx_repairs.py).

MindSpore is imported only inside the functions here (they run in the adapter's child).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convertkit.adapters.mindspore.onnx_repairs import ERF_MARKER

# Graph mode lowers `x OP= y` through these MultitypeFuncGraphs; their (Tensor, Tensor) and
# (Tensor, Number) entries emit in-place primitives that the ONNX exporter lacks.
_AUGMENTED = {
    # module, multitype graph name, operator, primitives it emits (Tensor-Tensor, Tensor-Number)
    "add": ("add_impl", "augassign_add", "+=", ("InplaceAddExt", "InplaceAddsExt")),
    "sub": ("sub_impl", "augassign_sub", "-=", ("InplaceSubExt", "InplaceSubScalar")),
    "mul": ("mul_impl", "augassign_mul", "*=", ("InplaceMul", "InplaceMuls")),
    "div": ("div_impl", "augassign_div", "/=", ("InplaceDiv", "InplaceDivs")),
    "floordiv": ("floordiv_impl", "augassign_floordiv", "//=",
                 ("InplaceFloorDivide", "InplaceFloorDivides")),
    "mod": ("mod_impl", "augassign_mod", "%=",
            ("InplaceRemainderTensorTensor", "InplaceRemainderTensorScalar")),
}
INPLACE_PRIMITIVES = frozenset(p for *_, prims in _AUGMENTED.values() for p in prims)
# Every primitive export_rewrites removes from the graph.
# The rewrite group (see export_rewrites) that removes each primitive from the graph.
REWRITE_GROUPS: dict[str, str] = {
    **dict.fromkeys(INPLACE_PRIMITIVES, "inplace"), "Unstack": "unstack",
    "AdaptiveAvgPool2D": "adaptive_avg_pool", "PadV3": "pad", "make_list": "lists",
    "Erf": "erf", "GroupNorm": "group_norm", "HSwish": "hard_activation",
    "HSigmoid": "hard_activation", "LogicalNot": "logical_not", "L2Normalize": "l2_normalize",
    "CumSum": "cumsum", "ResizeBilinearV2": "bilinear_resize",
}
_UNSUPPORTED = re.compile(r"Can not find key (\w+) in convert map|"
                          r"the (\w+) operator in your model is not support")


def unsupported_primitive(message: str) -> str | None:
    """The primitive MindSpore's ONNX exporter names as lacking a mapping, if any."""
    match = _UNSUPPORTED.search(message)
    return (match.group(1) or match.group(2)) if match else None


@dataclass
class Rewrites:
    """What ``export_rewrites`` changed, in words, for the report's notes."""

    applied: list[str] = field(default_factory=list)


@contextlib.contextmanager
def export_rewrites(net: Any, groups: Iterable[str]) -> Iterator[Rewrites]:
    """Rewrite, for the duration of the block, what MindSpore's exporter cannot map, for
    each of ``groups`` (keys of REWRITE_GROUPS):

    - ``inplace``: augmented assignment on tensors (``+=`` and the others) compiles to
      out-of-place ops instead of InplaceAddExt and its siblings (the in-place update is
      unobservable in an exported inference graph; the numerical check confirms it);
    - ``unstack``, ``adaptive_avg_pool``, ``hard_activation``, ``l2_normalize``: primitives
      held by the Cell's sub-cells become Cells computing the same with mapped ops (Unstack
      as Split + Squeeze, AdaptiveAvgPool2D as ReduceMean over windows, HSwish and HSigmoid
      through ReLU6, L2Normalize spelt out); ``ops.unstack`` calls likewise, and
      ``ops.L2Normalize`` made in construct;
    - ``pad``: ops.pad with zeros (PadV3) through the Pad primitive;
    - ``lists`` (``make_list``): the time loop of nn.GRU / nn.RNN on CPU collects its steps
      in a tuple instead of a list, and ops.stack (which takes lists built with append)
      becomes Concat of ExpandDims, leaving the list nothing to feed once compiled;
    - ``logical_not``: ``~`` and ops.logical_not on tensors as Equal(x, 0);
    - ``group_norm``: ops.group_norm (nn.GroupNorm) spelt out with mean and variance;
    - ``erf``: Erf exported as a multiply by ERF_MARKER, restored by ``repair_onnx``;
    - ``cumsum``: CumSum (ops.cumsum, Tensor.cumsum, CumSum primitives held by sub-cells)
      as a MatMul with a constant triangular matrix along the axis (the export is static),
      exclusive and reverse included;
    - ``bilinear_resize``: bilinear ops.interpolate with a size, and ResizeBilinearV2
      primitives held by sub-cells, as MatMuls with constant interpolation matrices for
      the height and the width (bilinear resizing is separable, so this is the same sum).

    Everything is restored on exit: the Cell is left as it was.
    """
    from mindspore import nn, ops
    from mindspore.nn.layer import rnns

    wanted = set(groups)
    record = Rewrites()
    undo: list[Callable[[], None]] = []

    def replace(owner: Any, name: str, value: Any) -> None:
        original = getattr(owner, name)
        setattr(owner, name, value)
        undo.append(lambda: setattr(owner, name, original))

    try:
        if "inplace" in wanted:
            _register_out_of_place(undo)
            operators = ", ".join(f"`{op}`" for _, _, op, _ in _AUGMENTED.values())
            record.applied.append(f"in-place {operators} on tensors (InplaceAddExt and "
                                  "siblings) compiled as out-of-place ops")
        swaps = {name: swap for name, swap in _primitive_swaps(nn, ops).items()
                 if _SWAP_GROUPS[name] in wanted}
        counts: dict[str, int] = {}
        for _, cell in net.cells_and_names():
            for attribute, primitive in list(getattr(cell, "_primitives", {}).items()):
                swap = swaps.get(type(primitive).__name__)
                if swap is not None:
                    _swap_primitive(cell, attribute, primitive, swap(primitive), undo)
                    counts[type(primitive).__name__] = counts.get(
                        type(primitive).__name__, 0) + 1
        for name, count in sorted(counts.items()):
            record.applied.append(f"{count} {name} primitive(s) as {_SWAP_WORDS[name]}")
        if "unstack" in wanted:
            replace(ops, "unstack", _unstack_function(ops))
            record.applied.append("ops.unstack calls as Split + Squeeze")
        if "pad" in wanted:
            replace(ops, "pad", _zero_pad_function(ops, ops.pad))
            record.applied.append("ops.pad with zeros (nn.ConstantPad*) through the Pad "
                                  "primitive instead of PadV3")
        if "lists" in wanted:
            replace(rnns._DynamicRNNBase, "recurrent", _tuple_recurrent(ops))
            replace(ops, "stack", _stack_as_concat(ops))
            record.applied.append("lists of tensors (make_list): the nn.GRU/nn.RNN time loop "
                                  "with a tuple, ops.stack as Concat of ExpandDims")
        if "logical_not" in wanted:
            not_as_equal = _not_as_equal(ops)
            replace(ops, "logical_not", not_as_equal)
            from mindspore.ops.composite.multitype_ops import invert_impl

            original = _registered(invert_impl.invert, ("Tensor",))
            if original is not None:
                invert_impl.invert.register("Tensor")(not_as_equal)
                undo.append(lambda: invert_impl.invert.register("Tensor")(original))
            record.applied.append("`~` and ops.logical_not on tensors (LogicalNot) as "
                                  "Equal(x, 0)")
        if "l2_normalize" in wanted:
            replace(ops, "L2Normalize", _l2_normalize_cell(nn, ops))
            record.applied.append("ops.L2Normalize made in construct as "
                                  "x / sqrt(max(sum(x^2), epsilon))")
        if "group_norm" in wanted:
            replace(ops, "group_norm", _group_norm_function(ops))
            record.applied.append("ops.group_norm (nn.GroupNorm) as mean/variance ops")
        if "erf" in wanted:
            marker = _erf_marker_cell(nn)
            for module, name in _erf_sites():
                replace(module, name, marker)
            record.applied.append("Erf (exact GELU, ops.erf) exported through a marker, "
                                  "restored as ONNX Erf")
        if "cumsum" in wanted:
            as_matmul = _cumsum_cell(nn, ops)(False, False)
            for module, name in _cumsum_sites():
                replace(module, name, as_matmul)
            record.applied.append("CumSum (ops.cumsum, Tensor.cumsum) as MatMul with a "
                                  "constant triangular matrix")
        if "bilinear_resize" in wanted:
            from mindspore.ops.function import nn_func

            interpolate = _bilinear_interpolate_function(ops, ops.interpolate)
            replace(ops, "interpolate", interpolate)
            replace(nn_func, "interpolate", interpolate)
            record.applied.append("bilinear ops.interpolate (ResizeBilinearV2) as MatMuls "
                                  "with constant interpolation matrices")
        yield record
    finally:
        for step in reversed(undo):
            step()


def _register_out_of_place(undo: list[Callable[[], None]]) -> None:
    from mindspore.ops.composite.multitype_ops import (
        add_impl,
        div_impl,
        floordiv_impl,
        mod_impl,
        mul_impl,
        sub_impl,
    )

    modules = {"add_impl": add_impl, "sub_impl": sub_impl, "mul_impl": mul_impl,
               "div_impl": div_impl, "floordiv_impl": floordiv_impl, "mod_impl": mod_impl}
    plain = _out_of_place_functions()
    for key, (module_name, graph_name, _, _) in _AUGMENTED.items():
        graph = getattr(modules[module_name], graph_name)
        for types in (("Tensor", "Tensor"), ("Tensor", "Number")):
            original = _registered(graph, types)
            if original is not None:
                graph.register(*types)(plain[key])
                undo.append(lambda g=graph, t=types, f=original: g.register(*t)(f))


def _swap_primitive(cell: Any, attribute: str, primitive: Any, replacement: Any,
                    undo: list[Callable[[], None]]) -> None:
    del cell._primitives[attribute]
    setattr(cell, attribute, replacement)

    def restore() -> None:
        delattr(cell, attribute)
        setattr(cell, attribute, primitive)

    undo.append(restore)


def _registered(graph: Any, types: tuple[str, ...]) -> Any:
    """The Python function a MultitypeFuncGraph holds for ``types`` (None if none)."""
    from mindspore.common import dtype as mstype

    wanted = tuple(mstype.typing.str_to_type(t) for t in types)
    found = None
    for signature, function in graph.entries:
        if tuple(signature) == wanted:
            found = function  # the last registration wins, as in MindSpore's own lookup
    return found


def _out_of_place_functions() -> dict[str, Any]:
    # Graph mode parses these functions' source, so they must be plain Python functions.
    def add(x, y):
        return x + y

    def sub(x, y):
        return x - y

    def mul(x, y):
        return x * y

    def div(x, y):
        return x / y

    def floordiv(x, y):
        return x // y

    def mod(x, y):
        return x % y

    return {"add": add, "sub": sub, "mul": mul, "div": div, "floordiv": floordiv, "mod": mod}


_SWAP_WORDS = {"Unstack": "Split + Squeeze", "AdaptiveAvgPool2D": "ReduceMean over windows",
               "HSwish": "x * ReLU6(x + 3) / 6", "HSigmoid": "ReLU6(x + 3) / 6",
               "L2Normalize": "x / sqrt(max(sum(x^2), epsilon))",
               "CumSum": "MatMul with a triangular matrix",
               "ResizeBilinearV2": "MatMuls with interpolation matrices"}
_SWAP_GROUPS = {"Unstack": "unstack", "AdaptiveAvgPool2D": "adaptive_avg_pool",
                "HSwish": "hard_activation", "HSigmoid": "hard_activation",
                "L2Normalize": "l2_normalize", "CumSum": "cumsum",
                "ResizeBilinearV2": "bilinear_resize"}


def _primitive_swaps(nn: Any, ops: Any) -> dict[str, Any]:
    """For each primitive the exporter lacks, a function making the Cell that replaces an
    instance of it. The Cells are defined here, with MindSpore imported by the caller,
    because graph mode compiles them from this source (``ops`` reaches them as a closure
    variable)."""

    class UnstackAsSplit(nn.Cell):
        def __init__(self, axis: int) -> None:
            super().__init__()
            self.axis = axis

        def construct(self, x):
            axis = self.axis if self.axis >= 0 else self.axis + x.ndim
            return tuple(ops.squeeze(p, axis) for p in ops.split(x, 1, axis))

    class AdaptiveAvgPoolAsMean(nn.Cell):
        def __init__(self, output_size: Any) -> None:
            super().__init__()
            sizes = output_size if isinstance(output_size, (tuple, list)) else (
                output_size, output_size)
            self.out_h = sizes[0]
            self.out_w = sizes[1]

        def construct(self, x):
            height = x.shape[-2]
            width = x.shape[-1]
            # None (kept as -1 in the primitive's attributes) keeps the input's size.
            out_h = height if self.out_h is None or self.out_h < 0 else self.out_h
            out_w = width if self.out_w is None or self.out_w < 0 else self.out_w
            if out_h == 1 and out_w == 1:
                return ops.mean(x, (-2, -1), True)
            # Tuples are concatenated, not unpacked: graph mode compiles this source.
            if height % out_h == 0 and width % out_w == 0:
                windows = x.reshape(x.shape[:-2] + (out_h, height // out_h,  # noqa: RUF005
                                                    out_w, width // out_w))
                return ops.mean(windows, (-3, -1))
            rows = tuple(ops.concat(tuple(
                ops.mean(x[..., (i * height) // out_h:-((-(i + 1) * height) // out_h),
                           (j * width) // out_w:-((-(j + 1) * width) // out_w)], (-2, -1), True)
                for j in range(out_w)), -1) for i in range(out_h))
            return ops.concat(rows, -2)

    # HardSwish/HardSigmoid are ONNX ops from opset 14 only; MindSpore writes opset 11.
    class HardSwish(nn.Cell):
        def construct(self, x):
            return x * ops.relu6(x + 3.0) / 6.0

    class HardSigmoid(nn.Cell):
        def construct(self, x):
            return ops.relu6(x + 3.0) / 6.0

    l2_normalize = _l2_normalize_cell(nn, ops)
    cumsum = _cumsum_cell(nn, ops)
    resize = _bilinear_resize_cell(nn, ops)
    return {
        "CumSum": lambda primitive: cumsum(bool(primitive.attrs.get("exclusive", False)),
                                           bool(primitive.attrs.get("reverse", False))),
        "ResizeBilinearV2": lambda primitive: resize(
            bool(primitive.attrs.get("align_corners", False)),
            bool(primitive.attrs.get("half_pixel_centers", False))),
        "L2Normalize": lambda primitive: l2_normalize(
            primitive.attrs.get("axis", 0), float(primitive.attrs.get("epsilon", 1e-4))),
        "HSwish": lambda primitive: HardSwish(),
        "HSigmoid": lambda primitive: HardSigmoid(),
        "Unstack": lambda primitive: UnstackAsSplit(int(primitive.attrs.get("axis", 0))),
        "AdaptiveAvgPool2D": lambda primitive: AdaptiveAvgPoolAsMean(
            primitive.attrs.get("output_size")),
    }


def _l2_normalize_cell(nn: Any, ops: Any) -> Any:
    """A Cell class built as ops.L2Normalize is, ``(axis=0, epsilon=1e-4)``, computing it
    with mapped ops; it also stands in for the class itself, for primitives made in
    construct (EdgeNeXt's ``ops.L2Normalize(-1)(q)``)."""

    class L2NormalizeSpelt(nn.Cell):
        def __init__(self, axis: Any = 0, epsilon: float = 1e-4) -> None:
            super().__init__()
            self.axis = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
            self.epsilon = epsilon

        def construct(self, x):
            squares = ops.sum(x * x, self.axis, True)
            return x / ops.sqrt(ops.maximum(squares, self.epsilon))

    return L2NormalizeSpelt


def _unstack_function(ops: Any) -> Any:
    def unstack(input_x, axis=0):
        axis = axis if axis >= 0 else axis + input_x.ndim
        return tuple(ops.squeeze(p, axis) for p in ops.split(input_x, 1, axis))

    return unstack


def _zero_pad_function(ops: Any, original: Any) -> Any:
    """ops.pad that pads with zeros through the Pad primitive, which the exporter maps
    (ops.pad compiles to PadV3, which it does not); other modes and values, and negative
    padding (cropping), go to MindSpore's own ops.pad."""

    def pad(input_x, padding, mode="constant", value=None):
        if mode == "constant" and (value is None or value == 0) and isinstance(
                padding, (tuple, list)) and len(padding) % 2 == 0 and min(padding) >= 0:
            count = len(padding) // 2
            pairs = ((0, 0),) * (input_x.ndim - count) + tuple(
                (padding[2 * (count - 1 - i)], padding[2 * (count - 1 - i) + 1])
                for i in range(count))
            return ops.Pad(pairs)(input_x)
        return original(input_x, padding, mode, value)

    return pad


def _erf_sites() -> list[tuple[Any, str]]:
    """The module globals through which graph mode reaches the Erf primitive: ops.gelu
    (nn.GELU(approximate=False)), ops.erf and the functional erf."""
    from mindspore.ops.auto_generate import gen_ops_def
    from mindspore.ops.function import math_func, nn_func

    sites = [(nn_func, "erf_"), (math_func, "erf_"), (gen_ops_def, "erf_op")]
    return [(module, name) for module, name in sites if hasattr(module, name)]


def _erf_marker_cell(nn: Any) -> Any:
    marker = float(ERF_MARKER)

    class ErfMarker(nn.Cell):
        def construct(self, x):
            return x * marker

    return ErfMarker()


def prefix_sum_matrix(size: int, exclusive: bool, reverse: bool) -> np.ndarray:
    """M with ``y = x @ M`` the cumulative sum of x's last axis (of ``size``): M[i, j] is 1
    where x_i counts towards y_j (i <= j; i < j exclusive; i >= j reverse)."""
    ones = np.ones((size, size), np.float32)
    if reverse:
        return np.tril(ones, -1 if exclusive else 0)
    return np.triu(ones, 1 if exclusive else 0)


def linear_resize_matrix(size_in: int, size_out: int, align_corners: bool,
                         half_pixel: bool) -> np.ndarray:
    """M (size_in x size_out) with ``y = x @ M`` x's last axis resized linearly as
    ResizeBilinearV2 does it: source coordinate o * (in - 1) / (out - 1) with align_corners,
    (o + 0.5) * in / out - 0.5 (clamped at 0) with half-pixel centres, else o * in / out."""
    out = np.arange(size_out, dtype=np.float64)
    if align_corners:
        source = out * ((size_in - 1) / (size_out - 1)) if size_out > 1 else out * 0.0
    elif half_pixel:
        source = np.maximum((out + 0.5) * (size_in / size_out) - 0.5, 0.0)
    else:
        source = out * (size_in / size_out)
    low = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    weight = source - low
    matrix = np.zeros((size_in, size_out), np.float64)
    np.add.at(matrix, (low, np.arange(size_out)), 1.0 - weight)
    np.add.at(matrix, (high, np.arange(size_out)), weight)
    return matrix.astype(np.float32)


def _cumsum_sites() -> list[tuple[Any, str]]:
    """The module globals holding the CumSum primitive that ops.cumsum and Tensor.cumsum
    (graph mode's standard method and tensor_method, which calls ops.cumsum) reach."""
    from mindspore.ops.function import math_func

    sites = [(math_func, "cumsum_")]
    with contextlib.suppress(ImportError):
        from mindspore.graph._parse import standard_method

        sites.append((standard_method, "cumsum_"))
    return [(module, name) for module, name in sites if hasattr(module, name)]


def _cumsum_cell(nn: Any, ops: Any) -> Any:
    """A Cell called as the CumSum primitive is, ``(x, axis)``: MatMul with a constant
    triangular matrix along the axis (moved last and back). Integer inputs are summed in
    float32, exact below 2**24, and cast back."""
    from mindspore import Tensor
    from mindspore.common import dtype as mstype

    floats = (mstype.float16, mstype.float32, mstype.float64, mstype.bfloat16)

    class CumSumAsMatMul(nn.Cell):
        def __init__(self, exclusive: bool, reverse: bool) -> None:
            super().__init__()
            self.exclusive = exclusive
            self.reverse = reverse

        def construct(self, x, axis):
            axis = axis if axis >= 0 else axis + x.ndim
            last = x.ndim - 1
            dtype = x.dtype
            values = x if dtype in floats else x.astype(mstype.float32)
            if axis != last:
                values = values.swapaxes(axis, last)
            matrix = Tensor(prefix_sum_matrix(values.shape[-1], self.exclusive, self.reverse))
            if values.dtype != mstype.float32:
                matrix = matrix.astype(values.dtype)
            summed = ops.matmul(values, matrix)
            if axis != last:
                summed = summed.swapaxes(axis, last)
            return summed if summed.dtype == dtype else summed.astype(dtype)

    return CumSumAsMatMul


def _resize_function(ops: Any) -> Any:
    """``resize(x, height, width, align_corners, half_pixel)``: x's last two axes resized
    bilinearly as ResizeBilinearV2 does it, as MatMuls with constant matrices (graph mode
    compiles it, so MindSpore is imported here, not in it)."""
    from mindspore import Tensor
    from mindspore.common import dtype as mstype

    def resize(x, height, width, align_corners, half_pixel):
        rows = Tensor(linear_resize_matrix(x.shape[-2], height, align_corners, half_pixel))
        columns = Tensor(linear_resize_matrix(x.shape[-1], width, align_corners, half_pixel))
        if x.dtype != mstype.float32:
            rows = rows.astype(x.dtype)
            columns = columns.astype(x.dtype)
        y = ops.matmul(x, columns)  # (..., H, width)
        y = ops.matmul(y.swapaxes(-1, -2), rows)  # (..., width, height)
        return y.swapaxes(-1, -2)

    return resize


def _bilinear_resize_cell(nn: Any, ops: Any) -> Any:
    """A Cell called as the ResizeBilinearV2 primitive is, ``(x, size)``."""
    resize = _resize_function(ops)

    class ResizeBilinearAsMatMul(nn.Cell):
        def __init__(self, align_corners: bool, half_pixel: bool) -> None:
            super().__init__()
            self.align_corners = align_corners
            self.half_pixel = half_pixel

        def construct(self, x, size):
            return resize(x, size[0], size[1], self.align_corners, self.half_pixel)

    return ResizeBilinearAsMatMul


def _bilinear_interpolate_function(ops: Any, original: Any) -> Any:
    """ops.interpolate with bilinear resizing of a 4-D input to a size done by
    ``_resize_function``, as ResizeBilinearV2 (half-pixel centres unless align_corners);
    other modes, and scale factors, go to MindSpore's own ops.interpolate."""
    resize = _resize_function(ops)

    def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                    recompute_scale_factor=None):
        if mode == "bilinear" and input.ndim == 4 and size is not None and \
                scale_factor is None:
            sizes = (size, size) if isinstance(size, int) else size
            aligned = bool(align_corners)
            return resize(input, sizes[0], sizes[1], aligned, not aligned)
        return original(input, size, scale_factor, mode, align_corners,
                        recompute_scale_factor)

    return interpolate


def _not_as_equal(ops: Any) -> Any:
    def logical_not(input):
        return ops.equal(input, ops.zeros_like(input))

    return logical_not


def _group_norm_function(ops: Any) -> Any:
    """ops.group_norm spelt out: the GroupNorm primitive has no ONNX mapping (ONNX has
    GroupNormalization only from opset 18; MindSpore writes opset 11)."""

    def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
        shape = input.shape
        grouped = input.reshape((shape[0], num_groups, -1))
        mean = ops.mean(grouped, -1, True)
        centred = grouped - mean
        variance = ops.mean(centred * centred, -1, True)
        output = (centred / ops.sqrt(variance + eps)).reshape(shape)
        affine = (1, shape[1]) + (1,) * (len(shape) - 2)
        if weight is not None:
            output = output * weight.reshape(affine)
        if bias is not None:
            output = output + bias.reshape(affine)
        return output

    return group_norm


def _stack_as_concat(ops: Any) -> Any:
    def stack(tensors, axis=0):
        return ops.concat(tuple(ops.expand_dims(t, axis) for t in tensors), axis)

    return stack


def _tuple_recurrent(ops: Any) -> Any:
    """_DynamicRNNBase.recurrent (nn.GRU and nn.RNN on CPU) with the steps collected in a
    tuple: MindSpore's own appends to a list, which compiles to make_list."""

    def recurrent(self, x, h_0, w_ih, w_hh, b_ih, b_hh):
        outputs = ()
        h = h_0
        for t in range(x.shape[0]):
            h = self.cell(ops.squeeze(x[t:t + 1:1], 0), h, w_ih, w_hh, b_ih, b_hh)
            outputs = outputs + ((h[0],) if self.is_lstm else (h,))
        return ops.stack(outputs), h

    return recurrent
