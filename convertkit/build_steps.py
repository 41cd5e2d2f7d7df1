"""The steps of a conversion that run in its worker process (isolation.Worker): building
the hub model, building and checking one target, timing the CPU candidates.

Quantisers, compilers and runtimes abort on models they mishandle (ONNX Runtime's int8
quantiser on a Keras bidirectional LSTM: SIGABRT), so none of them runs in the process
that holds the run together. The pipeline (pipeline.py) decides what runs and in which
order, and turns a step that crashed into that target's error; each step here takes a
JSON payload and returns JSON (records.encode), reading the hub model, the samples and
the references from the staged output folder.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from convertkit.checker.budgets import Budget, BudgetTable, budget_for, load_budget_file
from convertkit.checker.decode import DecodeCheck
from convertkit.checker.diagnosis import localize_against_hub
from convertkit.checker.source_map import locate
from convertkit.checker.verdict import Evidence, Verdict, judge
from convertkit.config import is_debug
from convertkit.errors import ConversionError, ConvertkitError
from convertkit.ir.hub import build_hub
from convertkit.ir.info import OnnxInfo, describe
from convertkit.ir.io import load_model
from convertkit.ir.prepare import prepare
from convertkit.ir.validate import validate_and_infer
from convertkit.mixed_precision import OVERRIDE_FILE
from convertkit.options import ConvertOptions
from convertkit.platforms import Artifact, BuildOptions, Platform, Runner, plan_target
from convertkit.platforms.ort_runner import OrtRunner
from convertkit.records import encode
from convertkit.registry import load_platforms
from convertkit.reports.record import ArtifactResult, KeptNode, MixedPrecision, error_record
from convertkit.selection import time_decoding, time_interleaved
from convertkit.spec import InputSpec, Precision, Status, TargetSpec

log = logging.getLogger(__name__)

HUB_MODEL = Path("onnx") / "model.onnx"
BUILD_LOG = Path("logs") / "build.log"  # what the builds, runtimes and checks printed


@dataclass(frozen=True)
class BuildContext:
    """What every target's build and check share within one conversion, as it travels to
    the worker."""

    staging: Path
    inputs: tuple[InputSpec, ...]
    feeds_path: Path
    reference_path: Path
    labels_path: Path | None
    options: ConvertOptions
    build_options: BuildOptions
    calibration: dict[str, Any]  # where the calibration samples came from (SampleSet)
    # A decoder with a KV cache: the source's greedy decode (checker/decode.py).
    decode_path: Path | None = None

    def to_payload(self) -> dict[str, Any]:
        build = self.build_options
        return {"staging": str(self.staging), "inputs": [s.to_dict() for s in self.inputs],
                "feeds": str(self.feeds_path), "reference": str(self.reference_path),
                "labels": str(self.labels_path) if self.labels_path else None,
                "options": self.options.to_dict(),
                "calibration_path": str(build.calibration_path or ""),
                "calibration_is_real": build.calibration_is_real,
                "evaluation_path": str(build.evaluation_path or ""),
                "calibration": self.calibration,
                "decode": str(self.decode_path) if self.decode_path else None}

    @staticmethod
    def from_payload(data: Mapping[str, Any]) -> BuildContext:
        return BuildContext(
            Path(data["staging"]), tuple(InputSpec.from_dict(s) for s in data["inputs"]),
            Path(data["feeds"]), Path(data["reference"]),
            Path(data["labels"]) if data["labels"] else None,
            ConvertOptions.from_dict(data["options"]),
            BuildOptions(None, Path(data["calibration_path"]) if data["calibration_path"]
                         else None, data["calibration_is_real"],
                         Path(data["evaluation_path"]) if data["evaluation_path"] else None),
            data["calibration"], Path(data["decode"]) if data.get("decode") else None)

    @property
    def evidence(self) -> Evidence:
        return _evidence(self.feeds_path, self.reference_path, self.labels_path)

    @property
    def budgets(self) -> BudgetTable | None:
        budget_file = self.options.budget_file
        return load_budget_file(budget_file) if budget_file is not None else None

    def budget(self, precision: Precision) -> Budget:
        return budget_for(precision, self.options.atol, self.options.rtol, self.budgets,
                          self.options.max_accuracy_drop)


@functools.cache
def _evidence(feeds: Path, reference: Path, labels: Path | None) -> Evidence:
    return Evidence.load(feeds, reference, labels)


@functools.cache
def _hub(path: Path) -> tuple[onnx.ModelProto, OnnxInfo]:
    model = load_model(path, load_external_data=False)
    return model, describe(model)


# --- the steps ---------------------------------------------------------------------------

def build_hub_step(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the exported model, then optimise it into the hub model: what the hub
    record and the hub model's description say."""
    staging = Path(payload["staging"])
    exported = Path(payload["exported"])
    validate_and_infer(Path(payload["lowered"]), exported, link=True)
    remove_model(Path(payload["lowered"]))
    hub = build_hub(exported, staging / HUB_MODEL, opset=payload["opset"],
                    optimize_graph=payload["optimize"])
    return {"hub": hub.to_dict(), "info": encode(_hub(staging / HUB_MODEL)[1])}


