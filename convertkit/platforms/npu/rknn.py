"""`npu:rknn[@CHIP]`: a Rockchip RKNN model (.rknn) built with rknn-toolkit2 2.5.0 and
checked in the toolkit's simulator.

- fp16 (default): the float model, computed at fp16 by the NPU (``float_dtype``).
- int8: w8a8 per-channel quantisation (``quantized_algorithm='normal'``), calibrated on
  the calibration samples (never the ones the check grades), written as the dataset list
  of .npy files the toolkit reads (kept in the artifact folder under ``calibration/``).
- int8 with nodes kept (mixed precision, BuildOptions.keep_fp32): the toolkit's hybrid
  quantisation. RKNN keeps them in float16, its higher precision: the layers that compute
  the nodes' ONNX output tensors (RKNN names a layer after its tensor) are listed as
  float16 under ``custom_quantize_layers`` in the .quantization.cfg that
  hybrid_quantization_step1 writes, and hybrid_quantization_step2 builds from it (the
  edited cfg is kept beside the model: model.quantization.cfg).

rknn-toolkit2 pins protobuf, numpy and onnx releases the main environment cannot hold,
so it lives in the ``rknn`` toolchain environment and every call to it goes through
convertkit/toolchain_steps/rknn.py. Its simulator runs only a model built from ONNX in the
same process (a .rknn loaded from file needs a board), so the build step also simulates
the evaluation samples (``BuildOptions.evaluation_path``) right after exporting the .rknn;
the runner returns those outputs for samples it recorded, and simulates any others in one
rebuild from the same ONNX with the same settings (rknn.json).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx

from convertkit.checker.samples import load_samples, save_samples
from convertkit.errors import ConversionError, UsageError
from convertkit.ir.info import OnnxInfo, describe
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
from convertkit.platforms.calibration import calibration_notes, calibration_samples
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
    name="rknn",
    description="Rockchip rknn-toolkit2: .rknn models and the RKNN simulator",
    # rknn-toolkit2 comes --no-deps (the file's `# no-deps:` line): its wheel declares
    # torch<=2.4.0 yet runs on the torch 2.13.0 the file pins.
    requirements=Path(__file__).parent / "requirements" / "rknn.txt",
    probe=("rknn.api",),
    packages=("rknn-toolkit2", "onnx", "torch"),
    size_hint="~1.5 GB",
)

# The target_platform values rknn-toolkit2 2.5.0 builds for; the first is the default.
CHIPS: tuple[str, ...] = ("rk3588", "rk3566", "rk3568", "rk3562", "rk3576", "rv1106",
                          "rv1103", "rv1126b")
DEFAULT_CHIP = "rk3588"
# Their NPUs compute integers only: the toolkit refuses do_quantization=False for them.
INT8_ONLY_CHIPS = frozenset({"rv1106", "rv1103"})
SETTINGS_FILE = "rknn.json"
BUILD_LOG = "rknn.log"
SIMULATED_OUTPUTS = "simulator_outputs.npz"
HYBRID_CFG = "model.quantization.cfg"
HYBRID_HOW = ("rknn.load_onnx(model); rknn.hybrid_quantization_step1(dataset=dataset, "
              "proposal=False); add the layers to custom_quantize_layers as float16 in the "
              "{model}.quantization.cfg it writes; rknn.hybrid_quantization_step2("
              "model_input='{model}.model', data_input='{model}.data', "
              "model_quantization_cfg='{model}.quantization.cfg')")
CALIBRATION_DIR = "calibration"
STEP = "convertkit.toolchain_steps.rknn"
BUILD_TIMEOUT_S = 3600


class RknnPlatform(Platform):
    name: ClassVar[str] = "rknn"
    family: ClassVar[Family] = Family.NPU
    is_family_default: ClassVar[bool] = True
    description: ClassVar[str] = (
        f"Rockchip RKNN model (rknn-toolkit2 2.5.0), checked in the toolkit's simulator; "
        f"@CHIP: {', '.join(CHIPS)} (default {DEFAULT_CHIP})")
    precisions: ClassVar[tuple[Precision, ...]] = (Precision.FP16, Precision.INT8)
    # Hybrid quantisation keeps the nodes' layers in float16 (not fp32: RKNN's higher
    # precision), see build.
    keeps_nodes_in_fp32: ClassVar[bool] = True
    kept_precision: ClassVar[str] = "fp16"
    requirements: ClassVar[Requirements] = Requirements(
        ops=ListedOps(TABLES / "rknn_ops.txt",
                      source="rknn-toolkit2 2.5.0 probed op by op (onnx backend node tests "
                             "built, simulated, lowered without a custom op) and Rockchip's "
                             "RKNNToolKit2_OP_Support v2.1.0 (tables/rknn_ops.txt)"),
        # load_onnx refuses opset 20 and newer ("need <= 19"); Rockchip documents 12-19.
        min_opset=12,
        max_opset=19,
        static_shapes=True,  # an .rknn has fixed input shapes (dynamic_input aside)
        source="rknn-toolkit2 2.5.0 (load_onnx, build) and Rockchip's operator list",
    )

    @classmethod
    def is_available(cls) -> bool:
        return toolchain_status(TOOLCHAIN.name).state == "installed"

    def precisions_for(self, target: TargetSpec) -> TargetPrecisions:
        chip = (target.device or DEFAULT_CHIP).lower()
        if chip in INT8_ONLY_CHIPS:
            return TargetPrecisions((Precision.INT8,), f"the {chip} NPU computes int8 only: "
                                    "rknn-toolkit2 builds no fp16 model for it")
        return TargetPrecisions(self.precisions)

    def preflight(self, model: OnnxInfo, target: TargetSpec) -> list[Problem]:
        return device_problems(target, CHIPS, "Rockchip chip")

    def build(self, onnx_path: Path, target: TargetSpec, out_dir: Path,
              options: BuildOptions) -> Artifact:
        chip = resolve_chip(target)
        precision = build_precision(self, target, options)
        env = require_toolchain(TOOLCHAIN.name, needed_for=f"npu:rknn@{chip}")
        out_dir.mkdir(parents=True, exist_ok=True)
        model = onnx.load(str(onnx_path), load_external_data=False)
        info = describe(model)
        rknn_path = out_dir / "model.rknn"
        settings: dict[str, Any] = {
            "onnx": os.path.relpath(onnx_path, out_dir),
            "chip": chip,
            "precision": precision.value,
            "dataset": None,
            "input_names": [t.name for t in info.inputs],
            "output_names": [t.name for t in info.outputs],
            "output_shapes": [list(t.dims) if all(isinstance(d, int) for d in t.dims)
                              else None for t in info.outputs],
        }
        notes: list[str] = []
        files: list[Path] = [rknn_path, out_dir / SETTINGS_FILE]
        if onnx_path.parent == out_dir:
            files.append(onnx_path)  # kept: a check on other inputs rebuilds from it
        if precision == Precision.INT8:
            calibration = calibration_samples(options, onnx_path, "int8 calibration")
            dataset = write_dataset(calibration, settings["input_names"],
                                    out_dir / CALIBRATION_DIR)
            settings["dataset"] = os.path.relpath(dataset, out_dir)
            files.extend(sorted((out_dir / CALIBRATION_DIR).iterdir()))
            notes.append(f"int8: w8a8, per-channel, 'normal' calibration on "
                         f"{len(calibration)} sample(s) listed in "
                         f"{CALIBRATION_DIR}/{dataset.name}")
            notes.extend(calibration_notes(options))
            if options.keep_fp32:
                if chip in INT8_ONLY_CHIPS:
                    raise ConversionError(
                        f"the {chip} NPU computes int8 only: it keeps no node in float16",
                        hint="build it in pure int8 (--no-mixed-precision)",
                        code="rknn-int8-only")
                settings["keep_float16"] = output_tensors(model, options.keep_fp32)
        evaluation = (_select_inputs(load_samples(options.evaluation_path),
                                    settings["input_names"])
                      if options.evaluation_path is not None else [])
        settings["simulated_samples_sha256"] = [feeds_digest(feeds) for feeds in evaluation]
        payload = _payload(settings, out_dir)
        payload["rknn"] = str(rknn_path)
        if settings.get("keep_float16"):
            payload["cfg_out"] = str(out_dir / HYBRID_CFG)
            payload["layers_out"] = str(out_dir / ".hybrid_layers.json")
            files.append(out_dir / HYBRID_CFG)
        with tempfile.TemporaryDirectory(prefix=".feeds-", dir=out_dir) as scratch:
            if evaluation:
                # Simulated now, in the process that built the model, so that the check
                # needs no second build. These samples only run: nothing is tuned on them.
                feeds = Path(scratch, "samples.npz")
                save_samples(feeds, evaluation)
                payload.update(feeds=str(feeds), outputs=str(out_dir / SIMULATED_OUTPUTS))
                files.append(out_dir / SIMULATED_OUTPUTS)
            result = run_step(env, f"{STEP}:build", payload, what="the RKNN build",
                              log_path=out_dir / BUILD_LOG, timeout_s=BUILD_TIMEOUT_S)
        settings["toolkit"] = f"rknn-toolkit2 {result['toolkit']}"
        override: dict[str, Any] = {}
        if settings.get("keep_float16"):
            hybrid = json.loads(Path(payload["layers_out"]).read_text())
            Path(payload["layers_out"]).unlink()
            override = {"rknn": {
                "custom_quantize_layers": {layer: "float16" for layer in hybrid["layers"]},
                "onnx_nodes": list(options.keep_fp32),
                "cfg": HYBRID_CFG,
                "how": HYBRID_HOW}}
            notes.append(
                f"int8: {len(options.keep_fp32)} ONNX node(s) kept in float16 by hybrid "
                f"quantisation, as RKNN layer(s) {', '.join(hybrid['layers'])} "
                f"(custom_quantize_layers in {HYBRID_CFG})"
                + (f"; tensor(s) {', '.join(hybrid['unmatched'])} are folded into "
                   "other layers" if hybrid["unmatched"] else ""))
        (out_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        simulator = f"the rknn-toolkit2 {result['toolkit']} simulator"
        notes.append(f"built for {chip} at {precision.value}; checked in {simulator}, which "
                     "runs only a model built from ONNX in the same process: "
                     + (f"the build that wrote model.rknn simulated the {len(evaluation)} "
                        f"evaluation sample(s) ({SIMULATED_OUTPUTS}); other inputs are "
                        "simulated by a rebuild"
                        if evaluation else "the check rebuilds")
                     + f" from the same ONNX with the same settings ({SETTINGS_FILE})")
        return Artifact(str(target), rknn_path, precision, tuple(files), notes=tuple(notes),
                        checked_in=simulator, calibrated=precision == Precision.INT8,
                        override=override)

    def open(self, artifact: Artifact) -> RknnSimulatorRunner:
        return RknnSimulatorRunner(artifact.path.parent)


class RknnSimulatorRunner(Runner):
    """The model of an artifact folder (its rknn.json) in the rknn-toolkit2 simulator."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.settings: dict[str, Any] = {}
        self._env: ToolchainEnv | None = None

    def __enter__(self) -> RknnSimulatorRunner:
        self.settings = json.loads((self.folder / SETTINGS_FILE).read_text())
        self._env = require_toolchain(TOOLCHAIN.name, needed_for="the RKNN simulator")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._env = None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.run_samples([feeds])[0]

    def run_samples(self, samples: Sequence[Mapping[str, np.ndarray]],
                    ) -> list[dict[str, np.ndarray]]:
        """The simulator's outputs for every sample: those the build recorded, and the
        others from one rebuild that simulates them all."""
        samples = _select_inputs(samples, self.settings["input_names"])
        digests = [feeds_digest(feeds) for feeds in samples]
        recorded = self.settings.get("simulated_samples_sha256") or []
        outputs: dict[str, dict[str, np.ndarray]] = {}
        if recorded and set(digests) & set(recorded):
            outputs = dict(zip(recorded, load_samples(self.folder / SIMULATED_OUTPUTS),
                               strict=True))
        missing = list({digest: feeds for digest, feeds in zip(digests, samples, strict=True)
                        if digest not in outputs}.items())
        if missing:
            with tempfile.TemporaryDirectory(prefix="convertkit-rknn-") as scratch:
                payload = self._payload_with([feeds for _, feeds in missing], Path(scratch))
                payload["outputs"] = str(Path(scratch, "outputs.npz"))
                run_step(self._require_env(), f"{STEP}:simulate", payload,
                         what="the RKNN simulator", log_path=self.folder / BUILD_LOG,
                         timeout_s=BUILD_TIMEOUT_S)
                outputs.update(zip((digest for digest, _ in missing),
                                   load_samples(Path(payload["outputs"])), strict=True))
        return [outputs[digest] for digest in digests]

    def layer_analysis(self, feeds: Mapping[str, np.ndarray]) -> list[dict]:
        """rknn-toolkit2's accuracy_analysis of the simulated model on ``feeds``: the ten
        layers whose own output (``cosine``, ``euclidean``) strays furthest from the
        float model's, worst first; ``cosine_entire``/``euclidean_entire`` are the errors
        accumulated up to that layer. The full table is kept beside the artifact
        (accuracy_analysis.txt)."""
        with tempfile.TemporaryDirectory(prefix="convertkit-rknn-") as scratch:
            payload = self._payload_with([feeds], Path(scratch))
            payload["work_dir"] = str(Path(scratch, "analysis"))
            result = run_step(self._require_env(), f"{STEP}:analyse", payload,
                              what="the RKNN accuracy analysis",
                              log_path=self.folder / BUILD_LOG, timeout_s=BUILD_TIMEOUT_S)
            shutil.copyfile(result["report"], self.folder / "accuracy_analysis.txt")
        return result["rows"][:10]

    def _payload_with(self, samples: Sequence[Mapping[str, np.ndarray]],
                      scratch: Path) -> dict[str, Any]:
        payload = _payload(self.settings, self.folder)
        payload["feeds"] = str(scratch / "samples.npz")
        save_samples(Path(payload["feeds"]), _select_inputs(samples, payload["input_names"]))
        return payload

    def _require_env(self) -> ToolchainEnv:
        assert self._env is not None, "use the runner inside a with block"
        return self._env


