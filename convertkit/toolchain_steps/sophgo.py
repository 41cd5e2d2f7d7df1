"""The Sophgo steps, run inside the ``sophgo`` toolchain environment (Python 3.10, see
convertkit.toolchains): only the stdlib, numpy, tpu-mlir and convertkit.errors may be
imported here.

tpu-mlir's tools are scripts (python/tools/model_transform.py, run_calibration.py,
model_deploy.py) that call its native passes (tpuc-opt, pymlir) and its cmodel simulator
(pyruntime_*), which find their libraries through LD_LIBRARY_PATH. The dynamic loader reads
that variable only when a process starts, so every tool runs as a child process with the
environment tpu-mlir's own envsetup (tpu_mlir/__init__.py) sets; the simulator runs in
such a child too (``python -m convertkit.toolchain_steps.sophgo simulate ...``), one child
per call, which runs every sample of it.

Samples come and go as convertkit's sample files (checker/samples.py): one .npz whose
arrays are named ``NNNNNN/NAME``, the sample's 6-digit index and the input or output name.

Mixed precision: model_deploy's ``--quantize_table`` lists ops (by their name in the top
MLIR) and the mode each is lowered in instead of ``--quantize``, one ``NAME MODE`` per line
(``#`` starts a comment). The build matches the names the platform proposes for each kept
ONNX node against the ops of the top MLIR that model_transform wrote, and writes the table
of the ops found.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from convertkit.errors import ConversionError
from convertkit.sample_files import load_samples, save_samples

MODEL_NAME = "model"
CALIBRATION_TABLE = "calibration_table"
_ERROR_LINE = re.compile(r"(Error|error:|not support|UNREACHABLE|Assertion|Traceback)")


def tpu_mlir_root() -> Path:
    spec = importlib.util.find_spec("tpu_mlir")
    if spec is None or spec.origin is None:
        raise ConversionError("tpu-mlir is not installed in this environment",
                              hint="repair it with `convertkit toolchains install sophgo "
                                   "--force`", code="broken-toolchain-sophgo")
    return Path(spec.origin).parent


def tpu_mlir_version() -> str:
    from importlib.metadata import version

    return version("tpu_mlir")


def tool_environment(root: Path) -> dict[str, str]:
    """The variables tpu_mlir/__init__.py sets for its tools (tpu-mlir's envsetup): their
    scripts and binaries on PATH and PYTHONPATH, its libraries and the cmodel simulator's
    on LD_LIBRARY_PATH, TPUC_ROOT (where the tools find their chip libraries) and the
    PPL kernel compiler's folders."""
    ppl = root / "cross_toolchains" / "ppl_compile"

    def joined(*parts: Path | str | None) -> str:
        return os.pathsep.join(str(p) for p in parts if p)

    env = dict(os.environ)
    env["PATH"] = joined(root / "bin", root / "python" / "tools", root / "python" / "utils",
                         root / "python" / "test", root / "python" / "samples",
                         root / "customlayer" / "python", ppl / "bin", env.get("PATH"))
    env["PYTHONPATH"] = joined(root, root / "python", root / "regression",
                               root / "customlayer" / "python", env.get("PYTHONPATH"))
    env["LD_LIBRARY_PATH"] = joined(root / "lib", root / "lib" / "capi",
                                    root / "lib" / "third_party", env.get("LD_LIBRARY_PATH"))
    env["TPUC_ROOT"] = str(root)
    env["PPL_PROJECT_ROOT"] = str(ppl)
    env["PPL_BUILD_PATH"] = str(root / "build" / "ppl")
    env["PPL_RUNTIME_PATH"] = str(ppl / "deps")
    env["TPUKERNEL_CUSTOM_FIRMWARE_PATH"] = str(root / "lib" / "libcmodel_custom.so")
    env["CUSTOM_LAYER_UNITTEST_DIR"] = str(root / "customlayer" / "test_if" / "unittest")
    env.setdefault("OMP_NUM_THREADS", "4")
    return env


def run_tool(command: list[str], cwd: Path, env: dict[str, str], what: str) -> None:
    """Run one tpu-mlir tool; its output goes to this step's log. A failure becomes a
    ConversionError naming the tool's own last error line."""
    print(f"$ {' '.join(command)}", flush=True)
    tail: deque[str] = deque(maxlen=400)
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                               errors="replace")
    assert process.stdout is not None
    for line in process.stdout:
        sys.stdout.write(line)
        tail.append(line.rstrip())
    returncode = process.wait()
    sys.stdout.flush()
    if returncode == 0:
        return
    errors = [line.strip() for line in tail if _ERROR_LINE.search(line)]
    unsupported = [line for line in errors if "Op not support" in line]
    if unsupported:
        raise ConversionError(f"{what}: tpu-mlir {unsupported[-1]}",
                              hint="replace the operator in the model, or pick another target",
                              code="unsupported-op")
    last = (errors or [line.strip() for line in tail if line.strip()] or ["(no output)"])[-1]
    raise ConversionError(f"{what} failed (exit status {returncode}): {last[:300]}",
                          hint="the tool's full output is in the log", code="toolchain-failed")


