"""The `onnx` target: the hub model itself, always built, checked as written."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar

from convertkit.ir.info import OnnxInfo
from convertkit.ir.preflight import OnnxSchemaOps, Requirements
from convertkit.platforms import Artifact, BuildOptions, Platform, Problem, is_installed
from convertkit.platforms.ort_runner import OrtRunner
from convertkit.spec import Family, Precision, TargetSpec


class OnnxPlatform(Platform):
    name: ClassVar[str] = "onnx"
    family: ClassVar[Family] = Family.ONNX
    is_family_default: ClassVar[bool] = True
    description: ClassVar[str] = "the validated, shape-inferred ONNX model (always built)"
    precisions: ClassVar[tuple[Precision, ...]] = (Precision.FP32,)
    requirements: ClassVar[Requirements] = Requirements(
        ops=OnnxSchemaOps(), min_opset=1,
        source="the ONNX specification, as the installed onnx package defines it")

    @classmethod
    def is_available(cls) -> bool:
        return is_installed("onnx")

    def preflight(self, model: OnnxInfo, target: TargetSpec) -> list[Problem]:
        return []

    def build(self, onnx_path: Path, target: TargetSpec, out_dir: Path,
              options: BuildOptions) -> Artifact:
        sources = [onnx_path, *onnx_path.parent.glob(onnx_path.name + ".data")]
        if out_dir.resolve() == onnx_path.parent.resolve():
            files = sources  # the hub model already lives here
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            files = [Path(shutil.copy2(source, out_dir / source.name)) for source in sources]
        return Artifact(str(target), out_dir / onnx_path.name, Precision.FP32, tuple(files))

    def open(self, artifact: Artifact) -> OrtRunner:
        # No graph optimisation: the check judges the model as written.
        return OrtRunner(artifact.path, "ORT_DISABLE_ALL")