def build_and_check_step(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Build one target and check it; then, when it failed, say why where that can be
    said (the unoptimised export for the hub model, the first diverging node for others)."""
    context = BuildContext.from_payload(payload["context"])
    target = TargetSpec.parse(payload["target"])
    platform = load_platforms()[payload["platform"]]()
    if context.decode_path is not None and platform.requirements.static_shapes:
        return encode(_refuse_decoder(target))
    result = build_and_check(context, platform, target, Precision(payload["precision"]),
                             Path(payload["out_dir"]))
    if result.status == Status.FAIL and payload.get("exported"):
        result = _blame_optimization(result, Path(payload["exported"]), context.evidence)
    if result.status == Status.FAIL and payload.get("localize_in"):
        result = localize_against_hub(result, context.staging, HUB_MODEL,
                                      context.evidence.samples, Path(payload["localize_in"]))
    return encode(result)


def _refuse_decoder(target: TargetSpec) -> ArtifactResult:
    """A decoder with a KV cache on a target that needs static shapes: its sequence and
    cache lengths change at every step, so it cannot be built as it is."""
    error = ConversionError(
        f"{target} needs static input shapes, and a decoder with a KV cache changes its "
        "sequence and cache lengths at every step; static-shape decoders are not built yet",
        hint="build it for cpu, cpu:ort, cpu:openvino or gpu:fp16",
        code="decoder-needs-dynamic-shapes")
    return ArtifactResult(str(target), Status.ERROR, error=error_record(error))


def _decode_check(context: BuildContext, runner: Runner,
                  precision: Precision) -> DecodeCheck | None:
    """A decoder's artifact, already open: the token-by-token check besides the output
    check (checker/decode.py); None for any other model."""
    from convertkit.checker.decode import (
        CacheInputs,
        DecodeReference,
        compare_decode,
        teacher_forced_logits,
    )

    cache = CacheInputs.of(_hub(context.staging / HUB_MODEL)[0])
    if context.decode_path is None or cache is None:
        return None
    reference = DecodeReference.load(context.decode_path)
    logits = teacher_forced_logits(runner, cache, reference)
    return compare_decode(logits, reference, context.budget(precision), precision)


def time_step(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Time the given artifacts in turn: their timings by index. A decoder with a KV cache
    decoding the check's greedy continuation with its own cache (selection.time_decoding:
    time to first token, then per-token latency), any other model on the first evaluation
    sample (selection.time_interleaved)."""
    context = BuildContext.from_payload(payload["context"])
    platforms = load_platforms()
    runners: dict[int, Runner] = {}
    for item in payload["artifacts"]:
        artifact = Artifact(item["target"], context.staging / item["path"],
                            Precision(item["precision"]))
        runner = platforms[item["platform"]]().open(artifact)
        if runner is not None:
            runners[item["index"]] = runner
    cache = None
    if context.decode_path is not None:
        from convertkit.checker.decode import CacheInputs, DecodeReference

        cache = CacheInputs.of(_hub(context.staging / HUB_MODEL)[0])
    if cache is not None and context.decode_path is not None:
        reference = DecodeReference.load(context.decode_path)
        timings = time_decoding(runners, cache, reference)
    else:
        timings = time_interleaved(runners, context.evidence.samples[0])
    return {str(index): encode(timing) for index, timing in timings.items()}


# --- building and checking one target ----------------------------------------------------

def build_and_check(context: BuildContext, platform: Platform, target: TargetSpec,
                    precision: Precision, out_dir: Path,
                    keep_fp32: tuple[str, ...] = ()) -> ArtifactResult:
    """Build ``target`` into ``out_dir`` and judge it on the evaluation samples. An int8
    build that misses its budget is retried with mixed precision where the platform can
    keep nodes in fp32 (``keep_fp32``: the nodes a retry keeps). One that cannot run here
    (`built`, `prepared`) is first judged on the platform's proxy (Platform.proxy_runner)
    on the calibration samples, and retried when the proxy misses the budget."""
    result = _build_and_check(context, platform, target, precision, out_dir, keep_fp32)
    if (result.precision != Precision.INT8.value or keep_fp32
            or not context.options.mixed_precision or not platform.keeps_nodes_in_fp32):
        return result
    if result.status == Status.FAIL:
        return _retry_mixed(context, platform, target, out_dir, result)
    if (result.status in (Status.BUILT, Status.PREPARED) and result.path
            and context.build_options.calibration_is_real):
        artifact = Artifact(str(target), context.staging / result.path, Precision.INT8)
        runner = platform.proxy_runner(artifact)
        if runner is None:
            return result
        samples, evidence = _calibration_evidence(context)
        with runner:
            verdict = judge(runner.run_samples(samples), evidence,
                            context.budget(Precision.INT8))
        pure = (f"{_verdict_text(verdict)} on {len(samples)} calibration samples, "
                f"judged on {platform.proxy_description}")
        if verdict.status == Status.FAIL:
            return _retry_mixed(context, platform, target, out_dir, result, pure)
        return replace(result, notes=(*result.notes, f"mixed precision: not needed: pure "
                                      f"int8 meets the int8 budget ({pure})"))
    return result


def _build_and_check(context: BuildContext, platform: Platform, target: TargetSpec,
                     precision: Precision, out_dir: Path,
                     keep_fp32: tuple[str, ...],
                     mixed: Mapping[str, Any] | None = None) -> ArtifactResult:
    """``mixed``: what mixed_precision.json says besides the platform's own override."""
    staging = context.staging
    hub_model, hub_info = _hub(staging / HUB_MODEL)
    try:
        plan = plan_target(platform, target, hub_model, hub_info, context.inputs)
        if plan.problems:
            raise ConversionError(
                f"{target} cannot take this model: " + "; ".join(plan.problems),
                hint="`convertkit inspect MODEL -t TARGET` shows what the target accepts",
                code="preflight-rejected",
            )
        options = replace(context.build_options, precision=precision, keep_fp32=keep_fp32)
        model_path = prepare(staging / HUB_MODEL, plan, context.inputs,
                             out_dir / "prepared.onnx")
        artifact = platform.build(model_path, target, out_dir, options)
        if model_path.parent == out_dir and model_path not in (artifact.path, *artifact.files):
            remove_model(model_path)  # an intermediate the platform copied or compiled
        if mixed is not None:
            record = {**mixed, "override": dict(artifact.override)}
            (out_dir / OVERRIDE_FILE).write_text(json.dumps(record, indent=2) + "\n")
        notes = tuple(f"prepared: {change}" for change in plan.changes) + artifact.notes
        relative = str(artifact.path.relative_to(staging))
        budget = context.budget(artifact.precision)
        calibration = context.calibration if artifact.calibrated else None
        if artifact.is_prepared_only:
            return ArtifactResult(str(target), Status.PREPARED, relative,
                                  artifact.precision.value, budget,
                                  notes=(*notes, "not built here: no toolchain here builds it; "
                                         "the files beside it are ready for one"),
                                  calibration=calibration)
        runner = platform.open(artifact)
        if runner is None:
            return ArtifactResult(str(target), Status.BUILT, relative,
                                  artifact.precision.value, budget,
                                  notes=(*notes, "not run: no runtime for it here"),
                                  calibration=calibration)
        layers: list[dict] = []
        evidence = context.evidence
        with runner:
            verdict = judge(runner.run_samples(evidence.samples), evidence, budget)
            if verdict.status == Status.FAIL:
                layers = _layer_analysis(runner, evidence.samples[verdict.worst_sample])
            decode = _decode_check(context, runner, artifact.precision)
        status = verdict.status
        if decode is not None and not decode.within_budget and status == Status.PASS:
            status = Status.FAIL
            notes = (*notes, f"decode check failed: {decode.note}")
        return ArtifactResult(str(target), status, relative,
                              artifact.precision.value, budget, verdict.metrics, notes,
                              checked_in=artifact.checked_in,
                              layer_analysis=tuple(layers), samples=len(evidence.samples),
                              accuracy=verdict.accuracy.to_dict() if verdict.accuracy else None,
                              calibration=calibration, decode=decode)
    except ConvertkitError as error:
        log.debug("target %s failed", target, exc_info=True)
        return ArtifactResult(str(target), Status.ERROR, error=error_record(error))


def _retry_mixed(context: BuildContext, platform: Platform, target: TargetSpec,
                 out_dir: Path, failed: ArtifactResult, pure: str = "") -> ArtifactResult:
    """``failed``, an int8 build over its budget, rebuilt with the fewest nodes kept in
    fp32 that meet the budget on the calibration samples (mixed_precision.py), then judged
    on the evaluation samples like any build; ``failed`` with a note saying why not when
    the search finds no such set within its cap. ``pure``: how ``failed`` missed its budget
    where its own check did not say (it was judged on a proxy)."""
    from convertkit import mixed_precision as mp

    def noted(note: str) -> ArtifactResult:
        return replace(failed, notes=(*failed.notes, f"mixed precision: {note}"))

    if not context.build_options.calibration_is_real:
        return noted("not tried: the calibration samples are generated, and a search tuned "
                     "on them proves nothing (pass --data or --calib-data)")
    hub_path = context.staging / HUB_MODEL
    hub_model, _ = _hub(hub_path)
    quantisable = mp.quantisable_nodes(hub_model)
    cap = max(1, int(len(quantisable) * mp.MAX_KEPT_SHARE))
    try:
        ranking, outcome, judged_on = _search_mixed(context, platform, target,
                                                    out_dir.parent, cap)
    except ConvertkitError as error:
        log.debug("the mixed-precision search failed", exc_info=True)
        return noted(f"the search failed: {error.message}")
    kept_in = platform.kept_precision_for(target)
    if not outcome.passed:
        return noted(f"no set of at most {cap} of the {len(quantisable)} quantisable nodes "
                     f"kept in {kept_in} met the int8 budget on the calibration samples "
                     f"({len(outcome.trials)} build(s)); the search stops there rather than "
                     f"keep most of the model in {kept_in}")
    by_name = {node.name: node for node in hub_model.graph.node}
    losses = {r.name: r.loss_db for r in ranking}
    macs = mp.node_macs(hub_model)
    kept = tuple(KeptNode(name, by_name[name].op_type, losses.get(name), macs.get(name, 0),
                          locate(by_name[name])) for name in outcome.kept)
    share = sum(k.macs for k in kept) / max(1, sum(macs.values()))
    pure = pure or _pure_int8_text(failed)
    staging = context.staging
    record = MixedPrecision(kept, len(quantisable), share,
                            str((out_dir / mp.OVERRIDE_FILE).relative_to(staging)),
                            len(outcome.trials), pure, kept_in)
    details = {"summary": record.summary(), "precision": "int8",
               "kept_in": kept_in,
               "quantisable_nodes": len(quantisable), "mac_share": share,
               "kept": [k.to_dict() for k in kept],
               "search": {"cap": cap, "ranked": [vars(r) for r in ranking],
                          "builds": [{"top": k, "kept": n, "met_budget": ok}
                                     for k, n, ok in outcome.trials],
                          "judged_on": f"{judged_on or 'the build itself'}, on the "
                                       "calibration samples, against the hub ONNX model's "
                                       "outputs"},
               "pure_int8": pure}
    # Built beside the pure int8 folder, which it replaces only once it is built.
    final = out_dir.with_name(f".mixed-{out_dir.name}")
    shutil.rmtree(final, ignore_errors=True)
    result = _build_and_check(context, platform, target, Precision.INT8, final, outcome.kept,
                              details)
    if result.status == Status.ERROR:
        shutil.rmtree(final, ignore_errors=True)
        error = result.error["message"] if result.error else "?"
        return noted(f"the build keeping {len(kept)} node(s) in {kept_in} failed: {error}")
    shutil.rmtree(out_dir)
    final.rename(out_dir)
    path = str(out_dir.relative_to(staging) / Path(result.path or "").relative_to(
        final.relative_to(staging)))
    kept_text = "; ".join(k.describe() for k in kept)
    proxied = (f"mixed precision: the search's builds were judged on {judged_on}, not on "
               "the artifact itself (it cannot run here)",) if judged_on else ()
    return replace(result, path=path, mixed_precision=record,
                   notes=(f"mixed precision: {record.summary()}: {kept_text}",
                          f"mixed precision: the pure int8 build missed its budget ({pure})",
                          *proxied, *result.notes))


def _search_mixed(context: BuildContext, platform: Platform, target: TargetSpec,
                  folder: Path, cap: int) -> tuple[list[Any], Any, str]:
    """Rank the nodes on an ONNX QDQ proxy and search (mixed_precision.py), building each
    trial in a scratch folder inside ``folder`` and judging it on the calibration samples
    against the hub model's outputs: the trial itself where it runs here, else the
    platform's proxy_runner, named by the third value ("" when no proxy judged)."""
    from convertkit import mixed_precision as mp
    from convertkit.platforms.cpu import quantize_int8

    hub_path = context.staging / HUB_MODEL
    hub_model, hub_info = _hub(hub_path)
    options = replace(context.build_options, precision=Precision.INT8)
    plan = plan_target(platform, target, hub_model, hub_info, context.inputs)
    # The calibration samples carry no labels: the int8 budget's cosine and top-k
    # agreement with the fp32 model judge each trial; labels judge the final build.
    budget = context.budget(Precision.INT8)
    samples, evidence = _calibration_evidence(context)
    judged_on: set[str] = set()
    with tempfile.TemporaryDirectory(prefix=".mixed-search-", dir=folder) as scratch_dir:
        scratch = Path(scratch_dir)
        proxy = scratch / "proxy.onnx"
        (scratch / "quantize").mkdir()
        quantize_int8(hub_path, proxy, scratch / "quantize", options)
        ranking = mp.rank_nodes(hub_path, proxy, samples)
        trials = itertools.count()

        def meets_budget(kept: tuple[str, ...]) -> bool:
            trial = scratch / f"trial-{next(trials)}"
            model = prepare(hub_path, plan, context.inputs, trial / "prepared.onnx")
            artifact = platform.build(model, target, trial,
                                      replace(options, keep_fp32=kept))
            runner = platform.open(artifact)
            if runner is None:
                runner = platform.proxy_runner(artifact)
                if runner is None:
                    return False
                judged_on.add(platform.proxy_description)
            with runner:
                verdict = judge(runner.run_samples(samples), evidence, budget)
            shutil.rmtree(trial, ignore_errors=True)
            return verdict.status == Status.PASS

        outcome = mp.search([r.name for r in ranking],
                            lambda name: mp.keep_closure(hub_model, name), cap, meets_budget)
    return ranking, outcome, "; ".join(sorted(judged_on))


def _calibration_evidence(context: BuildContext,
                          ) -> tuple[list[dict[str, np.ndarray]], Evidence]:
    """The calibration samples and the hub model's outputs on them: what tuning judges
    builds against (never the evaluation samples)."""
    from convertkit.platforms.calibration import calibration_samples

    hub_path = context.staging / HUB_MODEL
    options = replace(context.build_options, precision=Precision.INT8)
    samples = calibration_samples(options, hub_path, "the mixed-precision search")
    with OrtRunner(hub_path) as runner:
        return samples, Evidence.of(samples, runner.run_samples(samples))


def _verdict_text(verdict: Verdict) -> str:
    """'cosine 0.4321, top-1 agreement 8.0%' for the worst output."""
    cosines = [m.cosine for m in verdict.metrics if m.cosine is not None]
    agreements = [m.top1_agreement for m in verdict.metrics if m.top1_agreement is not None]
    parts = ([f"cosine {min(cosines):.4f}"] if cosines else []) + (
        [f"top-1 agreement {min(agreements):.1%}"] if agreements else [])
    return ", ".join(parts) or ("within its budget" if verdict.status == Status.PASS
                                else "over its budget")


def _pure_int8_text(failed: ArtifactResult) -> str:
    if failed.accuracy:
        return (f"top-1 {failed.accuracy['artifact_top1']:.1f}% against the source's "
                f"{failed.accuracy['source_top1']:.1f}%")
    cosines = [m.cosine for m in failed.outputs if m.cosine is not None]
    return f"cosine {min(cosines):.4f}" if cosines else "over its budget"


def _layer_analysis(runner: Runner, feeds: Mapping[str, np.ndarray]) -> list[dict]:
    """The toolkit's per-layer analysis of a failed artifact; its own failure only costs
    the analysis (logged), never the result."""
    try:
        return runner.layer_analysis(feeds)
    except ConvertkitError:
        log.warning("the per-layer analysis failed", exc_info=is_debug())
        return []


def _blame_optimization(result: ArtifactResult, exported: Path,
                        evidence: Evidence) -> ArtifactResult:
    """The optimised hub model failed: check the model as exported, to tell the user
    whether the exporter or the optimisation is at fault."""
    budget = result.budget or budget_for(Precision.FP32)
    with OrtRunner(exported) as runner:
        unoptimized = judge(runner.run_samples(evidence.samples), evidence, budget).status
    note = ("the unoptimised export passes this check: graph optimisation changed the "
            "results; --no-optimize converts without it" if unoptimized == Status.PASS else
            "the unoptimised export fails this check too: the export itself differs")
    return replace(result, notes=(*result.notes, note))


def remove_model(path: Path) -> None:
    for file in [path, *path.parent.glob(path.name + ".data")]:
        file.unlink(missing_ok=True)


# --- running a model for `convertkit check` ------------------------------------------------

def run_samples_step(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Run the model ``payload`` describes on the samples in ``payload["samples"]`` and
    save its outputs to ``payload["outputs"]``; ``{"ran": False}`` when nothing here can
    run it. The model is opened as ``kind`` says: "ort" (ONNX Runtime), "openvino" (the
    IR on the CPU, as the check runs it), or "platform" (the runner of ``target``'s own
    platform, else the runtime its file suffix names)."""
    from convertkit.checker.runners import openvino_runner
    from convertkit.registry import resolve_target
    from convertkit.sample_files import load_samples, save_samples

    path = Path(payload["path"])
    kind = payload["kind"]
    runner: Runner | None = None
    if kind == "platform":
        try:
            platform = resolve_target(TargetSpec.parse(payload["target"]))
            runner = platform().open(Artifact(payload["target"], path,
                                              Precision(payload["precision"])))
        except ConvertkitError:
            runner = None
        if runner is None:
            kind = {".onnx": "ort", ".xml": "openvino"}.get(path.suffix.lower(), "")
    if kind == "ort":
        runner = OrtRunner(path)
    elif kind == "openvino":
        runner = openvino_runner(path)
    if runner is None:
        return {"ran": False}
    with runner:
        outputs = runner.run_samples(load_samples(payload["samples"]))
    save_samples(payload["outputs"], outputs)
    return {"ran": True}
