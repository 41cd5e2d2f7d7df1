"""`cpu:openvino`: an OpenVINO IR (model.xml + model.bin) for Intel and other x86 CPUs.

- fp32: the IR as OpenVINO's ONNX frontend converts it (weights kept in fp32), run with
  the f32 precision hint. OpenVINO's default hint on a CPU with bf16 is bf16 (DESIGN.md),
  so the hint is always set explicitly and written to compile.json beside the IR.
- bf16: the same IR run with the bf16 hint, only on a CPU that reports BF16.
- int8: the IR quantised by NNCF (post-training, calibrated on the check inputs or
  --data), run with the f32 hint so the check measures quantisation alone.
- int8 for a decoder with a KV cache, and int4: weight-only, data-free, by NNCF's
  compress_weights (WEIGHT_COMPRESSION), run with the f32 hint and the CPU plugin's
  dynamic quantisation of the compressed MatMuls' activations (per group of 32): decoding
  reads a quarter (int8) or an eighth (int4) of fp32's weight bytes.

The conversion and NNCF run in a child process: the ONNX frontend can crash on graphs
it does not expect, and NNCF imports torch and prints progress bars. openvino and nncf
are imported only inside functions (`convertkit --help` loads neither).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from convertkit.checker.inputs import cast_feeds
from convertkit.checker.samples import save_samples
from convertkit.dependencies import require
from convertkit.errors import ConversionError, ConvertkitError, first_line
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
from convertkit.platforms.calibration import calibration_notes, calibration_samples
from convertkit.spec import Family, Precision, TargetSpec

log = logging.getLogger(__name__)

COMPILE_FILE = "compile.json"
BUILD_LOG = "build.log"
# INFERENCE_PRECISION_HINT per precision: int8 keeps its unquantised ops in f32.
PRECISION_HINTS = {Precision.FP32: "f32", Precision.BF16: "bf16", Precision.INT8: "f32",
                   Precision.INT4: "f32"}
# nncf.compress_weights per precision (weight-only). int4: INT4_SYM in groups of 32
# weights (NNCF keeps the embeddings and the last MatMul in its INT8_ASYM backup); on a
# random GPT-2-small, group 32 kept the logits at cosine 0.968 against 0.960 for NNCF's
# default 128 (INT4_ASYM 128: 0.957, and slower) and decoded as fast.
# The CPU plugin's own default for compressed weights (OpenVINO 2026.4), set explicitly:
# activations quantised to int8 per group at run time, like ONNX Runtime's accuracy level 4.
DYNAMIC_QUANTIZATION_GROUP_SIZE = 32
WEIGHT_COMPRESSION: dict[Precision, dict[str, Any]] = {
    Precision.INT8: {"mode": "int8_asym"},
    Precision.INT4: {"mode": "int4_sym", "group_size": 32},
}
# Domains whose operators are probed (below); OpenVINO also converts some com.microsoft
# ops, which are left for the build to judge: probing them crashes the frontend.
PROBED_DOMAINS = ("", "ai.onnx.ml")
PROBE_TIMEOUT_S = 120
BUILD_TIMEOUT_S = 3600


@dataclass(frozen=True)
class OpenVinoFrontendOps:
    """The ONNX operators OpenVINO's ONNX frontend has a converter for.

    OpenVINO exposes no list of them (FrontEnd has load/convert/convert_partially/decode/
    normalize/supported only), so they are read from the frontend itself: a probe graph
    holding one node of every operator the onnx package defines at the opset is converted
    with ``convert_partially``, which leaves a node without a converter as an
    ``ONNXFrameworkNode`` (a node whose converter rejects the probe's dummy inputs becomes
    a ``NotSupportedONNXNode`` and counts as supported). The probe runs in a child process
    once per opset. Operators of other domains are not probed and pass; the build reports
    them if the frontend lacks them.
    """

    source: str = field(default=(
        "OpenVINO's ONNX frontend, probed per opset with convert_partially (ops left as "
        "ONNXFrameworkNode have no converter); documented list: https://github.com/"
        "openvinotoolkit/openvino/blob/master/src/frontends/onnx/docs/supported_ops.md"))

    def supports(self, domain: str, op_type: str, version: int) -> bool:
        domain = "" if domain == "ai.onnx" else domain
        if domain not in PROBED_DOMAINS:
            return True
        missing = _unconvertible_ops(version if domain == "" else _newest_opset())
        if missing is None:  # the probe itself failed: let the build judge
            return True
        return (domain, op_type) not in missing

    def table(self) -> list[tuple[str, str, str]]:
        from onnx import defs

        opset = _newest_opset()
        missing = _unconvertible_ops(opset) or set()
        names = sorted({(s.domain, s.name) for s in defs.get_all_schemas_with_history()
                        if s.domain in PROBED_DOMAINS and not s.deprecated})
        return [(domain or "ai.onnx", name, f"converter at opset {opset}")
                for domain, name in names if (domain, name) not in missing]


class OpenVinoCpuPlatform(Platform):
    name: ClassVar[str] = "openvino"
    family: ClassVar[Family] = Family.CPU
    is_family_default: ClassVar[bool] = False
    keeps_nodes_in_fp32: ClassVar[bool] = True  # NNCF's ignored_scope
    description: ClassVar[str] = ("OpenVINO IR (model.xml/.bin) for the CPU: fp32 (f32 hint), "
                                  "bf16 where the CPU has it, int8 by NNCF (weight-only "
                                  "for decoders), int4 weight-only")
    precisions: ClassVar[tuple[Precision, ...]] = (Precision.FP32, Precision.BF16,
                                                   Precision.INT8, Precision.INT4)
    requirements: ClassVar[Requirements] = Requirements(
        ops=OpenVinoFrontendOps(), min_opset=7,
        source="OpenVINO's ONNX frontend (probed), see `convertkit targets --ops cpu:openvino`")

    @classmethod
    def is_available(cls) -> bool:
        return is_installed("openvino")

    def preflight(self, model: OnnxInfo, target: TargetSpec) -> list[Problem]:
        if target.device not in (None, "x86", "x86_64", "arm64", "aarch64"):
            return [Problem(f"unknown CPU device {target.device!r}")]
        return []

    def build(self, onnx_path: Path, target: TargetSpec, out_dir: Path,
              options: BuildOptions) -> Artifact:
        precision = build_precision(self, target, options)
        if precision == Precision.BF16 and not cpu_has_bf16():
            raise ConversionError(
                "this CPU does not report BF16 to OpenVINO, so a bf16 build cannot run here",
                hint="build at fp32 or int8, or on a CPU with AVX512_BF16 or AMX",
                code="no-bf16")
        out_dir.mkdir(parents=True, exist_ok=True)
        xml = out_dir / "model.xml"
        from convertkit.platforms.cpu import is_decoder

        weights_only = (precision == Precision.INT4
                        or (precision == Precision.INT8 and is_decoder(onnx_path)))
        result = convert_to_ir(onnx_path, xml, precision, options, weights_only=weights_only)
        notes = result["notes"]
        if weights_only:
            notes.append(f"{precision.value}: the CPU plugin quantises the activations of the "
                         "compressed MatMuls to int8 at run time, per group of "
                         f"{DYNAMIC_QUANTIZATION_GROUP_SIZE} (DYNAMIC_QUANTIZATION_GROUP_SIZE, "
                         f"its default, written to {COMPILE_FILE}); the other ops run at the "
                         "f32 hint")
        elif precision == Precision.INT8:
            notes.append("int8: the ops NNCF left unquantised run at the f32 hint")
        hint = PRECISION_HINTS[precision]
        config = {"INFERENCE_PRECISION_HINT": hint}
        if weights_only:
            config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = str(DYNAMIC_QUANTIZATION_GROUP_SIZE)
        settings = {
            "device": "CPU",
            "config": config,
            "outputs": result["outputs"],
            "python": "compiled = openvino.Core().compile_model('model.xml', 'CPU', "
                      f"{config!r})",
        }
        (out_dir / COMPILE_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        notes.append(f"compile with INFERENCE_PRECISION_HINT={hint} (written to {COMPILE_FILE}); "
                     "OpenVINO's own default on a bf16-capable CPU is bf16")
        files = (xml, xml.with_suffix(".bin"), out_dir / COMPILE_FILE)
        how = ("nncf.quantize(openvino.convert_model('model.onnx'), dataset, "
               "subset_size=N, ignored_scope=nncf.IgnoredScope(names=names))")
        if weights_only:
            how = (f"nncf.compress_weights(openvino.convert_model('model.onnx'), "
                   f"{_compression_text(precision)}, "
                   "ignored_scope=nncf.IgnoredScope(names=names))")
        override = ({"nncf": {"ignored_scope": {"names": result["ignored"]},
                              "onnx_nodes": list(options.keep_fp32), "how": how}}
                    if options.keep_fp32 else {})
        return Artifact(str(target), xml, precision, files, notes=tuple(notes),
                        calibrated=precision == Precision.INT8 and not weights_only,
                        override=override)

    def open(self, artifact: Artifact) -> OpenVinoRunner:
        settings = json.loads((artifact.path.parent / COMPILE_FILE).read_text())
        return OpenVinoRunner(artifact.path, settings["config"], settings.get("outputs", []))


def convert_to_ir(onnx_path: Path, xml: Path, precision: Precision, options: BuildOptions,
                  *, compress_to_fp16: bool = False,
                  weights_only: bool = False) -> dict[str, Any]:
    """Convert ``onnx_path`` to the IR ``xml`` (+ .bin) in a child process, quantised by
    NNCF for int8 (``weights_only``: its weights compressed, WEIGHT_COMPRESSION, no
    calibration). Returns {"notes": [...], "outputs": [ONNX output names]}. Shared by
    `cpu:openvino` and `npu:intel`; ``compress_to_fp16`` stores the weights in fp16."""
    from convertkit.isolation import run_in_child
    from convertkit.platforms.cpu import is_transformer_like

    out_dir = xml.parent
    payload: dict[str, Any] = {"onnx": str(onnx_path), "xml": str(xml),
                               "precision": precision.value,
                               "compress_to_fp16": compress_to_fp16}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix=".calibration-", dir=out_dir) as scratch:
        if weights_only:
            payload.update(compress=WEIGHT_COMPRESSION[precision],
                           keep_fp32=list(options.keep_fp32))
            notes.append(f"{precision.value}: weight-only: NNCF "
                         f"compress_weights({_compression_text(precision)}), data-free: no "
                         "calibration, nothing tuned on samples")
        elif precision == Precision.INT8:
            calibration = Path(scratch, "calibration.npz")
            samples = calibration_samples(options, onnx_path, "int8 calibration")
            save_samples(calibration, samples)
            transformer, why = is_transformer_like(onnx_path)
            payload.update(calibration=str(calibration), transformer=transformer,
                           keep_fp32=list(options.keep_fp32))
            notes.append("int8: NNCF post-training quantisation"
                         + (" with model_type=TRANSFORMER" if transformer else "")
                         + f" ({why})")
            notes.extend(calibration_notes(options))
        result = run_in_child("convertkit.platforms.openvino:build_in_child", payload,
                              what="the OpenVINO build", log_path=out_dir / BUILD_LOG,
                              timeout_s=BUILD_TIMEOUT_S)
    return {"notes": notes + result["notes"], "outputs": result["outputs"],
            "ignored": result.get("ignored", [])}


# Ops that compute nothing: never exposed or compared.
NON_COMPUTING_OPS = {"Parameter", "Result", "Constant"}


class OpenVinoRunner(Runner):
    """An IR compiled for the CPU (or ``device``: `npu:intel` passes "NPU") with the
    configuration its compile.json names. ``threads`` > 0 sets INFERENCE_NUM_THREADS; 0
    leaves OpenVINO's default."""

    def __init__(self, xml_path: Path, config: Mapping[str, str],
                 output_names: list[str] | tuple[str, ...] = (), threads: int = 0,
                 expose_all: bool = False, device: str = "CPU") -> None:
        self.xml_path = xml_path
        self.device = device
        self.config = dict(config)
        self.output_names = list(output_names)
        self.threads = threads
        # Every named op output becomes an output too (localisation), reported under each
        # of its names so that whatever name the other side uses matches.
        self.expose_all = expose_all
        self._compiled = None
        self._input_types: dict[str, str] = {}

    def __enter__(self) -> OpenVinoRunner:
        from convertkit.checker.runners import import_openvino

        ov = import_openvino()
        config = dict(self.config)
        if self.threads > 0:
            config["INFERENCE_NUM_THREADS"] = self.threads
        try:
            core = ov.Core()
            model = core.read_model(str(self.xml_path))
            if self.expose_all:
                model.add_outputs([port for op in model.get_ordered_ops()
                                   if op.get_type_name() not in NON_COMPUTING_OPS
                                   for port in op.outputs() if port.get_names()])
            self._compiled = core.compile_model(model, self.device, config)
        except RuntimeError as exc:
            raise ConversionError(f"OpenVINO cannot compile {self.xml_path.name}: "
                                  f"{first_line(exc)}",
                                  hint="check that model.bin belongs to model.xml",
                                  code="runtime-load-failed") from exc
        self._input_types = {}
        for port in self._compiled.inputs:
            for name in port.get_names():
                self._input_types[name] = _dtype_name(port.get_element_type())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._compiled = None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._compiled is not None, "use the runner inside a with block"
        try:
            results = self._compiled(cast_feeds(feeds, self._input_types))
        except RuntimeError as exc:
            raise ConversionError(f"OpenVINO failed to run the model: {first_line(exc)}",
                                  hint="check the input shapes and dtypes against the model's",
                                  code="runtime-failed") from exc
        wanted = set(self.output_names)
        outputs: dict[str, np.ndarray] = {}
        for port, value in results.items():
            names = sorted(port.get_names())
            if self.expose_all:
                for name in names:
                    outputs.setdefault(name, np.asarray(value))
                continue
            name = next((n for n in names if n in wanted), None) or port.get_any_name()
            outputs[name] = np.asarray(value)
        return outputs


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin reports BF16 among its capabilities."""
    from convertkit.checker.runners import import_openvino

    ov = import_openvino()
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def build_in_child(payload: dict[str, Any]) -> dict[str, Any]:
    """Child process: convert the ONNX model, quantise it for int8, save the IR."""
    import onnx
    import openvino as ov

    try:
        model = ov.convert_model(payload["onnx"])
    except Exception as exc:  # OpConversionFailure and friends
        raise ConversionError(f"OpenVINO's ONNX frontend cannot convert the model: "
                              f"{_conversion_summary(exc)}",
                              hint="`convertkit inspect MODEL -t cpu:openvino` lists the ops it "
                                   "lacks; try another --opset",
                              code="openvino-convert-failed") from exc
    notes = []
    ignored: list[str] = []
    if payload.get("compress"):
        ignored = openvino_names(model, onnx.load(payload["onnx"], load_external_data=False),
                                 payload.get("keep_fp32", []))
        model, summary = _compress_with_nncf(model, payload["compress"], ignored)
        notes.append(f"NNCF {_version('nncf')}: {summary}")
        if ignored:
            notes.append(f"{payload['precision']}: {len(payload['keep_fp32'])} ONNX node(s) "
                         f"kept in fp32 by NNCF's ignored_scope, as OpenVINO op(s) "
                         f"{', '.join(ignored)}")
    elif payload["precision"] == Precision.INT8.value:
        ignored = openvino_names(model, onnx.load(payload["onnx"], load_external_data=False),
                                 payload.get("keep_fp32", []))
        model = _quantize_with_nncf(model, payload, ignored)
        notes.append(f"NNCF {_version('nncf')}")
        if ignored:
            notes.append(f"int8: {len(payload['keep_fp32'])} ONNX node(s) kept in fp32 by "
                         f"NNCF's ignored_scope, as OpenVINO op(s) {', '.join(ignored)}")
    compress = bool(payload.get("compress_to_fp16", False))
    ov.save_model(model, payload["xml"], compress_to_fp16=compress)
    graph = onnx.load(payload["onnx"], load_external_data=False).graph
    weights = ("weights stored in fp16 (compress_to_fp16=True)" if compress else
               "weights kept in fp32 (compress_to_fp16=False)")
    return {"notes": [f"OpenVINO {ov.__version__.split('-')[0]}, {weights}", *notes],
            "outputs": [o.name for o in graph.output], "ignored": ignored}


def openvino_names(model, onnx_model, nodes: list[str]) -> list[str]:
    """The OpenVINO ops the ONNX frontend made of the ONNX ``nodes``. It names an op after
    its ONNX node, or the node's name plus a suffix when one node becomes several (a Conv
    with a bias: ``node/WithoutBiases`` and the Add ``node``); an op that writes a graph
    output may take the output's name instead, so ops are also matched by the tensor
    names they write."""
    wanted = set(nodes)
    outputs = {name: node.name for node in onnx_model.graph.node if node.name in wanted
               for name in node.output if name}
    found = []
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        written = {tensor for port in op.outputs() for tensor in port.get_names()}
        matches = (name in wanted or name.split("/", 1)[0] in wanted
                   or any(outputs.get(tensor) for tensor in written))
        if matches and op.get_type_name() not in NON_COMPUTING_OPS:
            found.append(name)
    return found


def _quantize_with_nncf(model, payload: dict[str, Any], ignored: list[str]):
    nncf = require("nncf", name="NNCF", extra="openvino", needed_for="OpenVINO int8 needs it")
    from convertkit.checker.samples import load_samples

    calibration = load_samples(Path(payload["calibration"]))
    types = {}
    for port in model.inputs:
        name = port.get_any_name()
        if name not in calibration[0]:
            raise ConversionError(f"int8 calibration: the sample inputs have no array for {name}",
                                  hint="name each array in the .npz after the model input",
                                  code="no-calibration-data")
        types[name] = _dtype_name(port.get_element_type())
    samples = [cast_feeds(sample, types) for sample in calibration]
    options: dict[str, Any] = {"subset_size": len(samples)}
    if payload.get("transformer"):
        options["model_type"] = nncf.ModelType.TRANSFORMER
    if ignored:
        options["ignored_scope"] = nncf.IgnoredScope(names=ignored)
    try:
        return nncf.quantize(model, nncf.Dataset(samples), **options)
    except ConvertkitError:
        raise
    except Exception as exc:
        raise ConversionError(f"NNCF could not quantise the model: {first_line(exc)}",
                              hint="build at fp32 or bf16 instead", code="quantization-failed",
                              ) from exc


def _compression_text(precision: Precision) -> str:
    """'mode=INT4_SYM, group_size=32' for the notes."""
    settings = WEIGHT_COMPRESSION[precision]
    return ", ".join(f"{key}={value.upper() if key == 'mode' else value}"
                     for key, value in settings.items())


def _compress_with_nncf(model, settings: Mapping[str, Any], ignored: list[str]):
    """The model with its weights compressed by nncf.compress_weights, and what became of
    them ("14 i4 constant(s), 4 u8 constant(s) ...")."""
    nncf = require("nncf", name="NNCF", extra="openvino",
                   needed_for="OpenVINO weight-only int8/int4 needs it")
    options: dict[str, Any] = {"mode": nncf.CompressWeightsMode(settings["mode"])}
    if "group_size" in settings:
        options["group_size"] = settings["group_size"]
    if ignored:
        options["ignored_scope"] = nncf.IgnoredScope(names=ignored)
    before = _low_bit_constants(model)
    try:
        compressed = nncf.compress_weights(model, **options)
    except ConvertkitError:
        raise
    except Exception as exc:
        raise ConversionError(f"NNCF could not compress the weights: {first_line(exc)}",
                              hint="build at fp32 instead", code="quantization-failed",
                              ) from exc
    after = _low_bit_constants(compressed)
    kinds = {kind: after[kind] - before.get(kind, 0) for kind in after
             if after[kind] > before.get(kind, 0)}
    if not kinds:
        raise ConversionError("weight-only compression: NNCF found no weight to compress",
                              hint="build at fp32, or int8 for a model with convolutions",
                              code="nothing-to-quantize")
    summary = (", ".join(f"{count} {kind} constant(s)" for kind, count in sorted(kinds.items()))
               + " (the weights, and the zero points of asymmetric ones)")
    return compressed, summary


def _low_bit_constants(model) -> dict[str, int]:
    """How many constants of ``model`` hold 4- or 8-bit integers, by element type."""
    kinds: dict[str, int] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Constant":
            kind = op.get_output_element_type(0).get_type_name()
            if kind in ("i4", "u4", "i8", "u8"):
                kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def _dtype_name(element_type) -> str:
    """numpy's name for an OpenVINO element type ("" for one numpy lacks)."""
    try:
        return np.dtype(element_type.to_dtype()).name
    except (TypeError, RuntimeError):
        return ""


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "?"


