r"""What mixed precision buys and costs on the outlier digits model: accuracy of fp32, pure
int8 and mixed int8, the nodes kept, and the three latencies side by side. A hand-run
benchmark, not a test. From the repository root:

    .venv/bin/python benchmarks/mixed_precision.py                 # cpu:ort and cpu:openvino
    .venv/bin/python benchmarks/mixed_precision.py --runs 500 --targets cpu:ort

It trains the deeper digits CNN of tests/models/digits.py (seeded, a few seconds) and
injects the activation outlier of tests/integration/test_mixed_precision.py (one channel
of the first convolution x1000, divided back out by the next: the same fp32 function),
then per target runs

    convertkit convert tests/models/digits.py:build_deeper --weights outlier.pt
        -i x:1x1x8x8 -t TARGET --precision P --data heldout.npz --labels labels.npy

for fp32, int8 with --no-mixed-precision, and int8 (mixed precision on, the default).
Accuracy is convert's own, on the 250 held-out images calibration never saw. Latency:
the three artifacts are loaded in one process the way their session.json (ONNX Runtime)
or compile.json (OpenVINO) says, warmed up, then run interleaved, one run each per round,
on one held-out image; the table gives each one's median and interquartile range.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.accuracy import convertkit  # noqa: E402 (runs the CLI, reads report.json)
from tests.integration.test_mixed_precision import inject_outlier  # noqa: E402
from tests.models.digits import DeeperDigitsCNN, train  # noqa: E402

SOURCE = "tests/models/digits.py:build_deeper"
BUILDS = [("fp32", "fp32", ()), ("int8 pure", "int8", ("--no-mixed-precision",)),
          ("int8 mixed", "int8", ())]
WARMUP_RUNS = 20


def open_runner(model: Path):
    """The artifact's runner, loaded with the settings written beside it, as a user would
    (OrtCpuPlatform.open, OpenVinoPlatform.open)."""
    if (model.parent / "compile.json").is_file():
        from convertkit.platforms.openvino import OpenVinoRunner

        settings = json.loads((model.parent / "compile.json").read_text())
        return OpenVinoRunner(model, settings["config"], settings.get("outputs", []))
    from convertkit.platforms.ort_runner import OrtRunner

    settings = json.loads((model.parent / "session.json").read_text())
    return OrtRunner(model, settings.get("graph_optimization_level", "ORT_DISABLE_ALL"))


def time_side_by_side(models: dict[str, Path], feeds: dict[str, np.ndarray],
                      runs: int) -> dict[str, tuple[float, float]]:
    """{label: (median ms, interquartile range ms)}, the runners timed round-robin."""
    runners = {label: open_runner(path).__enter__() for label, path in models.items()}
    try:
        for runner in runners.values():
            for _ in range(WARMUP_RUNS):
                runner.run(feeds)
        times: dict[str, list[float]] = {label: [] for label in runners}
        for _ in range(runs):
            for label, runner in runners.items():
                start = time.perf_counter()
                runner.run(feeds)
                times[label].append((time.perf_counter() - start) * 1000)
    finally:
        for runner in runners.values():
            runner.__exit__(None, None, None)
    result = {}
    for label, values in times.items():
        q = statistics.quantiles(values, n=4)
        result[label] = (statistics.median(values), q[2] - q[0])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", nargs="+", default=["cpu:ort", "cpu:openvino"])
    parser.add_argument("--runs", type=int, default=300, help="timed rounds per target")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="digits-"))
    trained = train(folder, DeeperDigitsCNN)
    weights = inject_outlier(trained.weights, folder / "outlier.pt")
    print(f"deeper digits CNN: {trained.accuracy:.1f}% top-1 on the 500 held-out images "
          f"(trained here, seeded); outlier injected (fp32 function unchanged)\n")
    with np.load(trained.heldout) as data:
        feeds = {"x": data["x"][0]}
    common = ["--weights", str(weights), "-i", "x:1x1x8x8", "--data", str(trained.heldout),
              "--labels", str(trained.labels)]
    rows = []
    for target in args.targets:
        models = {}
        for label, precision, extra in BUILDS:
            code, report, out = convertkit("convert", SOURCE, *common, "-t", target,
                                           "--precision", precision, *extra)
            artifact = next((a for a in report.get("artifacts", [])
                             if a["target"] == target), None)
            row = {"target": target, "build": label, "exit": code}
            if artifact is None or not artifact.get("accuracy"):
                row["error"] = str((artifact or {}).get("error") or report.get("error")
                                   or f"exit {code}")
                rows.append(row)
                continue
            mixed = artifact.get("mixed_precision")
            row.update(status=artifact["status"],
                       accuracy=artifact["accuracy"]["artifact_top1"],
                       drop=artifact["accuracy"]["drop"],
                       kept=(f"{len(mixed['kept'])}/{mixed['quantisable_nodes']}"
                             if mixed else "-"),
                       mac_share=mixed["mac_share"] if mixed else None,
                       kept_nodes=[f"{k['name']} {k['op']}" for k in mixed["kept"]]
                       if mixed else [])
            if artifact.get("path"):
                models[label] = out / artifact["path"]
            rows.append(row)
        timings = time_side_by_side(models, feeds, args.runs) if models else {}
        for row in rows:
            if row["target"] == target and row["build"] in timings:
                row["median_ms"], row["iqr_ms"] = timings[row["build"]]

    header = (f"{'target':<13} {'build':<11} {'top-1':>6} {'drop':>6} {'verdict':<8} "
              f"{'kept':>5} {'MACs':>5} {'median ms':>10} {'IQR ms':>7}")
    print(header)
    print("-" * len(header))
    for row in rows:
        if "error" in row:
            print(f"{row['target']:<13} {row['build']:<11} {row['error'][:60]}")
            continue
        share = f"{row['mac_share']:.0%}" if row["mac_share"] is not None else "-"
        latency = (f"{row['median_ms']:>10.4f} {row['iqr_ms']:>7.4f}" if "median_ms" in row
                   else f"{'-':>10} {'-':>7}")
        print(f"{row['target']:<13} {row['build']:<11} {row['accuracy']:>5.1f}% "
              f"{row['drop']:>6.1f} {row['status']:<8} {row['kept']:>5} {share:>5} {latency}")
    for row in rows:
        if row.get("kept_nodes"):
            print(f"\n{row['target']} kept in fp32: " + ", ".join(row["kept_nodes"]))
    print(f"\nlatency: {args.runs} interleaved rounds on one image after {WARMUP_RUNS} "
          "warm-up runs each, default thread count")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
