r"""Task accuracy of every CPU candidate and the NPU simulators on real images, as convert
reports it.

A hand-run benchmark, not a test. From the repository root:

    .venv/bin/python benchmarks/accuracy.py                 # CPU targets, RKNN and QNN
    .venv/bin/python benchmarks/accuracy.py --no-npu        # CPU targets only
    .venv/bin/python benchmarks/accuracy.py --json accuracy.json

It trains the digits CNN of tests/models/digits.py (scikit-learn's 1,797 handwritten 8x8
images, raw 0..255 pixels in, normalisation inside the model; a few seconds, seeded), then
for each target and precision runs

    convertkit convert tests/models/digits.py:build --weights W -i x:1x1x8x8 -t TARGET
        --precision P --data heldout.npz --labels labels.npy

on the 500 held-out images: the odd samples calibrate, the 250 even ones are graded.
Each row gives the source's top-1 accuracy, the artifact's, the drop in points, the
budget and the verdict. A second row per int8 target shows what the same build scores
when it calibrated on generated inputs (no --data: the default before the verdicts
issue), graded by `convertkit check` on the same 250 images.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.models.digits import SOURCE, train  # noqa: E402

CPU_TARGETS = [("cpu:ort", "fp32"), ("cpu:ort", "int8"), ("cpu:openvino", "fp32"),
               ("cpu:openvino", "bf16"), ("cpu:openvino", "int8")]
NPU_TARGETS = [("npu:rknn@rk3588", "fp16"), ("npu:rknn@rk3588", "int8"),
               ("npu:qnn@sm8650", "int8"), ("npu:qnn@sm8650", "fp16")]


def convertkit(*args: str) -> tuple[int, dict, Path]:
    """Run the CLI into a fresh folder: (exit code, report.json or {"error": ...}, folder)."""
    out = Path(tempfile.mkdtemp(prefix="accuracy-")) / "run"
    command = [sys.executable, "-m", "convertkit", *args, "-o", str(out),
               "--report-format", "json"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if not (out / "report.json").is_file():
        return done.returncode, {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}, out
    return done.returncode, json.loads((out / "report.json").read_text()), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-npu", action="store_true", help="skip the NPU simulators")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="digits-"))
    trained = train(folder)
    print(f"digits CNN: {trained.accuracy:.1f}% top-1 on the 500 held-out images "
          f"(trained here, seeded)\n")
    common = ["--weights", str(trained.weights), "-i", "x:1x1x8x8"]
    labelled = ["--data", str(trained.heldout), "--labels", str(trained.labels)]
    targets = CPU_TARGETS + ([] if args.no_npu else NPU_TARGETS)
    rows = []
    for target, precision in targets:
        code, report, _ = convertkit("convert", SOURCE, *common, "-t", target,
                                     "--precision", precision, *labelled)
        rows.append(_row(target, precision, code, report))
        if precision == "int8":
            rows.append(_generated_row(target, precision, common, labelled))
    header = (f"{'target':<18} {'prec':<5} {'calibration':<26} {'source':>7} {'artifact':>8} "
              f"{'drop':>6} {'budget':>6}  verdict")
    print(header)
    print("-" * len(header))
    for row in rows:
        if "error" in row:
            print(f"{row['target']:<18} {row['precision']:<5} {row['calibration']:<26} "
                  f"{'':>7} {'':>8} {'':>6} {'':>6}  {row['error'][:70]}")
            continue
        print(f"{row['target']:<18} {row['precision']:<5} {row['calibration']:<26} "
              f"{row['source']:>6.1f}% {row['artifact']:>7.1f}% {row['drop']:>6.1f} "
              f"{row['max_drop']:>6}  {row['verdict']}")
    print("\n(*) built without --data, as convert did by default before: calibrated on "
          "generated inputs,\n    graded here by `convertkit check` on all 500 images "
          "(convert never chooses it now)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


def _row(target: str, precision: str, code: int, report: dict,
         calibration: str | None = None) -> dict:
    artifact = next((a for a in report.get("artifacts", []) if a["target"] != "onnx"), None)
    if calibration is None:
        record = (artifact or {}).get("calibration")
        calibration = ("none" if not record else
                       f"{'real' if record['real'] else 'generated'}, {record['count']} "
                       "samples")
    base = {"target": target, "precision": precision, "calibration": calibration}
    if artifact is None or not artifact.get("accuracy"):
        error = (artifact or {}).get("error") or report.get("error") or {}
        return {**base, "error": error.get("message") if isinstance(error, dict)
                else str(error) or f"exit {code}, no accuracy"}
    accuracy = artifact["accuracy"]
    return {**base, "source": accuracy["source_top1"], "artifact": accuracy["artifact_top1"],
            "drop": accuracy["drop"], "max_drop": accuracy["max_drop"],
            "verdict": artifact["status"] + ("" if artifact["status"] != "pass" else
                                             f" (exit {code})")}


def _generated_row(target: str, precision: str, common: list[str],
                   labelled: list[str]) -> dict:
    """The same build calibrated on generated inputs, graded by `check` on the images."""
    _, built, folder = convertkit("convert", SOURCE, *common, "-t", target, "--precision",
                                  precision)
    if "error" in built and not built.get("artifacts"):
        return {"target": target, "precision": precision, "calibration": "generated",
                "error": str(built["error"])}
    code, report, _ = convertkit("check", SOURCE, str(folder), *common, *labelled)
    return _row(target, precision, code, report, "generated, 4 samples (*)")


if __name__ == "__main__":
    main()
