"""Make every intermediate tensor of a model observable, for localisation and for the
mixed-precision search."""

from __future__ import annotations

import onnx


def with_every_output(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs also list every top-level node output.
    The added outputs carry no type: ONNX Runtime takes the type it infers."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    for node in exposed.graph.node:
        for name in node.output:
            if name and name not in present:
                exposed.graph.output.append(onnx.ValueInfoProto(name=name))
                present.add(name)
    return exposed