@functools.cache
def _newest_opset() -> int:
    from convertkit.ir.opset import newest_known_opset

    return newest_known_opset()


@functools.cache
def _unconvertible_ops(opset: int) -> frozenset[tuple[str, str]] | None:
    """(domain, op_type) pairs of PROBED_DOMAINS without a converter at ``opset``; None
    when the probe could not run."""
    from convertkit.isolation import run_in_child

    if not is_installed("openvino"):
        return None
    with tempfile.TemporaryDirectory(prefix="convertkit-ov-probe-") as scratch:
        try:
            result = run_in_child("convertkit.platforms.openvino:probe_ops_in_child",
                                  {"opset": opset, "folder": scratch},
                                  what="the OpenVINO operator probe",
                                  log_path=Path(scratch, "probe.log"),
                                  timeout_s=PROBE_TIMEOUT_S)
        except ConvertkitError as error:
            log.warning("could not probe OpenVINO's ONNX frontend: %s", error.message)
            return None
    return frozenset((domain, op) for domain, op in result["missing"])


def probe_ops_in_child(payload: dict[str, Any]) -> dict[str, Any]:
    """Child process: which operators of PROBED_DOMAINS OpenVINO's ONNX frontend cannot
    convert at payload["opset"] (see OpenVinoFrontendOps)."""
    import onnx
    from onnx import TensorProto, defs, helper
    from openvino.frontend import FrontEndManager

    opset = payload["opset"]
    newest: dict[tuple[str, str], defs.OpSchema] = {}
    for schema in defs.get_all_schemas_with_history():
        if schema.domain not in PROBED_DOMAINS or schema.deprecated:
            continue
        if schema.domain == "" and schema.since_version > opset:
            continue
        key = (schema.domain, schema.name)
        if key not in newest or newest[key].since_version < schema.since_version:
            newest[key] = schema
    nodes, outputs, owner = [], [], {}
    for index, ((domain, name), schema) in enumerate(sorted(newest.items())):
        # As many inputs as the schema requires: converters index their inputs unchecked.
        count = max(schema.min_input, 1) if schema.max_input > 0 else 0
        names = [f"probe{index}_out{j}" for j in range(max(schema.min_output, 1))]
        nodes.append(helper.make_node(name, ["x"] * count, names, name=f"probe{index}",
                                      domain=domain))
        outputs.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
        owner.update({n: (domain, name) for n in names})
    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 1, 4, 4])], outputs)
    ml_opset = max(s.since_version for (d, _), s in newest.items() if d == "ai.onnx.ml")
    imports = [helper.make_opsetid("", opset), helper.make_opsetid("ai.onnx.ml", ml_opset)]
    path = Path(payload["folder"], "probe.onnx")
    onnx.save(helper.make_model(graph, opset_imports=imports), str(path))
    frontend = FrontEndManager().load_by_framework("onnx")
    converted = frontend.convert_partially(frontend.load(str(path)))
    missing = set()
    for op in converted.get_ordered_ops():
        if op.get_type_name() == "ONNXFrameworkNode":
            for port in op.outputs():
                for tensor in port.get_names():
                    if tensor in owner:
                        missing.add(owner[tensor])
    print(f"probed {len(newest)} ops at opset {opset}: {len(missing)} without a converter",
          file=sys.stderr)
    return {"missing": sorted(missing)}


def _conversion_summary(exc: Exception) -> str:
    """OpenVINO's conversion errors span many lines; keep the summary line when there is
    one ("No conversion rule found for operations: ...")."""
    lines = [line.strip(" -") for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "No conversion rule" in line or "not supported" in line.lower():
            return line[:300]
    return lines[-1][:300] if lines else type(exc).__name__
