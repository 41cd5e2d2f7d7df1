"""Scale one weight of an ONNX model: a stand-in for a conversion that went wrong, to
watch `convertkit check` find where it goes wrong (README, "Checking two models").

    python examples/scale_weight.py IN.onnx OUT.onnx WEIGHT [FACTOR]

Without WEIGHT it lists the model's weights (its initializers).
"""

from __future__ import annotations

import sys

import onnx
from onnx import numpy_helper


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    model = onnx.load(argv[0])
    weights = {t.name: t for t in model.graph.initializer}
    if len(argv) < 3 or argv[2] not in weights:
        print("weights:", ", ".join(weights), file=sys.stderr)
        return 2
    factor = float(argv[3]) if len(argv) > 3 else 1.5
    tensor = weights[argv[2]]
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * factor, tensor.name))
    onnx.save(model, argv[1])
    print(f"{argv[1]}: {argv[2]} scaled by {factor}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
