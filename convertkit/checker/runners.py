"""Run the models `convertkit check` compares, optionally with every intermediate tensor
exposed for localisation.

- ONNX files run in ONNX Runtime on the CPU with graph optimisation disabled, so the
  model is judged as written and nothing is fused: exposing every node output as a graph
  output then changes nothing that is computed.
- OpenVINO IRs (.xml + .bin) run in OpenVINO on the CPU with the f32 precision hint (its
  default on this CPU is bf16, see DESIGN.md). openvino is imported only here, inside
  functions. Exposing outputs in OpenVINO can block fusions, which is why the localiser
  compares the exposed run's final outputs with the plain run's and says when they differ.

Feeds are cast to each input's dtype when both are floating point (or both not): one
set of fp32 check inputs feeds an fp16 model too.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from convertkit.checker.localize import GraphNode, topological_order
from convertkit.checker.source_map import SourceLocation, locate
from convertkit.dependencies import require
from convertkit.ir.expose import with_every_output
from convertkit.ir.io import load_model, save_model
from convertkit.platforms.ort_runner import OrtRunner


class OnnxTensors:
    """Every node output of an ONNX model, for localisation."""

    def __init__(self, model_path: Path) -> None:
        self.model_path = model_path
        self.label = str(model_path)
        self._model: onnx.ModelProto | None = None
        self._order: list[int] | None = None

    @property
    def model(self) -> onnx.ModelProto:
        if self._model is None:
            self._model = load_model(self.model_path)
        return self._model

    @property
    def order(self) -> list[int]:
        if self._order is None:
            self._order = topological_order(self.model.graph)
        return self._order

    def nodes(self) -> list[GraphNode]:
        graph = self.model.graph
        return [GraphNode(step, graph.node[index].name or f"{graph.node[index].op_type}_{index}",
                          graph.node[index].op_type, tuple(graph.node[index].input),
                          tuple(o for o in graph.node[index].output if o))
                for step, index in enumerate(self.order)]

    def graph_inputs(self) -> set[str]:
        initializers = {t.name for t in self.model.graph.initializer}
        return {i.name for i in self.model.graph.input if i.name not in initializers}

    def constants(self) -> dict[str, np.ndarray]:
        from onnx import numpy_helper

        values = {}
        for tensor in self.model.graph.initializer:
            try:
                values[tensor.name] = numpy_helper.to_array(tensor)
            except (ValueError, TypeError):  # unusual element types: not compared
                continue
        return values

    def locate(self, step: int) -> SourceLocation | None:
        return locate(self.model.graph.node[self.order[step]])

    def run_all(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feeds and every top-level node output, by tensor name."""
        with tempfile.TemporaryDirectory(prefix="convertkit-localize-") as scratch:
            exposed = Path(scratch, "exposed.onnx")
            save_model(with_every_output(self.model), exposed)
            with OrtRunner(exposed) as runner:
                values = runner.run(feeds)
        return {**{k: v for k, v in feeds.items() if k in self.graph_inputs()},
                **{k: v for k, v in values.items() if isinstance(v, np.ndarray)}}


def import_openvino():
    return require("openvino", name="OpenVINO", extra="openvino")


OPENVINO_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


def openvino_runner(xml_path: Path, expose_all: bool = False):
    """An OpenVINO IR on the CPU with the f32 precision hint, as the check runs it."""
    from convertkit.platforms.openvino import OpenVinoRunner

    return OpenVinoRunner(xml_path, OPENVINO_CONFIG, expose_all=expose_all)


class OpenVinoTensors:
    """Every named op output of an OpenVINO IR, for localisation."""

    def __init__(self, xml_path: Path) -> None:
        self.xml_path = xml_path
        self.label = str(xml_path)

    def nodes(self) -> list[GraphNode]:
        from convertkit.platforms.openvino import NON_COMPUTING_OPS

        ov = import_openvino()
        model = ov.Core().read_model(str(self.xml_path))
        nodes = []
        for op in model.get_ordered_ops():
            if op.get_type_name() in NON_COMPUTING_OPS:
                continue
            inputs = tuple(_port_name(i.get_source_output()) for i in op.inputs())
            outputs = tuple(_port_name(o) for o in op.outputs())
            nodes.append(GraphNode(len(nodes), op.get_friendly_name(), op.get_type_name(),
                                   inputs, outputs))
        return nodes

    def graph_inputs(self) -> set[str]:
        ov = import_openvino()
        model = ov.Core().read_model(str(self.xml_path))
        return {name for port in model.inputs for name in port.get_names()}

    def constants(self) -> dict[str, np.ndarray]:
        return {}

    def locate(self, step: int) -> SourceLocation | None:
        return None

    def run_all(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with openvino_runner(self.xml_path, expose_all=True) as runner:
            values = runner.run(feeds)
        return {**{k: v for k, v in feeds.items() if k in self.graph_inputs()}, **values}


def _port_name(port) -> str:
    """A tensor's first name; unnamed ones (never on the other side) get a local name."""
    names = port.get_names()
    if names:
        return sorted(names)[0]
    return f"<{port.get_node().get_friendly_name()}>:{port.get_index()}"


def openvino_input_specs(xml_path: Path):
    """The IR's inputs as InputSpecs (a dynamic axis gets a name)."""
    from convertkit.spec import InputSpec

    ov = import_openvino()
    model = ov.Core().read_model(str(xml_path))
    specs = []
    for index, port in enumerate(model.inputs):
        name = port.get_any_name()
        dims: list[int | str] = []
        for axis, dim in enumerate(port.get_partial_shape()):
            dims.append(dim.get_length() if dim.is_static else f"{name}_dim{axis}")
        dtype = np.dtype(port.get_element_type().to_dtype()).name
        specs.append(InputSpec(name or f"input_{index}", tuple(dims), dtype))
    return specs
