r"""Does `-t cpu` choose the same candidate over identical runs? A hand-run benchmark.

From the repository root:

    .venv/bin/python benchmarks/cpu_choice.py                     # ResNet-50, 5 runs
    .venv/bin/python benchmarks/cpu_choice.py --with-data       # int8 competes too
    .venv/bin/python benchmarks/cpu_choice.py --runs 3 --model light_squeezenet.onnx

The model is one of the onnx package's light models with seeded random weights
(tests/models/onnx_models.py). Each run is `convertkit convert MODEL -t cpu` into a fresh
folder; the table gives, per run, the candidate chosen and every passing candidate's
median latency with its spread, then how many distinct choices the runs made.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.models.onnx_models import random_weight_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", default="light_resnet50.onnx")
    parser.add_argument("--with-data", action="store_true",
                        help="pass 8 samples as --data, so that int8 calibrates on given "
                        "samples and competes (without it, int8 is never chosen)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="cpu-choice-"))
    model = random_weight_model(args.model, scratch / args.model)
    extra = []
    if args.with_data:
        import numpy as np
        import onnx

        graph = onnx.load(str(model), load_external_data=False).graph
        initializers = {t.name for t in graph.initializer}
        (spec,) = [i for i in graph.input if i.name not in initializers]
        shape = [d.dim_value or 1 for d in spec.type.tensor_type.shape.dim]
        samples = np.random.default_rng(0).standard_normal((8, *shape)).astype(np.float32)
        np.savez(scratch / "data.npz", **{spec.name: samples})
        extra = ["--data", str(scratch / "data.npz")]
    choices = []
    for run in range(1, args.runs + 1):
        out = scratch / f"run{run}"
        done = subprocess.run([sys.executable, "-m", "convertkit", "convert", str(model), "-t",
                               "cpu", *extra, "-o", str(out), "--report-format", "json"],
                              capture_output=True, text=True, cwd=REPO)
        if not (out / "report.json").is_file():
            print(f"run {run}: no report (exit {done.returncode}): {done.stderr[-300:]}")
            continue
        report = json.loads((out / "report.json").read_text())
        cpu = next(a for a in report["artifacts"] if a["target"] == "cpu")
        chosen = next((c for c in cpu["candidates"] if c["chosen"]), None)
        label = f"{chosen['target']} {chosen['precision']}" if chosen else "none"
        choices.append(label)
        timings = "  ".join(f"{c['target'].split(':')[1]} {c['precision']} "
                            f"{c['latency_ms']:.1f}±{c['spread_ms']:.1f}"
                            for c in cpu["candidates"] if c["latency_ms"] is not None)
        print(f"run {run}: chose {label:<18} | {timings}")
    counts = Counter(choices)
    print(f"\n{len(choices)} runs, {len(counts)} distinct choice(s): "
          + ", ".join(f"{label} x{n}" for label, n in counts.most_common()))


if __name__ == "__main__":
    main()