def build(payload: dict[str, Any]) -> dict[str, Any]:
    """ONNX -> top MLIR (model_transform) -> calibration table for int8 (run_calibration)
    -> .bmodel / .cvimodel for the chip (model_deploy), all inside ``payload['work']``."""
    root = tpu_mlir_root()
    env = tool_environment(root)
    tools = root / "python" / "tools"
    work = Path(payload["work"])
    work.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    mlir = f"{MODEL_NAME}.mlir"
    shapes = "[" + ",".join("[" + ",".join(str(d) for d in shape) + "]"
                            for shape in payload["input_shapes"]) + "]"
    run_tool([python, str(tools / "model_transform.py"), "--model_name", MODEL_NAME,
              "--model_def", payload["onnx"], "--input_shapes", shapes, "--mlir", mlir],
             work, env, "tpu-mlir model_transform (ONNX to MLIR)")
    # Both tools write files beside their output (model.bmodel.json, a profile,
    # shape_pattern_qtable...): they write into the work folder, and only the model and
    # the calibration table move out.
    model = work / Path(payload["model"]).name
    deploy = [python, str(tools / "model_deploy.py"), "--mlir", mlir,
              "--quantize", payload["quantize"], "--chip", payload["chip"],
              "--model", model.name]
    if payload.get("dataset"):
        run_tool([python, str(tools / "run_calibration.py"), mlir,
                  "--dataset", payload["dataset"], "--input_num", str(payload["samples"]),
                  "-o", CALIBRATION_TABLE],
                 work, env, "tpu-mlir run_calibration (int8 calibration)")
        deploy += ["--calibration_table", CALIBRATION_TABLE]
        shutil.copyfile(work / CALIBRATION_TABLE, payload["calibration_table"])
    result: dict[str, Any] = {"toolkit": tpu_mlir_version()}
    if payload.get("keep"):
        ops = kept_ops(mlir_op_names((work / mlir).read_text()), payload["keep"])
        table = Path(payload["quantize_table"])
        table.write_text(quantize_table(ops, payload["keep_mode"]))
        deploy += ["--quantize_table", str(table)]
        result["ops"] = ops
    run_tool(deploy, work, env,
             f"tpu-mlir model_deploy ({payload['chip']}, {payload['quantize']})")
    if not model.is_file():
        raise ConversionError(f"tpu-mlir model_deploy wrote no {model.name}",
                              hint="the tool's full output is in the log",
                              code="toolchain-failed")
    shutil.move(model, payload["model"])
    return result


# A location line of the MLIR, `#loc7 = loc("relu_Relu")`; an op with several outputs has
# a fused one, which lists names or other such lines.
_LOCATION_LINE = re.compile(r'^#loc\d+\s*=\s*loc\((.*)\)\s*$', re.MULTILINE)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def mlir_op_names(mlir: str) -> set[str]:
    """Every name the MLIR's locations give (ops, weights, inputs)."""
    return {name for body in _LOCATION_LINE.findall(mlir) for name in _QUOTED.findall(body)}


def kept_ops(names: set[str], keep: dict[str, list[str]]) -> dict[str, str | None]:
    """For each kept ONNX node, the first of its candidate op names the MLIR holds (None:
    none, the node was folded away)."""
    return {node: next((c for c in candidates if c in names), None)
            for node, candidates in keep.items()}


def quantize_table(ops: dict[str, str | None], mode: str) -> str:
    """model_deploy's --quantize_table: each op once, in ``mode``. An op's name comes from
    the model's tensor names: one that is not a single word (whitespace, a newline, a
    leading #) would add or hide lines of the table, so it is refused."""
    for op in ops.values():
        if op and (op.split() != [op] or op.startswith("#") or not op.isprintable()):
            raise ConversionError(f"tpu-mlir op {op!r} cannot be written into a quantize "
                                  "table (its name is not a single word)",
                                  hint="rename the ONNX tensor, or build in pure int8 "
                                       "(--no-mixed-precision)", code="bad-op-name")
    lines = ["# tpu-mlir quantize table, written by convertkit (mixed precision): the ops",
             f"# listed run in {mode}, every other op as --quantize says.",
             "# op_name quantize_mode"]
    lines += [f"{op} {mode}" for op in dict.fromkeys(op for op in ops.values() if op)]
    return "\n".join(lines) + "\n"


