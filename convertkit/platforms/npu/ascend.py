"""`npu:ascend[@SOC]`: Huawei Ascend (310, 310P, 310B, 910, 910B, 910_93) through ATC.

ATC (Ascend Tensor Compiler, part of CANN) turns an ONNX model into an offline model
(`.om`). CANN is not installable here (the registry's `cann` package is a placeholder), so
the build prepares what ATC needs: an ONNX model with static input shapes, an opset ATC
reads (9-18) and only operators Huawei's "supported ONNX operators" list names (checked
before anything is built, tables/ascend_ops.txt), plus `atc.sh` holding the exact `atc`
command. The status is then `prepared`. Where `atc` is on PATH it is run: the `.om` is the
artifact, status `built` (nothing here can run it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import ClassVar

import onnx

from convertkit.errors import ConversionError
from convertkit.ir.info import OnnxInfo
from convertkit.ir.io import load_model, save_model
from convertkit.ir.preflight import ListedOps, Requirements
from convertkit.platforms import (
    Artifact,
    BuildOptions,
    Platform,
    Problem,
    Runner,
    TargetPrecisions,
    build_precision,
)
from convertkit.platforms.npu import TABLES
from convertkit.safe_text import shell_join
from convertkit.spec import Family, Precision, TargetSpec

CANN_VERSION = "8.0.0"
DEFAULT_SOC = "Ascend310P3"
# ATC's --soc_version values: "Ascend" + the chip name `npu-smi info` reports.
SOC_VERSIONS = (
    "Ascend310", "Ascend310B1", "Ascend310B2", "Ascend310B3", "Ascend310B4",
    "Ascend310P1", "Ascend310P3", "Ascend310P5", "Ascend310P7",
    "Ascend910A", "Ascend910B", "Ascend910ProA", "Ascend910ProB", "Ascend910PremiumA",
    "Ascend910B1", "Ascend910B2", "Ascend910B2C", "Ascend910B3", "Ascend910B4",
    "Ascend910B4-1", "Ascend910_9362", "Ascend910_9372", "Ascend910_9381", "Ascend910_9382",
    "Ascend910_9391", "Ascend910_9392",
)
_SOC_BY_KEY = {soc.lower().removeprefix("ascend"): soc for soc in SOC_VERSIONS}
# --precision_mode per precision (ATC manual, --precision_mode): force_fp16 is ATC's own
# default; must_keep_origin_dtype keeps fp32 where the AI Core has an fp32 kernel and falls
# back to AI CPU kernels elsewhere (force_fp32 would still feed matrix ops fp16).
PRECISION_MODES = {Precision.FP16: "force_fp16", Precision.FP32: "must_keep_origin_dtype"}
# ATC reads ONNX through the protobuf of ONNX 1.12 (IR version 8).
ATC_IR_VERSION = 8
ATC_SCRIPT = "atc.sh"
ATC_LOG = "atc.log"
ATC_TIMEOUT_S = 3600
OPS_SOURCE = (f"Huawei CANN {CANN_VERSION} 'Supported ONNX Operators' (支持ONNX算子清单), "
              "https://www.hiascend.com/document/detail/zh/canncommercial/800/apiref/aolapi/"
              "operatorlist_00176.html; opsets v8-v18 per operator page")


class AscendPlatform(Platform):
    name: ClassVar[str] = "ascend"
    family: ClassVar[Family] = Family.NPU
    is_family_default: ClassVar[bool] = False
    description: ClassVar[str] = (f"Huawei Ascend offline model (.om) by ATC; without CANN here: "
                                  f"the static-shape ONNX model and the atc command "
                                  f"(@SOC, default {DEFAULT_SOC})")
    precisions: ClassVar[tuple[Precision, ...]] = (Precision.FP16, Precision.FP32)
    requirements: ClassVar[Requirements] = Requirements(
        ops=ListedOps(TABLES / "ascend_ops.txt", source=OPS_SOURCE),
        min_opset=9, max_opset=18, static_shapes=True,
        source=f"ATC of CANN {CANN_VERSION}: ONNX 1.12 models, opsets 9-18 (ATC manual), "
               "static shapes, the operators of its supported-ONNX-operators list")

    # Without ATC it still prepares the model and the atc command (status `prepared`).
    prepares_when_missing: ClassVar[bool] = True

    @classmethod
    def is_available(cls) -> bool:
        return shutil.which("atc") is not None

    def precisions_for(self, target: TargetSpec) -> TargetPrecisions:
        return TargetPrecisions(self.precisions,
                                "int8 needs Huawei's AMCT, which is not supported here")

    def preflight(self, model: OnnxInfo, target: TargetSpec) -> list[Problem]:
        if target.device is not None and soc_version(target.device) is None:
            return [Problem(f"unknown Ascend SoC {target.device!r} (ATC --soc_version "
                            f"takes: {', '.join(SOC_VERSIONS)})")]
        return []

    def build(self, onnx_path: Path, target: TargetSpec, out_dir: Path,
              options: BuildOptions) -> Artifact:
        precision = build_precision(self, target, options)
        soc = soc_version(target.device) if target.device else DEFAULT_SOC
        if soc is None:
            raise ConversionError(f"unknown Ascend SoC {target.device!r}",
                                  hint=f"use one of: {', '.join(SOC_VERSIONS)}",
                                  code="unknown-device")
        out_dir.mkdir(parents=True, exist_ok=True)
        model_path = out_dir / "model.onnx"
        model = load_model(onnx_path, load_external_data=False)
        notes = []
        if model.ir_version > ATC_IR_VERSION:
            notes.append(f"ONNX IR version {model.ir_version} -> {ATC_IR_VERSION} "
                         "(ATC reads ONNX 1.12 models)")
            model.ir_version = ATC_IR_VERSION
        files = save_model(model, model_path, external_from=onnx_path.parent, link=True)
        command = atc_command(model, model_path.name, soc, precision)
        script = write_atc_script(out_dir, command, soc)
        files.append(script)
        notes.append(f"atc command ({script.name}): {shell_join(command)}")
        atc = shutil.which("atc")
        if atc is None:
            notes.append(f"ATC (Huawei CANN) is not installed here: run {script.name} where "
                         f"CANN {CANN_VERSION} or later is set up to build model.om for {soc}")
            return Artifact(str(target), model_path, precision, tuple(files),
                            notes=tuple(notes), is_prepared_only=True)
        om = run_atc(atc, command, out_dir)
        notes.append(f"model.om built by {atc} for {soc} (precision_mode "
                     f"{PRECISION_MODES[precision]}); nothing here can run it")
        return Artifact(str(target), om, precision, (*files, om, out_dir / ATC_LOG),
                        notes=tuple(notes))

    def open(self, artifact: Artifact) -> Runner | None:
        return None  # no Ascend runtime (ACL) on this machine


def soc_version(device: str) -> str | None:
    """ATC's --soc_version for a device as written after `@` (310p3, Ascend310P3...)."""
    return _SOC_BY_KEY.get(device.lower().removeprefix("ascend"))


