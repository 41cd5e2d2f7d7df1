"""ResNet-18 from paddle.vision.models with random weights (nothing is downloaded),
for the README's PaddlePaddle commands.

As a Layer:           convertkit convert examples/paddle_resnet.py:build -i x:batchx3x64x64
As an inference model: python examples/paddle_resnet.py FOLDER   (FOLDER/inference.json)
"""

import sys

import paddle


def build() -> paddle.nn.Layer:
    paddle.seed(0)
    return paddle.vision.models.resnet18(pretrained=False)


if __name__ == "__main__":
    from paddle.static import InputSpec

    model = build()
    model.eval()
    # With FLAGS_enable_pir_api=0 in the environment Paddle writes inference.pdmodel instead.
    paddle.jit.save(model, f"{sys.argv[1]}/inference",
                    input_spec=[InputSpec([None, 3, 64, 64], "float32", "x")])
