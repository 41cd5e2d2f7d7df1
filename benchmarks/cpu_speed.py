r"""CPU inference speed: convertkit's `-t cpu` artifact against the usual ways to run a model.

A hand-run benchmark, not a test. From the repository root:

    .venv/bin/python benchmarks/cpu_speed.py                    # both models, 2 threads
    .venv/bin/python benchmarks/cpu_speed.py --model resnet50 --runs 20 --json speed.json

For transformers' ResNet-50 (ResNetConfig defaults, random weights, pixel_values
1x3x224x224) and BERT-base (BertConfig defaults, random weights, input_ids 1x128 int64),
at the same thread count (--threads, default 2), it times in one run:

* torch eager:            model(**inputs) under torch.no_grad()
* ORT, raw export:        onnxruntime.InferenceSession on the exported ONNX model, defaults
* OpenVINO, raw export:   openvino compile_model(..., "CPU") on it, default configuration
                          (bf16 on a CPU that has it, see DESIGN.md)
* convertkit -t cpu:      the artifact `convertkit convert SOURCE -t cpu` chose, loaded the
                          way its folder says (session.json or compile.json)

The exported ONNX model is OUT/onnx/model.onnx of a `--no-optimize` conversion: the
exporter's output, validated and shape-inferred, with no graph optimisation applied.

Latency is the median of --runs runs after --warmup runs, each on the same inputs. Goal:
the `cpu` artifact at least 3.4x faster than torch eager on both models and within 10% of
the fastest configuration in the table.

Which artifact `cpu` chose is read from OUT/report.json: the artifact whose target is
`cpu`, and among its `candidates` the one marked `chosen` (each candidate's latency as
convertkit measured it is printed too). A report without candidates (a convertkit whose
`-t cpu` is plain `cpu:ort`) is timed as it is, and an OpenVINO bf16 build is timed beside
it (built here through the platform class).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = {
    "resnet50": ("pixel_values:1x3x224x224", "ResNet-50"),
    "bert": ("input_ids:1x128:int64", "BERT-base seq 128"),
}
# The `-t cpu` report lists every candidate: {"target", "precision", "status",
# "latency_ms", "chosen", ...} under the cpu artifact's "candidates".
GOAL_SPEEDUP = 3.4
GOAL_WITHIN = 0.10


def resnet50():
    """transformers ResNet-50 (ResNetConfig defaults), random weights."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    return ResNetForImageClassification(ResNetConfig()).eval()


