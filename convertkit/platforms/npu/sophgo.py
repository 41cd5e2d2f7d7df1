"""`npu:sophgo[@CHIP]`: a Sophgo TPU model built with tpu-mlir 1.30 and checked in its
cmodel simulator.

The flow is tpu-mlir's own: model_transform (ONNX -> top MLIR, at the model's static input
shapes), run_calibration for int8 (on every calibration sample, never one the check grades,
written as one .npz per sample under ``calibration/``), model_deploy (MLIR -> ``model.bmodel``, or
``model.cvimodel`` for the CV18xx chips). The check runs that file in the cmodel simulator
(tpu-mlir's pyruntime, as its model_runner does), every sample in one toolchain step.

Precisions per chip (what model_deploy 1.30.2 builds): bm1684x, bm1688, bm1690 fp16
(default), int8, bf16, fp32; bm1684 int8 and fp32 (no fp16 unit); cv181x bf16 and int8.

int8 with nodes kept (mixed precision, BuildOptions.keep_fp32): model_deploy's
``--quantize_table``, which lowers the ops it lists in another mode than ``--quantize``.
The kept nodes run in the chip's best float mode: F16 on bm1684x/bm1688/bm1690, F32 on
bm1684 (no fp16 unit), BF16 on cv181x (its only float mode). tpu-mlir names an op after
the first output tensor of the ONNX node it came from and that node's type (``relu_Relu``
for tensor ``relu``), and when it fuses an activation into the op before it (Conv + Relu)
the fused op keeps the activation's name: a kept node is the op of its own name, else the
op of the Relu/Clip that alone consumes its output; the names are matched against the top
MLIR model_transform writes. The table is kept beside the model (``quantize_table.txt``),
so model_deploy rebuilds the same model from it. tpu-mlir's own search, run_qtable.py,
ranks ops by their int8 loss and writes such a table; it is not used here: the ranking and
search are convertkit's (mixed_precision.py), the same for every backend.

tpu-mlir needs Python 3.10 and pins numpy 1.24 and protobuf 3.20, so it lives in the
``sophgo`` toolchain environment and every call to it goes through
convertkit/toolchain_steps/sophgo.py.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx

from convertkit.checker.inputs import save_arrays
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

# The glibc that tpu-mlir's wheel bundles (built on Ubuntu 22.04, glibc 2.35) in
# lib/third_party, which its tools put first on LD_LIBRARY_PATH: any newer system library
# loaded beside it (libexpat needs GLIBC_2.36 on Debian 12) kills the tool at start.
BUNDLED_GLIBC = ("libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1",
                 "ld-linux-x86-64.so.2")


def remove_bundled_glibc(env_root: Path) -> list[str]:
    """Delete the glibc libraries tpu-mlir bundles, so its tools load the system's."""
    removed = []
    for folder in sorted(env_root.glob("lib/python3*/site-packages/tpu_mlir/lib/third_party")):
        for name in BUNDLED_GLIBC:
            library = folder / name
            if library.exists() or library.is_symlink():
                library.unlink()
                removed.append(f"removed {library.relative_to(env_root)} (bundled glibc; "
                               "the system's is used)")
    return removed


TOOLCHAIN = Toolchain(
    name="sophgo",
    description="Sophgo tpu-mlir: .bmodel/.cvimodel and the cmodel simulator",
    requirements=Path(__file__).parent / "requirements" / "sophgo.txt",
    probe=("tpu_mlir", "torch", "onnx"),
    packages=("tpu_mlir", "torch", "onnx"),
    python="3.10",
    fixes=remove_bundled_glibc,
    size_hint="~6.5 GB",
)

# Chips whose cmodel simulator tpu-mlir 1.30 ships, and the precisions model_deploy builds
# for each (measured: bm1684 refuses F16/BF16, cv181x refuses F32 and builds F16 as BF16).
CHIP_PRECISIONS: dict[str, tuple[Precision, ...]] = {
    "bm1684x": (Precision.FP16, Precision.INT8, Precision.BF16, Precision.FP32),
    "bm1684": (Precision.INT8, Precision.FP32),
    "bm1688": (Precision.FP16, Precision.INT8, Precision.BF16, Precision.FP32),
    "bm1690": (Precision.FP16, Precision.INT8, Precision.BF16, Precision.FP32),
    "cv181x": (Precision.BF16, Precision.INT8),
}
CHIPS: tuple[str, ...] = tuple(CHIP_PRECISIONS)
# The precision mixed precision keeps nodes in, per chip: its best float mode.
KEPT_PRECISION: dict[str, Precision] = {
    "bm1684x": Precision.FP16, "bm1684": Precision.FP32, "bm1688": Precision.FP16,
    "bm1690": Precision.FP16, "cv181x": Precision.BF16,
}
# model_deploy --quantize, per precision.
QUANTIZE = {Precision.FP16: "F16", Precision.INT8: "INT8", Precision.BF16: "BF16",
            Precision.FP32: "F32"}
