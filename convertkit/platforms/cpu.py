"""CPU targets. `cpu:ort`: ONNX Runtime with its graph optimisations applied offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from convertkit.ir.info import OnnxInfo
from convertkit.ir.io import EXTERNAL_DATA_THRESHOLD_BYTES, stored_bytes
from convertkit.ir.preflight import OrtKernelOps, Requirements
from convertkit.ir.runtime import open_session, session_options
from convertkit.platforms import Artifact, BuildOptions, Problem, is_installed
from convertkit.platforms.ort_runner import OrtRunner
from convertkit.spec import Family, Precision, TargetSpec

# ORT_ENABLE_ALL adds layout transforms (NCHWc) tied to this machine's CPU features; the
# extended level keeps the saved model portable across x86 and ARM CPUs.
OFFLINE_OPTIMIZATION_LEVEL = "ORT_ENABLE_EXTENDED"
SESSION_FILE = "session.json"


class OrtCpuPlatform:
    name: ClassVar[str] = "ort"
    family: ClassVar[Family] = Family.CPU
    is_family_default: ClassVar[bool] = True
    description: ClassVar[str] = "ONNX Runtime, graph optimisations applied offline (fp32)"
    # ONNX Runtime reads models from opset 7 on (onnxruntime.ai/docs/reference/compatibility).
    precisions: ClassVar[tuple[Precision, ...]] = (Precision.FP32,)
    requirements: ClassVar[Requirements] = Requirements(
        ops=OrtKernelOps("CPUExecutionProvider"), min_opset=7,
        source="ONNX Runtime's CPU kernel registry and its compatibility page")

    @classmethod
    def is_available(cls) -> bool:
        return is_installed("onnxruntime")

    def preflight(self, model: OnnxInfo, target: TargetSpec) -> list[Problem]:
        problems = []
        if target.device not in (None, "x86", "x86_64", "arm64", "aarch64"):
            problems.append(Problem(f"unknown CPU device {target.device!r}"))
        return problems

    def build(self, onnx_path: Path, target: TargetSpec, out_dir: Path,
              options: BuildOptions) -> Artifact:
        out_dir.mkdir(parents=True, exist_ok=True)
        optimized = out_dir / "model.onnx"
        options = session_options(OFFLINE_OPTIMIZATION_LEVEL, optimized_path=optimized)
        files = [optimized]
        if stored_bytes(onnx_path) > EXTERNAL_DATA_THRESHOLD_BYTES:
            data_name = optimized.name + ".data"
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name", data_name)
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_min_size_in_bytes", "1024")
            files.append(out_dir / data_name)
        open_session(onnx_path, options)  # optimising happens while the session loads
        _drop_folded_initializer_inputs(onnx_path, optimized)
        settings = {
            "providers": ["CPUExecutionProvider"],
            "graph_optimization_level": "ORT_DISABLE_ALL",
            "optimizations_applied_offline": OFFLINE_OPTIMIZATION_LEVEL,
            "intra_op_num_threads": 0,
            "python": "sess = onnxruntime.InferenceSession('model.onnx', so, "
                      "providers=['CPUExecutionProvider']) with so.graph_optimization_level = "
                      "onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL",
        }
        (out_dir / SESSION_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        files.append(out_dir / SESSION_FILE)
        return Artifact(
            str(target), optimized, Precision.FP32, tuple(files),
            notes=(f"graph optimised offline at {OFFLINE_OPTIMIZATION_LEVEL}; load it with "
                   f"the settings in {SESSION_FILE}",),
        )

    def open(self, artifact: Artifact) -> OrtRunner:
        # Load exactly as a user would with session.json: no second round of optimisation.
        return OrtRunner(artifact.path, "ORT_DISABLE_ALL")


def _drop_folded_initializer_inputs(original: Path, optimized: Path) -> None:
    """IR 3 models list their initializers among the graph inputs. When ORT folds such an
    initializer away it keeps the input in the saved model, which then demands a feed for
    it (seen on the ONNX package's light_resnet50 and light_squeezenet). Drop inputs that
    were initializers in the original and that nothing reads any more."""
    import onnx

    source = onnx.load(str(original), load_external_data=False)
    real_inputs = {i.name for i in source.graph.input} - {t.name for t in
                                                           source.graph.initializer}
    model = onnx.load(str(optimized), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    read = {name for node in model.graph.node for name in node.input}
    read |= {o.name for o in model.graph.output}
    dangling = [i for i in model.graph.input
                if i.name not in real_inputs and i.name not in initializers and i.name not in read]
    if not dangling:
        return
    for value in dangling:
        model.graph.input.remove(value)
    onnx.save(model, str(optimized))