def bert():
    """transformers BERT-base (BertConfig defaults), random weights."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig()).eval()


def median_ms(run: Callable[[], object], warmup: int, runs: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def convert(name: str, out: Path) -> dict:
    spec = MODELS[name][0]
    command = [sys.executable, "-m", "convertkit", "convert", f"{__file__}:{name}", "-i", spec,
               "-t", "cpu", "--no-optimize", "-o", str(out), "--force"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode not in (0, 1):
        sys.exit(f"convertkit convert failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads((out / "report.json").read_text())


def cpu_artifacts(report: dict, out: Path) -> list[tuple[str, Path]]:
    """(label, artifact path) for the `cpu` artifact, plus the fallback candidate."""
    chosen = [a for a in report["artifacts"] if a["target"].split(":")[0] == "cpu"]
    if not chosen:
        sys.exit("the report has no cpu artifact")
    artifact = chosen[0]
    picked = next((c for c in artifact.get("candidates", []) if c.get("chosen")), None)
    label = (f"{picked['target']} {picked['precision']}" if picked else
             f"{artifact['target']} {artifact.get('precision')}")
    for candidate in artifact.get("candidates", []):
        latency = candidate.get("latency_ms")
        print(f"    candidate {candidate['target']} {candidate['precision']}: "
              f"{candidate['status']}, "
              + (f"{latency:.1f} ms" if latency is not None else candidate.get("reason", ""))
              + ("  <-- chosen" if candidate.get("chosen") else ""), flush=True)
    rows = [(f"convertkit -t cpu ({label})", out / artifact["path"])]
    if not artifact.get("candidates"):
        from convertkit.platforms import BuildOptions
        from convertkit.platforms.openvino import OpenVinoCpuPlatform, cpu_has_bf16
        from convertkit.spec import Precision, TargetSpec

        precision = Precision.BF16 if cpu_has_bf16() else Precision.FP32
        built = OpenVinoCpuPlatform().build(out / "onnx/model.onnx", TargetSpec("cpu", "openvino"),
                                            out / "bench-cpu-openvino",
                                            BuildOptions(precision))
        rows.append((f"convertkit cpu:openvino {precision} (what -t cpu would pick)",
                     built.path))
    return rows


def artifact_runner(path: Path, threads: int) -> Callable[[dict], object]:
    """A callable running the artifact as its folder says, at ``threads`` threads."""
    if path.suffix == ".xml":
        from convertkit.platforms.openvino import COMPILE_FILE, OpenVinoRunner

        settings = json.loads((path.parent / COMPILE_FILE).read_text())
        runner = OpenVinoRunner(path, settings["config"], settings.get("outputs", []),
                                   threads=threads).__enter__()
        return runner.run
    from convertkit.platforms.ort_runner import OrtRunner

    settings_file = path.parent / "session.json"
    level = "ORT_DISABLE_ALL"
    if settings_file.is_file():
        level = json.loads(settings_file.read_text()).get("graph_optimization_level", level)
    runner = OrtRunner(path, level, threads).__enter__()
    return runner.run


def bench_model(name: str, threads: int, warmup: int, runs: int, work: Path) -> dict:
    import numpy as np
    import onnxruntime as ort
    import openvino as ov
    import torch

    out = work / name
    report = convert(name, out)
    feeds = dict(np.load(out / "check/inputs.npz"))
    raw = out / "onnx/model.onnx"
    results: dict[str, float] = {}

    torch.set_num_threads(threads)
    model = globals()[name]()
    tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
    with torch.no_grad():
        results["torch eager"] = median_ms(lambda: model(**tensors), warmup, runs)

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])
    results["ORT, raw export (defaults)"] = median_ms(lambda: session.run(None, feeds),
                                                      warmup, runs)

    core = ov.Core()
    compiled = core.compile_model(str(raw), "CPU", {"INFERENCE_NUM_THREADS": threads})
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    hint = hint.get_type_name() if hasattr(hint, "get_type_name") else hint
    results[f"OpenVINO, raw export (defaults: {hint})"] = median_ms(lambda: compiled(feeds),
                                                                    warmup, runs)

    cpu_rows = []
    for label, path in cpu_artifacts(report, out):
        run = artifact_runner(path, threads)
        results[label] = median_ms(lambda run=run: run(feeds), warmup, runs)
        cpu_rows.append(label)
    return {"model": MODELS[name][1], "latency_ms": results, "cpu_rows": cpu_rows,
            "report_status": report["status"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), action="append")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="convertkit-cpu-speed-") as scratch:
        for name in args.model or list(MODELS):
            print(f"[{name}] converting and timing ({args.threads} threads)...", flush=True)
            outcomes.append(bench_model(name, args.threads, args.warmup, args.runs,
                                        Path(scratch)))
    for outcome in outcomes:
        latency = outcome["latency_ms"]
        eager, fastest = latency["torch eager"], min(latency.values())
        print(f"\n{outcome['model']} ({args.threads} threads, median of {args.runs} runs; "
              f"convert status: {outcome['report_status']})")
        width = max(len(k) for k in latency)
        for label, ms in latency.items():
            print(f"  {label.ljust(width)}  {ms:8.1f} ms  {eager / ms:5.2f}x torch")
        cpu = latency[outcome["cpu_rows"][0]]
        speedup_ok = eager / cpu >= GOAL_SPEEDUP
        near_ok = cpu <= fastest * (1 + GOAL_WITHIN)
        print(f"  goal: -t cpu >= {GOAL_SPEEDUP}x torch eager: "
              f"{'met' if speedup_ok else 'NOT met'} ({eager / cpu:.2f}x); within "
              f"{GOAL_WITHIN:.0%} of the fastest: {'met' if near_ok else 'NOT met'} "
              f"({cpu / fastest - 1:+.0%})")
    if args.json:
        args.json.write_text(json.dumps(outcomes, indent=2) + "\n")


if __name__ == "__main__":
    main()
