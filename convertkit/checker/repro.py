"""Write a minimal reproduction of a mismatch: the subgraph around the diverging node,
from both models, its input tensors, and one command that shows the mismatch.

    OUT/repro/reference.onnx   the reference model cut down to the node (onnx.utils)
    OUT/repro/candidate.onnx   the candidate cut the same way (its own weights and dtypes);
                               candidate.xml/.bin when the candidate is an OpenVINO IR
    OUT/repro/inputs.npz       the subgraph's inputs, as the reference computed them
    OUT/repro/command.sh       cd there and run `convertkit check ...`: exits 1

The cut is found on the candidate: walking back from the diverging node's outputs, every
tensor that both runs produced and that depends on the model inputs becomes a subgraph
input; constants (weights, and values computed from them) stay inside, so a weight that
differs between the models stays different in the repro.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from convertkit.checker.budgets import Budget
from convertkit.checker.inputs import save_arrays
from convertkit.checker.localize import DivergingNode, Repro, measure, topological_order
from convertkit.errors import ConvertkitError, first_line
from convertkit.ir.io import load_model
from convertkit.safe_text import printable, shell_quote

COMMAND_FILE = "command.sh"
REFERENCE_FILE = "reference.onnx"
CANDIDATE_FILE = "candidate.onnx"
CANDIDATE_IR_FILE = "candidate.xml"
INPUTS_FILE = "inputs.npz"


class ReproError(Exception):
    """The subgraph could not be cut or saved; the localisation stands without a repro."""


def write_repro(folder: Path, shown_as: Path, reference_model: Path, candidate_model: Path,
                node: DivergingNode, reference_values: Mapping[str, np.ndarray],
                candidate_values: Mapping[str, np.ndarray], budget: Budget) -> Repro:
    """Write the repro into ``folder`` (shown to the user as ``shown_as``). Raises
    ReproError when it cannot be written."""
    outputs = [node.after.tensor]
    try:
        reference = load_model(reference_model)
        candidate_is_ir = candidate_model.suffix.lower() == ".xml"
        candidate = reference if candidate_is_ir else load_model(candidate_model)
        cut = _cut_inputs(candidate, outputs, reference_values, candidate_values)
        folder.mkdir(parents=True, exist_ok=True)
        _extract(reference, cut, outputs, reference_values, folder / REFERENCE_FILE)
        if candidate_is_ir:
            candidate_file = CANDIDATE_IR_FILE
            _to_openvino(folder / REFERENCE_FILE, folder / candidate_file)
        else:
            candidate_file = CANDIDATE_FILE
            _extract(candidate, cut, outputs, candidate_values, folder / candidate_file)
        save_arrays(folder / INPUTS_FILE, {name: reference_values[name] for name in cut})
    except ConvertkitError as exc:
        raise ReproError(exc.message) from exc
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, KeyError,
            ValueError, RuntimeError, RecursionError, OSError) as exc:
        raise ReproError(f"{type(exc).__name__}: {first_line(exc)}") from exc

    tolerance = f"--atol {budget.atol!r} --rtol {budget.rtol!r}"
    local = (f"convertkit check {REFERENCE_FILE} {candidate_file} --data {INPUTS_FILE} "
             f"{tolerance}")
    (folder / COMMAND_FILE).write_text(
        "#!/bin/sh\n"
        # The names come from the model: escaped, so that none can end the comment.
        f"# The mismatch at {printable(node.op_type)} '{printable(node.name)}' on its own: "
        "exits 1.\n"
        f'cd "$(dirname "$0")" && exec {local}\n')
    (folder / COMMAND_FILE).chmod(0o755)
    command = (f"convertkit check {shell_quote(str(shown_as / REFERENCE_FILE))} "
               f"{shell_quote(str(shown_as / candidate_file))} "
               f"--data {shell_quote(str(shown_as / INPUTS_FILE))} {tolerance}")
    reproduced, note = _verify(folder, candidate_file, outputs, budget)
    return Repro(str(shown_as), command, tuple(cut), tuple(outputs), reproduced, note)


def _cut_inputs(candidate: onnx.ModelProto, outputs: list[str],
                reference_values: Mapping[str, np.ndarray],
                candidate_values: Mapping[str, np.ndarray]) -> list[str]:
    graph = candidate.graph
    producers = {name: node for node in graph.node for name in node.output if name}
    dynamic = _dynamic_tensors(candidate)
    cut: list[str] = []
    seen: set[str] = set()
    missing = [o for o in outputs if o not in producers]
    if missing:
        raise ReproError(f"no node produces {missing[0]} in the candidate")
    # A node that reads constants only (a weight computed in the graph) gets no inputs.
    frontier = [name for o in outputs for name in producers[o].input]
    while frontier:
        name = frontier.pop()
        if not name or name in seen:
            continue
        seen.add(name)
        if name not in dynamic:
            continue  # a constant: the extractor keeps it, with what computes it
        shared = (name in reference_values and name in candidate_values
                  and reference_values[name].shape == candidate_values[name].shape)
        if shared:
            cut.append(name)
        elif name in producers:
            frontier.extend(producers[name].input)
        else:
            raise ReproError(f"tensor {name} is not available on the reference side")
    return sorted(cut)


def _dynamic_tensors(model: onnx.ModelProto) -> set[str]:
    """Tensors that depend on a model input (everything else is a constant)."""
    initializers = {t.name for t in model.graph.initializer}
    dynamic = {i.name for i in model.graph.input if i.name not in initializers}
    for index in topological_order(model.graph):
        node = model.graph.node[index]
        has_subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                           for a in node.attribute)
        if has_subgraph or any(name in dynamic for name in node.input):
            dynamic.update(o for o in node.output if o)
    return dynamic


def _extract(model: onnx.ModelProto, inputs: list[str], outputs: list[str],
             values: Mapping[str, np.ndarray], path: Path) -> None:
    from onnx.utils import Extractor

    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    known = ({v.name for v in model_copy.graph.value_info}
             | {v.name for v in model_copy.graph.input}
             | {v.name for v in model_copy.graph.output})
    for name in [*inputs, *outputs]:
        if name not in known and name in values:
            value = values[name]
            model_copy.graph.value_info.append(onnx.helper.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
    extracted = Extractor(model_copy).extract_model(inputs, outputs)
    # The extractor keeps the file's node order, which some converters leave unsorted.
    nodes = [extracted.graph.node[i] for i in topological_order(extracted.graph)]
    del extracted.graph.node[:]
    extracted.graph.node.extend(nodes)
    # IR 3 lists initializers among the inputs; the subgraph does not (valid from IR 4).
    extracted.ir_version = max(extracted.ir_version, 4)
    for prop in model.metadata_props:
        extracted.metadata_props.append(prop)
    onnx.checker.check_model(extracted)
    onnx.save(extracted, str(path))


def _to_openvino(onnx_path: Path, xml_path: Path) -> None:
    from convertkit.checker.runners import import_openvino

    ov = import_openvino()
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)


def _verify(folder: Path, candidate_file: str, outputs: list[str],
            budget: Budget) -> tuple[bool, str]:
    """Run both subgraphs on the saved inputs: does the mismatch show on its own?"""
    from convertkit.checker.inputs import load_arrays
    from convertkit.checker.runners import openvino_runner
    from convertkit.platforms.ort_runner import OrtRunner

    feeds = load_arrays(folder / INPUTS_FILE)
    try:
        with OrtRunner(folder / REFERENCE_FILE) as runner:
            expected = runner.run(feeds)
        candidate_path = folder / candidate_file
        runner_class = openvino_runner if candidate_path.suffix == ".xml" else OrtRunner
        with runner_class(candidate_path) as runner:
            actual = runner.run(feeds)
    except ConvertkitError as exc:
        return False, f"the subgraphs did not run: {exc.message}"
    for name in outputs:
        if name in expected and name in actual and expected[name].shape == actual[name].shape:
            point = measure(0, name, "", name, actual[name], expected[name], budget)
            if not point.within_budget:
                return True, ""
    return False, ("the subgraphs agree on their own: the mismatch needs more of the graph "
                   "(or the candidate's runtime fuses across the cut)")
