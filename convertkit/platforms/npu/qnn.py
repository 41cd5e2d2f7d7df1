"""`npu:qnn[@SOC]`: Qualcomm QNN HTP (Hexagon NPU) context binaries, built and checked with
onnxruntime-qnn in its own toolchain environment.

- int8 (default): the model quantised to QDQ with onnxruntime.quantization's QNN
  configuration (uint8 activations and weights), calibrated on the calibration samples
  (never the ones the check grades).
- int8 with nodes kept (mixed precision, BuildOptions.keep_fp32): those nodes are left out
  of QDQ (the QNN configuration's ``nodes_to_exclude``) and the HTP computes them in fp16
  (``enable_htp_fp16_precision``), in the same context binary; HTP v69 or newer only.
- fp16: the float model, its ops run at fp16 by the HTP (``enable_htp_fp16_precision``).

Either way the artifact is a context-binary model: an ONNX file holding one EPContext node
(``model_ctx.onnx``) beside the compiled QNN context (``model_ctx_qnn.bin``), which
onnxruntime with the QNN execution provider loads on a Snapdragon device without
recompiling. It is compiled for one SoC (``soc_model``) and checked by running it in the
QNN HTP simulator (onnxruntime-qnn's x86-64 libQnnHtp.so) with CPU fallback disabled, so a
pass means every node ran on the HTP path. Everything QNN-specific runs in the ``qnn``
toolchain environment (convertkit/toolchain_steps/qnn.py); this module only prepares files
and reads results.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from convertkit.checker.samples import load_samples, save_samples
from convertkit.errors import ConversionError, UsageError
from convertkit.ir.info import OnnxInfo
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
from convertkit.platforms.npu import TABLES, device_problems
from convertkit.spec import Family, Precision, TargetSpec
from convertkit.toolchains import (
    Toolchain,
    ToolchainEnv,
    require_toolchain,
    run_step,
    toolchain_status,
)

TOOLCHAIN = Toolchain(
    name="qnn",
    description="Qualcomm onnxruntime-qnn: QNN HTP context binaries and the HTP simulator",
    requirements=Path(__file__).parent / "requirements" / "qnn.txt",
    probe=("onnxruntime", "onnxruntime_qnn", "onnxruntime.quantization"),
    packages=("onnxruntime-qnn", "onnxruntime", "onnx"),
    size_hint="~600 MB",
)


@dataclass(frozen=True)
class Soc:
    soc_model: int  # the QNN SDK's SoC model number (QNN_SOC_MODEL_*)
    htp_arch: int  # the Hexagon HTP generation: 68, 69, 73, 75, 79, 81


# The SoC model numbers the QAIRT SDK documents ("Supported Snapdragon devices"; the
# QNN_SOC_MODEL_* constants of QnnTypes.h), as listed with their HTP generation by the
# Qualcomm backend of ExecuTorch (backends/qualcomm/serialization/qc_schema.py, QcomChipset).
SOCS: dict[str, Soc] = {
    "sm8350": Soc(30, 68),  # Snapdragon 888
    "sm8450": Soc(36, 69),  # Snapdragon 8 Gen 1
    "sm8475": Soc(42, 69),  # Snapdragon 8+ Gen 1
    "sm8550": Soc(43, 73),  # Snapdragon 8 Gen 2
    "sm8650": Soc(57, 75),  # Snapdragon 8 Gen 3
    "sm8750": Soc(69, 79),  # Snapdragon 8 Elite
    "sm8845": Soc(97, 81),  # Snapdragon 8 Gen 5
    "sm8850": Soc(87, 81),  # Snapdragon 8 Elite Gen 5
    "qcm6490": Soc(93, 68),
    "qcs9100": Soc(77, 73),
    "sa8255": Soc(52, 73),
    "sa8295": Soc(39, 68),
    "sa8540": Soc(62, 68),
    "sa8797": Soc(72, 81),
    "sar2230p": Soc(95, 81),
    "ssg2115p": Soc(46, 73),
    "ssg2125p": Soc(58, 73),
    "sw6100": Soc(96, 81),
    "sxr1230p": Soc(45, 73),
    "sxr2230p": Soc(53, 69),
    "sxr2330p": Soc(75, 79),
}
DEFAULT_SOC = "sm8650"
FP16_MIN_HTP_ARCH = 69  # HTP v68 has no fp16 units: the simulator computes such builds in fp32
SETTINGS_FILE = "qnn.json"
BUILD_LOG = "qnn.log"
STEP = "convertkit.toolchain_steps.qnn"
SIMULATOR = "the QNN HTP simulator (x86-64 libQnnHtp.so)"


class QnnPlatform(Platform):
    name: ClassVar[str] = "qnn"
    family: ClassVar[Family] = Family.NPU
    is_family_default: ClassVar[bool] = False
    description: ClassVar[str] = (
        f"Qualcomm QNN HTP context binary (onnxruntime-qnn), checked in its HTP simulator; "
        f"@SOC: {DEFAULT_SOC} (default), sm8550, sm8750, sm8850 and {len(SOCS) - 4} more")
    precisions: ClassVar[tuple[Precision, ...]] = (Precision.INT8, Precision.FP16)
    # The kept nodes are left out of QDQ and run at fp16 on the HTP (not fp32), see build.
    keeps_nodes_in_fp32: ClassVar[bool] = True
    kept_precision: ClassVar[str] = "fp16"
    requirements: ClassVar[Requirements] = Requirements(
        ops=ListedOps(TABLES / "qnn_ops.txt",
                      source="onnxruntime-qnn's documentation, QNN-ExecutionProvider.md, "
                             "\"Supported ONNX operators\" (tables/qnn_ops.txt)"),
        # onnxruntime.quantization writes opset-13 QuantizeLinear/DequantizeLinear.
        min_opset=13,
        static_shapes=True,  # QNN EP does not take dynamic shapes
        source="onnxruntime-qnn documentation (QNN-ExecutionProvider.md)",
    )

    @classmethod
    def is_available(cls) -> bool:
        return toolchain_status(TOOLCHAIN.name).state == "installed"

    def precisions_for(self, target: TargetSpec) -> TargetPrecisions:
        name = (target.device or DEFAULT_SOC).lower()
        soc = SOCS.get(name)
        if soc is None or soc.htp_arch >= FP16_MIN_HTP_ARCH:
            return TargetPrecisions(self.precisions)
        return TargetPrecisions((Precision.INT8,), (
            f"{name} has HTP v{soc.htp_arch}, which computes no fp16 (fp16 needs HTP "
            f"v{FP16_MIN_HTP_ARCH} or newer, e.g. @sm8550)"))

    def preflight(self, model: OnnxInfo, target: TargetSpec) -> list[Problem]:
        return device_problems(target, tuple(SOCS), "Qualcomm SoC")

    def build(self, onnx_path: Path, target: TargetSpec, out_dir: Path,
              options: BuildOptions) -> Artifact:
        soc_name, soc = resolve_soc(target)
        precision = build_precision(self, target, options)
        env = require_toolchain(TOOLCHAIN.name, needed_for=str(target))
        out_dir.mkdir(parents=True, exist_ok=True)
        keep = list(options.keep_fp32) if precision == Precision.INT8 else []
        if keep and soc.htp_arch < FP16_MIN_HTP_ARCH:
            raise ConversionError(
                f"{soc_name} has HTP v{soc.htp_arch}, which computes no fp16: it cannot keep "
                f"nodes in higher precision than int8 (that needs HTP v{FP16_MIN_HTP_ARCH} "
                "or newer)",
                hint=f"build it in pure int8 (--no-mixed-precision), or target a newer SoC "
                     f"(e.g. npu:qnn@{DEFAULT_SOC})",
                code="qnn-no-fp16")
        htp_fp16 = precision == Precision.FP16 or bool(keep)
        notes: list[str] = []
        with tempfile.TemporaryDirectory(prefix="convertkit-qnn-") as scratch:
            calibration = None
            if precision == Precision.INT8:
                calibration = Path(scratch, "calibration.npz")
                notes = _write_calibration(onnx_path, calibration, options)
            result = run_step(env, f"{STEP}:build", {
                "model": str(onnx_path), "out_dir": str(out_dir),
                "precision": precision.value, "soc_model": soc.soc_model,
                "calibration": str(calibration) if calibration else None,
                "keep_fp32": keep, "htp_fp16": htp_fp16,
            }, what="the QNN HTP build", log_path=out_dir / BUILD_LOG)
        simulator = _simulator(env, result["sdk_version"])
        settings = {"soc": soc_name, "soc_model": soc.soc_model, "htp_arch": soc.htp_arch,
                    "precision": precision.value, "htp_fp16": htp_fp16,
                    "keep_fp32": keep, "qairt_sdk": result["sdk_version"],
                    "toolchain": env.versions, "cpu_fallback": False}
        override: dict[str, Any] = ({"qnn": {
            "nodes_to_exclude": keep,
            "htp_fp16": True,
            "how": "onnxruntime.quantization.quantize(model_input, model_output, "
                   "get_qnn_qdq_config(model_input, reader, activation_type=QuantType.QUInt8, "
                   "weight_type=QuantType.QUInt8, nodes_to_exclude=nodes_to_exclude)); the "
                   "QNN execution provider with enable_htp_fp16_precision=1"}} if keep else {})
        (out_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        notes = [*result["notes"], *notes,
                 f"context binary for {soc_name} (soc_model {soc.soc_model}, HTP "
                 f"v{soc.htp_arch}), QAIRT SDK {result['sdk_version']}",
                 f"checked in {simulator} with CPU fallback disabled: every node runs on the "
                 "HTP path"]
        return Artifact(
            target=str(target), path=Path(result["context_model"]), precision=precision,
            files=(*(Path(p) for p in result["files"]), out_dir / SETTINGS_FILE),
            notes=tuple(notes), checked_in=simulator, calibrated=precision == Precision.INT8,
            override=override)

    def open(self, artifact: Artifact) -> QnnRunner | None:
        if toolchain_status(TOOLCHAIN.name).state != "installed":
            return None
        settings = json.loads((artifact.path.parent / SETTINGS_FILE).read_text())
        return QnnRunner(require_toolchain(TOOLCHAIN.name, needed_for="npu:qnn"),
                         artifact.path, settings["soc_model"], settings["precision"],
                         settings.get("htp_fp16", settings["precision"] == "fp16"))


class QnnRunner(Runner):
    """Runs the context-binary model in the HTP simulator, one toolchain step per call (it
    loads the context binary once for every sample of the call)."""

    def __init__(self, env: ToolchainEnv, context_model: Path, soc_model: int,
                 precision: str, htp_fp16: bool) -> None:
        self._env = env
        self._context_model = context_model
        self._soc_model = soc_model
        self._precision = precision
        self._htp_fp16 = htp_fp16
        self._scratch: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> QnnRunner:
        self._scratch = tempfile.TemporaryDirectory(prefix="convertkit-qnn-")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.run_samples([feeds])[0]

    def run_samples(self, samples: Sequence[Mapping[str, np.ndarray]],
                    ) -> list[dict[str, np.ndarray]]:
        assert self._scratch is not None, "use the runner as a context manager"
        scratch = Path(self._scratch.name)
        feeds_path, outputs_path = scratch / "samples.npz", scratch / "outputs.npz"
        save_samples(feeds_path, samples)
        run_step(self._env, f"{STEP}:run", {
            "context_model": str(self._context_model), "soc_model": self._soc_model,
            "precision": self._precision, "htp_fp16": self._htp_fp16,
            "feeds": str(feeds_path),
            "outputs": str(outputs_path),
        }, what="the QNN HTP simulator run", log_path=self._context_model.parent / BUILD_LOG)
        return load_samples(outputs_path)


def resolve_soc(target: TargetSpec) -> tuple[str, Soc]:
    """The SoC ``target`` names (``npu:qnn@sm8550``), else the default one."""
    name = (target.device or DEFAULT_SOC).lower()
    if name not in SOCS:
        raise UsageError(f"unknown Qualcomm SoC {target.device!r}",
                         hint=f"name one of: {', '.join(SOCS)} (e.g. npu:qnn@{DEFAULT_SOC})",
                         code="unknown-device")
    return name, SOCS[name]


def _write_calibration(onnx_path: Path, path: Path, options: BuildOptions) -> list[str]:
    """Every calibration sample in one samples file at ``path`` for the step; the notes
    about them."""
    from convertkit.platforms.calibration import calibration_notes, calibration_samples

    save_samples(path, calibration_samples(options, onnx_path, "int8 calibration"))
    return list(calibration_notes(options))


def _simulator(env: ToolchainEnv, sdk_version: str) -> str:
    """``the QNN HTP simulator (x86-64 libQnnHtp.so) of QAIRT 2.51.0, onnxruntime-qnn
    2.7.0`` (the SDK version as the EPContext node records it: v2.51.0.260929181845)."""
    qairt = ".".join(sdk_version.removeprefix("v").split(".")[:3])
    return (f"{SIMULATOR} of QAIRT {qairt}, "
            f"onnxruntime-qnn {env.versions.get('onnxruntime-qnn', '?')}")
