"""MindSpore test models, named as SOURCE by the tests: tests/models/mindspore_models.py:NAME.

Real architectures others wrote come from mindcv with pretrained=False (random weights,
nothing is downloaded); the small Cells below cover what mindcv does not (two inputs, an
LSTM read at its last step, a factory to load a checkpoint into). The tests never import
mindspore themselves (it cannot share a process with paddle); they run this file as a
script instead:

    python tests/models/mindspore_models.py ckpt NAME SEED FILE.ckpt     # random weights
    python tests/models/mindspore_models.py mindir NAME FILE.mindir INPUT_SPEC...
    python tests/models/mindspore_models.py run NAME FILE.ckpt IN.npz OUT.npz

with INPUT_SPEC as NAME:DIMS (float32).
"""

from __future__ import annotations

import os
import sys

import mindspore as ms
import numpy as np
from mindspore import nn, ops


def _seeded() -> None:
    ms.set_seed(0)
    np.random.seed(0)


def resnet18() -> nn.Cell:
    """mindcv's ResNet-18: residual `out += identity` (InplaceAddExt in graph mode)."""
    from mindcv.models import resnet18 as build

    _seeded()
    return build(pretrained=False, num_classes=10)


def vit_tiny() -> nn.Cell:
    """mindcv's VisionTransformer in a small configuration: attention splits q, k, v with
    ops.Unstack. (mindcv's smallest registered ViT, vit_b_32_224, is ViT-Base at 224x224;
    the architecture is the same.)"""
    from mindcv.models.vit import VisionTransformer

    _seeded()
    return VisionTransformer(image_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4,
                             num_classes=10)


class LastStep(nn.Cell):
    """An LSTM read at its last time step, y[:, -1, :]: MindSpore writes that as a Slice
    with ends 0, which onnx.checker and ONNX Runtime reject."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 16, num_layers=1, batch_first=True)
        self.head = nn.Dense(16, 4)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        y, _ = self.lstm(x)
        return self.head(y[:, -1, :])


def lstm_last_step() -> nn.Cell:
    _seeded()
    return LastStep()


class Gru(nn.Cell):
    """nn.GRU on CPU unrolls its time loop into a Python list: make_list, which MindSpore's
    ONNX exporter cannot map."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(8, 12, num_layers=1, batch_first=True)

    def construct(self, x: ms.Tensor) -> tuple[ms.Tensor, ms.Tensor]:
        return self.rnn(x)


def gru() -> nn.Cell:
    _seeded()
    return Gru()


class ImageAndMeta(nn.Cell):
    """Two inputs: an image through a small conv stack and a feature vector, fused."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.SequentialCell(
            nn.Conv2d(3, 8, 3, pad_mode="pad", padding=1, has_bias=True), nn.BatchNorm2d(8),
            nn.ReLU(), nn.MaxPool2d(2, 2), nn.Conv2d(8, 16, 3, stride=2, has_bias=True),
            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.meta = nn.SequentialCell(nn.Dense(6, 16), nn.Tanh())
        self.head = nn.Dense(32, 4)

    def construct(self, image: ms.Tensor, meta: ms.Tensor) -> ms.Tensor:
        fused = ops.concat((self.conv(image), self.meta(meta)), axis=-1)
        return ops.softmax(self.head(fused), axis=-1)


def image_and_meta() -> nn.Cell:
    _seeded()
    return ImageAndMeta()


class Mlp(nn.Cell):
    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Dense(8, hidden)
        self.fc2 = nn.Dense(hidden, 3)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        return self.fc2(ops.relu(self.fc1(x)))


def mlp() -> nn.Cell:
    """A factory, for --weights: its initial weights differ from the checkpoint's."""
    _seeded()
    return Mlp()


def wide_mlp() -> nn.Cell:
    """The same names as mlp, other shapes: mlp's checkpoint does not fit it."""
    _seeded()
    return Mlp(hidden=32)


class Residual(nn.Cell):
    """A residual `+=`: exported to MindIR, InplaceAddExt is part of the graph for good."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Dense(8, 8)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        out = self.fc(x)
        out += x
        return ops.relu(out)


def residual() -> nn.Cell:
    _seeded()
    return Residual()


class PositionCumsum(nn.Cell):
    """Positional encodings from cumulative sums of a constant mask, stacked sin and cos
    (XCiT, EdgeNeXt): Tensor.cumsum of a bool mask and a reverse exclusive CumSum primitive,
    which MindSpore's ONNX exporter cannot map; the stack of constants is written as a
    sequence, which onnxslim cannot fold."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1, has_bias=True)
        self.suffix = ops.CumSum(exclusive=True, reverse=True)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        mask = ms.Tensor(np.ones((x.shape[0], x.shape[2], x.shape[3]))).astype(ms.bool_)
        y_embed = mask.cumsum(1, dtype=ms.float32)
        x_embed = mask.cumsum(2, dtype=ms.float32)
        position = (y_embed / y_embed[:, -1:, :]) + (x_embed / x_embed[:, :, -1:])
        waves = ops.stack((ops.sin(position), ops.cos(position)), 1)
        return self.suffix(self.conv(x), 3) + ops.tile(waves, (1, 2, 1, 1))


def position_cumsum() -> nn.Cell:
    _seeded()
    return PositionCumsum()


class BilinearResize(nn.Cell):
    """Bilinear resizing (CrossViT, CoaT): ops.interpolate with align_corners up, and
    without it down; both ResizeBilinearV2, which MindSpore's ONNX exporter cannot map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, pad_mode="pad", padding=1, has_bias=True)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        up = ops.interpolate(self.conv(x), size=(13, 11), mode="bilinear", align_corners=True)
        return ops.interpolate(up, size=(5, 6), mode="bilinear", align_corners=False)


def bilinear_resize() -> nn.Cell:
    _seeded()
    return BilinearResize()


def _spec(text: str) -> ms.Tensor:
    dims = text.split(":")[1]
    shape = tuple(int(d) for d in dims.split("x"))
    return ms.Tensor(np.random.default_rng(1).standard_normal(shape).astype(np.float32))


def main(argv: list[str]) -> None:
    command, name = argv[0], argv[1]
    net = globals()[name]()
    net.set_train(False)
    if command == "ckpt":
        ms.set_seed(int(argv[2]))
        for parameter in net.get_parameters():
            parameter.set_data(ms.Tensor(np.random.default_rng(int(argv[2])).standard_normal(
                parameter.shape).astype(np.float32)))
        ms.save_checkpoint(net, argv[3])
    elif command == "mindir":
        path = argv[2].removesuffix(".mindir")
        ms.export(net, *[_spec(s) for s in argv[3:]], file_name=path, file_format="MINDIR")
    elif command == "run":
        ms.load_param_into_net(net, ms.load_checkpoint(argv[2]))
        from pathlib import Path

        from convertkit.checker.samples import load_samples

        feeds = load_samples(Path(argv[3]))[0]
        output = net(*[ms.Tensor(value) for value in feeds.values()])
        np.savez(argv[4], output=output.asnumpy())
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(0)  # skip MindSpore's Cell.__del__ noise at interpreter exit