def atc_command(model: onnx.ModelProto, model_name: str, soc: str,
                precision: Precision) -> list[str]:
    """The atc arguments that build ``model`` (static shapes) into model.om."""
    initializers = {t.name for t in model.graph.initializer}
    shapes = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1
                for d in value.type.tensor_type.shape.dim]
        shapes.append(f"{value.name}:{','.join(map(str, dims))}")
    return ["atc", f"--model={model_name}", "--framework=5", "--output=model",
            f"--soc_version={soc}", f"--input_shape={';'.join(shapes)}",
            f"--precision_mode={PRECISION_MODES[precision]}"]


def write_atc_script(out_dir: Path, command: list[str], soc: str) -> Path:
    """atc.sh: the command that builds model.om from the ONNX model beside it. Each
    word is quoted: --input_shape holds the model's input names."""
    script = out_dir / ATC_SCRIPT
    script.write_text(
        "#!/bin/sh\n"
        f"# Builds model.om for {soc} from model.onnx beside this script with Huawei's ATC\n"
        f"# (CANN {CANN_VERSION} or later). Set up CANN first, e.g.\n"
        "#   . /usr/local/Ascend/ascend-toolkit/set_env.sh\n"
        "# Extra atc options given to this script are passed on.\n"
        "set -e\n"
        'cd "$(dirname "$0")"\n'
        f"{shell_join(command)} \"$@\"\n", encoding="utf-8")
    script.chmod(0o755)
    return script


def run_atc(atc: str, command: list[str], out_dir: Path) -> Path:
    """Run ATC in ``out_dir``, its output to atc.log; the .om it wrote."""
    log_path = out_dir / ATC_LOG
    with log_path.open("w", encoding="utf-8", errors="replace") as log:
        try:
            done = subprocess.run([atc, *command[1:]], cwd=out_dir, stdout=log,
                                  stderr=subprocess.STDOUT, timeout=ATC_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise ConversionError(f"ATC did not finish within {ATC_TIMEOUT_S} s",
                                  hint=f"see {log_path}", code="atc-timeout") from None
    om = out_dir / "model.om"
    if done.returncode != 0 or not om.is_file():
        raise ConversionError(f"ATC failed: {_last_error_line(log_path)}",
                              hint=f"the full output is in {log_path}; "
                                   f"rerun {ATC_SCRIPT} there to reproduce it",
                              code="atc-failed")
    return om


def _last_error_line(log_path: Path) -> str:
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines()
             if line.strip()]
    errors = [line for line in lines if re.search(r"\bE[0-9A-Z]{5}\b|ERROR", line)]
    return (errors or lines or ["no output"])[-1][:300]
