"""PaddlePaddle test models, named as SOURCE by the tests: tests/models/paddle_models.py:NAME.

Real architectures others wrote come from paddle.vision.models with pretrained=False
(random weights, nothing is downloaded). The tests never import paddle themselves (paddle
and mindspore cannot share a process); they run this file as a script instead:

    python tests/models/paddle_models.py save NAME PREFIX INPUT_SPEC...  # PIR: PREFIX.json
    FLAGS_enable_pir_api=0 python tests/models/paddle_models.py save ... # legacy: .pdmodel
    python tests/models/paddle_models.py weights NAME SEED FILE.pdparams # random weights
    python tests/models/paddle_models.py run NAME FILE.pdparams IN.npz OUT.npz

with INPUT_SPEC as NAME:DIMS[:DTYPE] (a name in place of a number: a dynamic axis).
"""

from __future__ import annotations

import sys
from pathlib import Path

import paddle
from paddle import nn


def _seeded() -> None:
    paddle.seed(0)


def resnet18() -> nn.Layer:
    _seeded()
    return paddle.vision.models.resnet18(pretrained=False)


def mobilenet_v3_small() -> nn.Layer:
    _seeded()
    return paddle.vision.models.mobilenet_v3_small(pretrained=False)


class ImageAndMeta(nn.Layer):
    """Two inputs: an image through a small conv stack and a feature vector, fused."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU(), nn.MaxPool2D(2),
            nn.Conv2D(8, 16, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2D(1), nn.Flatten(),
        )
        self.meta = nn.Sequential(nn.Linear(6, 16), nn.Tanh())
        self.head = nn.Linear(32, 4)

    def forward(self, image: paddle.Tensor, meta: paddle.Tensor) -> paddle.Tensor:
        fused = paddle.concat([self.conv(image), self.meta(meta)], axis=-1)
        return nn.functional.softmax(self.head(fused), axis=-1)


def image_and_meta() -> nn.Layer:
    _seeded()
    return ImageAndMeta()


class Mlp(nn.Layer):
    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, hidden), nn.GELU(), nn.Linear(hidden, 3))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.body(x)


def mlp() -> nn.Layer:
    _seeded()
    return Mlp()


def wide_mlp() -> nn.Layer:
    """The same layers as mlp with a wider hidden layer: same parameter count and names."""
    _seeded()
    return Mlp(hidden=24)


class DeclaresItsInputs(nn.Layer):
    """forward records its input spec, so no -i is needed."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 2)

    @paddle.jit.to_static(input_spec=[paddle.static.InputSpec([None, 8], "float32", "feat")])
    def forward(self, feat: paddle.Tensor) -> paddle.Tensor:
        return self.proj(feat)


def declares_its_inputs() -> nn.Layer:
    _seeded()
    return DeclaresItsInputs()


class NamedOutputs(nn.Layer):
    """A dict and a tuple of tensors out."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 4)

    def forward(self, x: paddle.Tensor) -> dict:
        h = self.proj(x)
        return {"scores": nn.functional.softmax(h, axis=-1), "parts": (h * 2, h.sum(-1))}


def named_outputs() -> nn.Layer:
    _seeded()
    return NamedOutputs()


class NotSelf(nn.Layer):
    """forward's first argument is not called self, which paddle.jit.save cannot handle."""

    def __init__(this) -> None:
        super().__init__()
        this.proj = nn.Linear(5, 3)

    def forward(this, x: paddle.Tensor) -> paddle.Tensor:
        return nn.functional.relu(this.proj(x))


def not_self() -> nn.Layer:
    _seeded()
    return NotSelf()


class SvdModel(nn.Layer):
    """pd_op.svd has no paddle2onnx mapper."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return paddle.linalg.svd(self.proj(x))[1]


def raising_factory() -> nn.Layer:
    raise RuntimeError("cannot build the model: config file missing")


def save(name: str, prefix: str, specs: list[str]) -> None:
    from paddle.static import InputSpec

    layer = globals()[name]()
    layer.eval()
    input_spec = []
    for text in specs:
        parts = text.split(":")
        dims = [int(d) if d.isdigit() else None for d in parts[1].split("x")]
        input_spec.append(InputSpec(dims, parts[2] if len(parts) > 2 else "float32", parts[0]))
    paddle.jit.save(layer, prefix, input_spec=input_spec)


def save_random_weights(name: str, seed: str, path: str) -> None:
    layer = globals()[name]()
    paddle.seed(int(seed))
    for parameter in layer.parameters():
        parameter.set_value(paddle.randn(parameter.shape, dtype=parameter.dtype))
    paddle.save(layer.state_dict(), path)


def run(name: str, weights: str, inputs: str, outputs: str) -> None:
    import numpy as np

    layer = globals()[name]()
    layer.set_state_dict(paddle.load(weights))
    layer.eval()
    from convertkit.checker.samples import load_samples

    feeds = load_samples(Path(inputs))[0]
    result = layer(*[paddle.to_tensor(value) for value in feeds.values()])
    np.savez(outputs, output=result.numpy())


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    {"save": lambda: save(arguments[0], arguments[1], arguments[2:]),
     "weights": lambda: save_random_weights(*arguments),
     "run": lambda: run(*arguments)}[command]()