def resolve_chip(target: TargetSpec) -> str:
    chip = (target.device or DEFAULT_CHIP).lower()
    if chip not in CHIPS:
        raise UsageError(f"unknown Rockchip chip {target.device!r}",
                         hint=f"write npu:rknn@CHIP with one of: {', '.join(CHIPS)}",
                         code="unknown-device")
    return chip


def write_dataset(samples: list[dict[str, np.ndarray]], input_names: list[str],
                  folder: Path) -> Path:
    """The dataset list rknn-toolkit2 calibrates on: one line per sample, the .npy file of
    each input in model input order, separated by spaces. Arrays keep the ONNX layout
    (the toolkit expects NCHW .npy for an NCHW model)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, sample in enumerate(samples):
        paths = []
        for position, name in enumerate(input_names):
            path = folder / f"sample{index}_input{position}.npy"
            np.save(path, np.ascontiguousarray(sample[name]))
            paths.append(path.name)
        lines.append(" ".join(paths))
    dataset = folder / "dataset.txt"
    dataset.write_text("\n".join(lines) + "\n")
    return dataset


def output_tensors(model: onnx.ModelProto, nodes: Sequence[str]) -> list[str]:
    """The output tensors of the ONNX nodes named ``nodes``, the names RKNN gives the
    layers computing them."""
    by_name = {node.name: node for node in model.graph.node}
    unknown = [name for name in nodes if name not in by_name]
    if unknown:
        raise ConversionError(f"the model has no node named {', '.join(unknown)}",
                              hint="keep nodes by their ONNX node names",
                              code="unknown-node")
    return [tensor for name in nodes for tensor in by_name[name].output if tensor]


def _select_inputs(samples: Sequence[Mapping[str, np.ndarray]],
                  input_names: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """Each sample's arrays for the model's inputs, in input order."""
    for feeds in samples:
        missing = [name for name in input_names if name not in feeds]
        if missing:
            raise ConversionError(f"the samples have no array for {', '.join(missing)}",
                                  hint="name each array after the model input it feeds",
                                  code="missing-input")
    return [{name: np.asarray(feeds[name]) for name in input_names} for feeds in samples]


def feeds_digest(feeds: Mapping[str, np.ndarray]) -> str:
    """A digest of input arrays: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name in sorted(feeds):
        value = np.ascontiguousarray(feeds[name])
        digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _payload(settings: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """The step payload for the model of rknn.json ``settings`` in ``folder``: its paths
    made absolute, for a step that runs elsewhere."""
    payload = {key: settings[key] for key in ("chip", "precision", "input_names",
                                              "output_names", "output_shapes")}
    payload["onnx"] = str((folder / settings["onnx"]).resolve())
    if settings.get("dataset"):
        payload["dataset"] = str((folder / settings["dataset"]).resolve())
    if settings.get("keep_float16"):
        payload["keep_float16"] = list(settings["keep_float16"])
    return payload