def simulate(payload: dict[str, Any]) -> dict[str, Any]:
    """Run the model file in tpu-mlir's cmodel simulator on every sample of
    ``payload['feeds']`` (a samples file, inputs named after the ONNX inputs) and write
    their outputs, named after the ONNX outputs, to ``payload['outputs']`` (a samples
    file)."""
    env = tool_environment(tpu_mlir_root())
    # The folder this convertkit package was imported from (run_step's scratch folder),
    # so that the child can import this module too.
    package_parent = str(Path(__file__).parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env["PYTHONPATH"], package_parent) if p)
    run_tool([sys.executable, "-m", __name__, "simulate", json.dumps(payload)],
             Path(payload["work"]), env, "the tpu-mlir cmodel simulator")
    return {"toolkit": tpu_mlir_version()}


class _BmodelSession:
    """A .bmodel loaded once in the cmodel simulator and run sample after sample: what
    model_runner.model_inference does for one sample (its _model_inference, 1.30.2), less
    loading the model again and writing a board "pack" at every call, which made it three
    times slower (2.9 s against 0.9 s a sample for the digits CNN on bm1684x)."""

    def __init__(self, model_file: str) -> None:
        import importlib

        from filelock import FileLock  # tpu-mlir's dependency
        from tools.model_runner import (
            bind_cmodel_so,
            get_chip_from_model,
            get_kernel_mode_from_model,
            link_bmlib_so,
            link_cmodel_so,
            link_custom_so,
        )

        chip = get_chip_from_model(model_file)
        runtime = "pyruntime_tpuv7" if chip in ("BM1690", "SG2262", "BM1690E") else \
            "pyruntime_bm"
        is_rvti = get_kernel_mode_from_model(model_file) == "1"
        with FileLock("/tmp/cmodel_so.lock"):  # model_runner switches its links under it
            link_cmodel_so(chip, is_rvti)
            link_custom_so(chip)
            link_bmlib_so(chip)
            library = importlib.import_module(runtime)
            bind_cmodel_so(chip, is_rvti)
        self._model = library.Model(model_file, 0, "")
        self._net = self._model.Net(self._model.networks[0])

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from tpu_mlir.python.utils.lowering import bf16_to_fp32, lowering

        net = self._net
        shapes = []
        for tensor in net.inputs:
            value = np.asarray(feeds[tensor.name] if len(feeds) > 1
                               else next(iter(feeds.values())))
            shapes.append(value.shape)
            tensor.data.reshape(-1)[:value.size] = lowering(
                value, pdtype=tensor.dtype, pshape=value.shape,
                pzero_point=tensor.qzero_point, pscale=tensor.qscale).flatten()
        output_shapes = net.forward_dynamic(shapes)
        outputs: dict[str, np.ndarray] = {}
        for tensor, shape in zip(net.outputs, output_shapes, strict=True):
            data = tensor.data
            if data.dtype in (np.int8, np.uint8) and tensor.qscale != 0:
                value = (data.astype(np.float32) - tensor.qzero_point) * \
                    np.float32(tensor.qscale)
            elif tensor.dtype == "bf16":
                value = bf16_to_fp32(data)
            else:
                value = np.array(data, dtype=np.float32 if tensor.dtype in ("u16", "f16")
                                 else data.dtype)
            if list(value.shape) != list(shape):
                value = value.flatten()[:int(np.prod(shape))].reshape(shape)
            outputs[tensor.name] = value
        return outputs


def _simulate_here(payload: dict[str, Any]) -> None:
    """Every sample through the simulator, in a process started with tpu-mlir's
    environment."""
    # model_inference writes a copy of the model and its inputs (a "pack" for a board)
    # into a folder named after the model file: point it at a link in the scratch folder.
    model = Path(payload["work"], "simulated" + Path(payload["model"]).suffix)
    model.symlink_to(payload["model"])
    if model.suffix == ".bmodel":
        session = _BmodelSession(str(model))
        infer = session.run
    else:
        from tools.model_runner import model_inference  # tpu_mlir/python/tools on PYTHONPATH

        def infer(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return model_inference(feeds, str(model), dump_all=False)
    names = payload["output_names"]
    result: dict[int, dict[str, np.ndarray]] = {}
    for index, feeds in enumerate(load_samples(payload["feeds"])):
        outputs = infer(feeds)
        if len(outputs) != len(names):
            raise SystemExit(f"error: the model gave {len(outputs)} outputs "
                             f"({', '.join(outputs)}), the ONNX model has {len(names)}")
        for name, shape, dtype, value in zip(names, payload["output_shapes"],
                                             payload["output_dtypes"], outputs.values(),
                                             strict=True):
            value = np.asarray(value)
            if shape is not None and value.size == int(np.prod(shape)):
                value = value.reshape(shape)  # cvimodels report 4-D shapes
            result.setdefault(index, {})[name] = value.astype(dtype) if dtype else value
    save_samples(payload["outputs"], [result[i] for i in sorted(result)])


if __name__ == "__main__":
    if sys.argv[1:2] != ["simulate"]:
        raise SystemExit("usage: python -m convertkit.toolchain_steps.sophgo simulate PAYLOAD")
    _simulate_here(json.loads(sys.argv[2]))