DEFAULT_CHIP = "bm1684x"
CVI_CHIPS = frozenset({"cv181x"})  # model_deploy writes a .cvimodel for these
SETTINGS_FILE = "sophgo.json"
BUILD_LOG = "sophgo.log"
CALIBRATION_DIR = "calibration"
QUANTIZE_TABLE = "quantize_table.txt"
# Activations tpu-mlir fuses into the op that feeds them, which then takes their name.
FUSED_ACTIVATIONS = frozenset({"Relu", "Clip"})
STEP = "convertkit.toolchain_steps.sophgo"
BUILD_TIMEOUT_S = 3600


class SophgoPlatform(Platform):
    name: ClassVar[str] = "sophgo"
    family: ClassVar[Family] = Family.NPU
    is_family_default: ClassVar[bool] = False
    description: ClassVar[str] = (
        f"Sophgo TPU model (tpu-mlir 1.30), checked in its cmodel simulator; "
        f"@CHIP: {', '.join(CHIPS)} (default {DEFAULT_CHIP})")
    precisions: ClassVar[tuple[Precision, ...]] = (
        Precision.FP16, Precision.INT8, Precision.BF16, Precision.FP32)
    # model_deploy --quantize_table, see the module docstring; F16 on the default chip.
    keeps_nodes_in_fp32: ClassVar[bool] = True
    kept_precision: ClassVar[str] = "fp16"
    requirements: ClassVar[Requirements] = Requirements(
        ops=ListedOps(TABLES / "sophgo_ops.txt",
                      source="tpu-mlir 1.30.2, OnnxConverter.onnxop_factory "
                             "(tables/sophgo_ops.txt)"),
        # Its graph optimiser (OnnxOpt.py) matches the Reduce* ops of opset 17 and older
        # (axes as an attribute) and stops on opset 18's ("Unsupport opset for ReduceMean").
        max_opset=17,
        static_shapes=True,  # model_transform takes one fixed shape per input
        source="tpu-mlir 1.30.2 (model_transform, model_deploy)",
    )

    @classmethod
    def is_available(cls) -> bool:
        return toolchain_status(TOOLCHAIN.name).state == "installed"

    def precisions_for(self, target: TargetSpec) -> TargetPrecisions:
        chip = (target.device or DEFAULT_CHIP).lower()
        if chip not in CHIP_PRECISIONS or CHIP_PRECISIONS[chip] == self.precisions:
            return TargetPrecisions(self.precisions)
        builds = CHIP_PRECISIONS[chip]
        return TargetPrecisions(builds, f"tpu-mlir builds {' and '.join(p.value for p in builds)} "
                                f"models for {chip}")

    def kept_precision_for(self, target: TargetSpec) -> str:
        chip = (target.device or DEFAULT_CHIP).lower()
        return KEPT_PRECISION[chip].value if chip in KEPT_PRECISION else self.kept_precision

    def preflight(self, model: OnnxInfo, target: TargetSpec) -> list[Problem]:
        return device_problems(target, CHIPS, "Sophgo chip")

    def build(self, onnx_path: Path, target: TargetSpec, out_dir: Path,
              options: BuildOptions) -> Artifact:
        chip = resolve_chip(target)
        precision = build_precision(self, target, options)
        env = require_toolchain(TOOLCHAIN.name, needed_for=f"npu:sophgo@{chip}")
        out_dir.mkdir(parents=True, exist_ok=True)
        model = onnx.load(str(onnx_path), load_external_data=False)
        info = describe(model)
        model_path = out_dir / ("model.cvimodel" if chip in CVI_CHIPS else "model.bmodel")
        settings: dict[str, Any] = {
            "model": model_path.name,
            "chip": chip,
            "precision": precision.value,
            "input_names": [t.name for t in info.inputs],
            "input_shapes": [list(t.dims) for t in info.inputs],
            "output_names": [t.name for t in info.outputs],
            "output_shapes": [list(t.dims) if all(isinstance(d, int) for d in t.dims)
                              else None for t in info.outputs],
            "output_dtypes": [t.dtype for t in info.outputs],
        }
        notes: list[str] = []
        files = [model_path, out_dir / SETTINGS_FILE]
        payload: dict[str, Any] = {
            "onnx": str(onnx_path.resolve()), "chip": chip, "quantize": QUANTIZE[precision],
            "input_shapes": settings["input_shapes"], "model": str(model_path.resolve()),
        }
        if precision == Precision.INT8:
            samples = calibration_samples(options, onnx_path, "int8 calibration")
            dataset = write_dataset(samples, settings["input_names"], out_dir / CALIBRATION_DIR)
            table = out_dir / "calibration_table.txt"
            payload.update(dataset=str(dataset.resolve()), samples=len(samples),
                           calibration_table=str(table.resolve()))
            files.extend([table, *sorted(dataset.iterdir())])
            notes.append(f"int8: symmetric, calibrated by tpu-mlir run_calibration on "
                         f"{len(samples)} sample(s) in {CALIBRATION_DIR}/ (table: {table.name})")
            notes.extend(calibration_notes(options))
            if options.keep_fp32:
                kept_mode = QUANTIZE[KEPT_PRECISION[chip]]
                payload.update(keep=op_candidates(model, options.keep_fp32),
                               keep_mode=kept_mode,
                               quantize_table=str((out_dir / QUANTIZE_TABLE).resolve()))
                files.append(out_dir / QUANTIZE_TABLE)
        with tempfile.TemporaryDirectory(prefix=".tpu-mlir-", dir=out_dir) as work:
            # model_transform and model_deploy write a dozen intermediate files (MLIR at
            # each stage, weights, profiles) into their working folder; only the model
            # file is kept.
            payload["work"] = work
            result = run_step(env, f"{STEP}:build", payload, what="the tpu-mlir build",
                              log_path=out_dir / BUILD_LOG, timeout_s=BUILD_TIMEOUT_S)
        settings["toolkit"] = f"tpu-mlir {result['toolkit']}"
        override: dict[str, Any] = {}
        if "ops" in result:
            override = kept_override(result["ops"], payload["keep_mode"], payload)
            settings["quantize_table"] = QUANTIZE_TABLE
            notes.append(kept_note(result["ops"], payload["keep_mode"]))
        (out_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        simulator = f"the tpu-mlir {result['toolkit']} cmodel simulator ({chip})"
        notes.append(f"built for {chip} at {precision.value} by tpu-mlir {result['toolkit']} "
                     f"(model_transform, model_deploy --quantize {QUANTIZE[precision]}); "
                     f"checked in {simulator}")
        return Artifact(str(target), model_path, precision, tuple(files), notes=tuple(notes),
                        checked_in=simulator, calibrated=precision == Precision.INT8,
                        override=override)

    def open(self, artifact: Artifact) -> SophgoSimulatorRunner:
        return SophgoSimulatorRunner(artifact.path.parent)


class SophgoSimulatorRunner(Runner):
    """The model of an artifact folder (its sophgo.json) in tpu-mlir's cmodel simulator."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.settings: dict[str, Any] = {}
        self._env: ToolchainEnv | None = None

    def __enter__(self) -> SophgoSimulatorRunner:
        self.settings = json.loads((self.folder / SETTINGS_FILE).read_text())
        self._env = require_toolchain(TOOLCHAIN.name, needed_for="the tpu-mlir simulator")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._env = None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.run_samples([feeds])[0]

    def run_samples(self, samples: Sequence[Mapping[str, np.ndarray]],
                    ) -> list[dict[str, np.ndarray]]:
        """Every sample through the simulator in one toolchain step."""
        assert self._env is not None, "use the runner inside a with block"
        settings = self.settings
        with tempfile.TemporaryDirectory(prefix="convertkit-sophgo-") as scratch:
            payload = {
                "model": str((self.folder / settings["model"]).resolve()),
                "feeds": str(Path(scratch, "samples.npz")),
                "outputs": str(Path(scratch, "outputs.npz")),
                "work": scratch,
                "output_names": settings["output_names"],
                "output_shapes": settings["output_shapes"],
                "output_dtypes": settings["output_dtypes"],
            }
            save_samples(Path(payload["feeds"]),
                         [{name: np.asarray(feeds[name]) for name in settings["input_names"]}
                          for feeds in samples])
            run_step(self._env, f"{STEP}:simulate", payload,
                     what="the tpu-mlir cmodel simulator", log_path=self.folder / BUILD_LOG,
                     timeout_s=BUILD_TIMEOUT_S)
            return load_samples(Path(payload["outputs"]))


def resolve_chip(target: TargetSpec) -> str:
    chip = (target.device or DEFAULT_CHIP).lower()
    if chip not in CHIPS:
        raise UsageError(f"unknown Sophgo chip {target.device!r}",
                         hint=f"write npu:sophgo@CHIP with one of: {', '.join(CHIPS)}",
                         code="unknown-device")
    return chip


def op_candidates(model: onnx.ModelProto, nodes: Sequence[str]) -> dict[str, list[str]]:
    """For each ONNX node, the names of the tpu-mlir op that may compute it, best first:
    its own (``TENSOR_TYPE``), then that of the Relu or Clip that alone consumes its
    output, which tpu-mlir fuses into it under the activation's name."""
    by_name = {node.name: node for node in model.graph.node}
    unknown = [name for name in nodes if name not in by_name]
    if unknown:
        raise ConversionError(f"the model has no node named {', '.join(unknown)}",
                              hint="keep nodes by their ONNX node names", code="unknown-node")
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    graph_outputs = {output.name for output in model.graph.output}
    candidates: dict[str, list[str]] = {}
    for name in nodes:
        node = by_name[name]
        names = [f"{node.output[0]}_{node.op_type}"]
        users = consumers.get(node.output[0], [])
        if (len(users) == 1 and users[0].op_type in FUSED_ACTIVATIONS
                and node.output[0] not in graph_outputs):
            names.append(f"{users[0].output[0]}_{users[0].op_type}")
        candidates[name] = names
    return candidates


def kept_override(ops: Mapping[str, str | None], mode: str, payload: Mapping[str, Any],
                  ) -> dict[str, Any]:
    """mixed_precision.json's ``override``: the quantize table, the op each kept ONNX node
    became (None: folded away), and the tpu-mlir commands that rebuild the model."""
    found = dict.fromkeys(op for op in ops.values() if op)
    shapes = "[" + ",".join("[" + ",".join(str(d) for d in shape) + "]"
                            for shape in payload["input_shapes"]) + "]"
    model = Path(payload["model"]).name
    return {"tpu-mlir": {
        "quantize_table": QUANTIZE_TABLE,
        "ops": {op: mode for op in found},
        "onnx_nodes": dict(ops),
        "how": f"model_transform.py --model_name model --model_def MODEL.onnx "
               f"--input_shapes {shapes} --mlir model.mlir; model_deploy.py --mlir model.mlir "
               f"--quantize INT8 --chip {payload['chip']} --calibration_table "
               f"calibration_table.txt --quantize_table {QUANTIZE_TABLE} --model {model} "
               "(MODEL.onnx: the ONNX model at opset 17 or lower)"}}


def kept_note(ops: Mapping[str, str | None], mode: str) -> str:
    found = list(dict.fromkeys(op for op in ops.values() if op))
    folded = [node for node, op in ops.items() if op is None]
    return (f"int8: {len(ops)} ONNX node(s) kept in {mode} by model_deploy --quantize_table "
            f"{QUANTIZE_TABLE}, as tpu-mlir op(s) {', '.join(found) or '(none)'}"
            + (f"; node(s) {', '.join(folded)} have no op of their own in the top MLIR "
               "(folded away)" if folded else ""))


def write_dataset(samples: list[dict[str, np.ndarray]], input_names: list[str],
                  folder: Path) -> Path:
    """The folder run_calibration reads (--dataset): one .npz per sample, each holding
    every model input under its ONNX name, in the ONNX layout."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for index, sample in enumerate(samples):
        save_arrays(folder / f"sample_{index:04d}.npz",
                    {name: np.asarray(sample[name]) for name in input_names})
    return folder
