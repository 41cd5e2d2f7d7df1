"""`npu:intel`: an OpenVINO IR (model.xml/.bin) with static shapes for the Intel NPU
(Core Ultra "AI Boost") and the command that compiles it there.

The NPU plugin compiles a model for the NPU it finds, through the compiler in the NPU
driver (OpenVINO 2026's compiler-in-plugin library is not in the pip wheel), so nothing
here compiles for it: the build converts the ONNX model with the same code as
`cpu:openvino` (convertkit.platforms.openvino.convert_to_ir), at fp16 (weights stored in
fp16: the NPU computes in fp16) or int8 (NNCF), and writes compile_npu.sh, which compiles
the IR on the NPU machine and exports the compiled blob (`CompiledModel.export_model`;
compile_tool is deprecated). The status is `prepared`, unless this machine has an NPU
(`"NPU" in ov.Core().available_devices`): then the IR is compiled and checked on it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import ClassVar

from convertkit.ir.info import OnnxInfo
from convertkit.ir.preflight import Requirements
from convertkit.platforms import (
    Artifact,
    BuildOptions,
    Platform,
    Problem,
    Runner,
    build_precision,
    is_installed,
)
from convertkit.platforms.openvino import (
    COMPILE_FILE,
    OpenVinoFrontendOps,
    OpenVinoRunner,
    convert_to_ir,
)
from convertkit.spec import Family, Precision, TargetSpec

DEVICE = "NPU"
COMPILE_SCRIPT = "compile_npu.sh"
BLOB = "model.blob"
# The NPU plugin reads a blob back without compiling: ov.Core().import_model(data, "NPU").
# export_model writes into a stream (OpenVINO 2026.4 returns a BytesIO without one).
COMPILE_PYTHON = ('import io, sys, openvino as ov; blob = io.BytesIO(); '
                  'ov.Core().compile_model("model.xml", sys.argv[1]).export_model(blob); '
                  'open("model.blob", "wb").write(blob.getvalue())')
BENCHMARK_COMMAND = "benchmark_app -m model.xml -d NPU"


class IntelNpuPlatform(Platform):
    name: ClassVar[str] = "intel"
    family: ClassVar[Family] = Family.NPU
    is_family_default: ClassVar[bool] = False
    description: ClassVar[str] = ("Intel NPU: static-shape OpenVINO IR (fp16 weights; int8 by "
                                  "NNCF) and the command that compiles it on the NPU")
    precisions: ClassVar[tuple[Precision, ...]] = (Precision.FP16, Precision.INT8)
    requirements: ClassVar[Requirements] = Requirements(
        ops=OpenVinoFrontendOps(), min_opset=7, static_shapes=True,
        source="OpenVINO's ONNX frontend (probed, as for cpu:openvino); the NPU plugin "
               "compiles static shapes")

    @classmethod
    def is_available(cls) -> bool:
        return is_installed("openvino")

    def preflight(self, model: OnnxInfo, target: TargetSpec) -> list[Problem]:
        if target.device is not None:
            return [Problem(f"npu:intel takes no device ({target.device!r}): the NPU plugin "
                            "compiles for the NPU of the machine it runs on")]
        return []

    def build(self, onnx_path: Path, target: TargetSpec, out_dir: Path,
              options: BuildOptions) -> Artifact:
        precision = build_precision(self, target, options)
        out_dir.mkdir(parents=True, exist_ok=True)
        xml = out_dir / "model.xml"
        result = convert_to_ir(onnx_path, xml, precision, options,
                               compress_to_fp16=precision == Precision.FP16)
        notes = list(result["notes"])
        settings = {"device": DEVICE, "config": {}, "outputs": result["outputs"],
                    "python": COMPILE_PYTHON, "benchmark": BENCHMARK_COMMAND}
        (out_dir / COMPILE_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        script = write_compile_script(out_dir)
        files = (xml, xml.with_suffix(".bin"), out_dir / COMPILE_FILE, script)
        notes.append(f"compile on the NPU machine ({script.name}): python3 -c "
                     f"'{COMPILE_PYTHON}' NPU; measure it: {BENCHMARK_COMMAND}")
        if not npu_present():
            notes.append("no Intel NPU here (OpenVINO lists no NPU device): the IR is ready "
                         f"for one; run {script.name} on a Core Ultra machine with the NPU "
                         "driver")
            return Artifact(str(target), xml, precision, files, notes=tuple(notes),
                            is_prepared_only=True, calibrated=precision == Precision.INT8)
        notes.append("compiled and checked on this machine's NPU")
        return Artifact(str(target), xml, precision, files, notes=tuple(notes),
                        calibrated=precision == Precision.INT8)

    def open(self, artifact: Artifact) -> Runner | None:
        if artifact.is_prepared_only or not npu_present():
            return None
        settings = json.loads((artifact.path.parent / COMPILE_FILE).read_text())
        return OpenVinoRunner(artifact.path, settings["config"], settings["outputs"],
                                 device=DEVICE)


def write_compile_script(out_dir: Path) -> Path:
    """compile_npu.sh: compiles model.xml on the NPU and exports the blob."""
    script = out_dir / COMPILE_SCRIPT
    script.write_text(
        "#!/bin/sh\n"
        "# Compiles model.xml beside this script for the Intel NPU and writes model.blob,\n"
        "# which ov.Core().import_model(open('model.blob', 'rb').read(), 'NPU') loads without\n"
        "# compiling again. Run it on an Intel Core Ultra machine with the NPU driver and\n"
        "# OpenVINO 2026.4 (pip install 'openvino==2026.4.*'). Usage: compile_npu.sh [DEVICE]\n"
        "# (default NPU); PYTHON names the interpreter (default python3).\n"
        f"# Measure it there: {BENCHMARK_COMMAND}\n"
        "set -e\n"
        'cd "$(dirname "$0")"\n'
        f"\"${{PYTHON:-python3}}\" -c '{COMPILE_PYTHON}' \"${{1:-NPU}}\"\n", encoding="utf-8")
    script.chmod(0o755)
    return script


@functools.cache
def npu_present() -> bool:
    """Whether OpenVINO sees an Intel NPU on this machine (the plugin ships in the wheel;
    the device needs the NPU and its driver)."""
    if not is_installed("openvino"):
        return False
    from convertkit.checker.runners import import_openvino

    return DEVICE in import_openvino().Core().available_devices
