r"""How much time `convertkit convert` adds over doing the same work by hand.

A hand-run benchmark, not a test. From the repository root:

    .venv/bin/python benchmarks/convert_overhead.py
    .venv/bin/python benchmarks/convert_overhead.py --model bert
    .venv/bin/python benchmarks/convert_overhead.py --source FILE.py:NAME -i x:1x3x64x64 \
        --repeat 5 --json overhead.json      (-i/--input is repeatable)

It measures, each in a fresh interpreter (so both sides pay start-up and `import torch`):

* convert:  `python -m convertkit convert SOURCE -i ... -t cpu -o TMP --force`
* baseline: a script doing what a user would write by hand for the same SOURCE: build the
  model, torch.onnx.export(dynamo=True), open an onnxruntime InferenceSession, run it on a
  random input and compare with the torch output using numpy.

Runs alternate order (convert first on even rounds, baseline first on odd ones) after one
untimed warm-up of each; the medians and their ratio are reported (goal: <= 1.2). It also
times `convertkit --help` (goal: <= 0.3 s) and `import convertkit.cli`, and reads
`python -X importtime -c "import convertkit.cli"` to show whether start-up imports any ML
framework. Phase columns come from the progress lines each process prints, time-stamped
as they arrive here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RATIO_GOAL = 1.2
HELP_GOAL_S = 0.3
FRAMEWORK_MODULES = ("torch", "tensorflow", "paddle", "mindspore")
# Imported at start-up they are not a framework, but they are worth seeing.
NOTABLE_MODULES = ("numpy", "onnx", "onnxruntime", "onnxscript", "transformers")

TINY_CNN = (f"{REPO / 'examples' / 'tiny_cnn.py'}:build", ["x:1x3x32x32"])
# BertModel.forward names its token ids `input_ids`; convertkit checks -i names against it.
BERT_INPUTS = ["input_ids:1x16:int64"]
BERT_FILE = '''\
"""A tiny random BERT, written by benchmarks/convert_overhead.py."""

import torch
from transformers import BertConfig, BertModel


def build() -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, vocab_size=1000)
    return BertModel(config).eval()
'''

# What a user would write by hand. argv: SOURCE OUT.onnx NAME:DIMS[:DTYPE]...
# Lines starting with "... " are phase marks, time-stamped by the benchmark as they arrive.
BASELINE_SCRIPT = '''\
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path

print("... import torch", flush=True)
import numpy as np
import onnxruntime as ort
import torch
from torch.utils._pytree import tree_leaves

print("... build model", flush=True)
source, out, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
head, _, name = source.rpartition(":")
if head.endswith(".py"):
    path = Path(head).resolve()
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
else:
    sys.path.insert(0, os.getcwd())
    module = importlib.import_module(head)
obj = getattr(module, name)
model = (obj if isinstance(obj, torch.nn.Module) else obj()).eval()

rng = np.random.default_rng(0)
feeds, dynamic = {}, {}
for text in specs:
    parts = text.split(":")
    dims = [d if not d.isdigit() else int(d) for d in re.split(r"[x,]", parts[1]) if d]
    dtype = np.dtype(parts[2] if len(parts) > 2 else "float32")
    shape = [d if isinstance(d, int) else 2 for d in dims]
    if np.issubdtype(dtype, np.integer):
        feeds[parts[0]] = rng.integers(0, 100, size=shape).astype(dtype)
    else:
        feeds[parts[0]] = rng.standard_normal(shape).astype(dtype)
    dynamic[parts[0]] = {i: torch.export.Dim(d) for i, d in enumerate(dims) if isinstance(d, str)}
tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}

print("... export", flush=True)
torch.onnx.export(model, (), out, kwargs=tensors, input_names=list(feeds), dynamo=True,
                  dynamic_shapes=dynamic if any(dynamic.values()) else None)

print("... onnxruntime", flush=True)
session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
actual = session.run(None, feeds)

print("... compare", flush=True)
with torch.no_grad():
    expected = [t.numpy() for t in tree_leaves(model(**tensors)) if isinstance(t, torch.Tensor)]
assert len(actual) == len(expected), (len(actual), len(expected))
for a, e in zip(actual, expected):
    np.testing.assert_allclose(a, e, rtol=1e-3, atol=1e-4)
print("baseline: pass", flush=True)
print("... exit (interpreter teardown)", flush=True)  # ~2900 modules to tear down
'''


@dataclass
class Run:
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds spent in it


def timed(command: list[str], label: str) -> Run:
    """Run ``command``, fail loudly on a non-zero exit; phases split at "... " lines."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, text=True, errors="replace")
    marks: list[tuple[str, float]] = [("start-up", start)]
    output = []
    assert process.stdout is not None
    for line in process.stdout:
        output.append(line)
        if line.startswith("... "):
            marks.append((line[4:].strip(), time.perf_counter()))
    returncode = process.wait()
    end = time.perf_counter()
    if returncode != 0:
        sys.exit(f"{label} exited with {returncode}:\n{''.join(output[-40:])}")
    phases = {}
    for (name, at), (_, until) in zip(marks, [*marks[1:], ("end", end)], strict=True):
        phases[_phase_key(name)] = phases.get(_phase_key(name), 0.0) + until - at
    return Run(end - start, phases)


def _phase_key(progress: str) -> str:
    # "lowering examples/x.py:build with the pytorch adapter" -> "lowering"
    return progress if progress.startswith("building") else progress.split(" ")[0]


def busy_cpu_fraction(seconds: float = 1.0) -> float | None:
    """How busy all CPUs were over ``seconds`` (Linux /proc/stat), None elsewhere."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def median(values: list[float]) -> float:
    return statistics.median(values)


def phase_medians(runs: list[Run]) -> dict[str, float]:
    names = list(dict.fromkeys(n for r in runs for n in r.phases))
    return {n: median([r.phases.get(n, 0.0) for r in runs]) for n in names}


def bench_convert(source: str, inputs: list[str], repeat: int, warmup: int,
                  work: Path) -> tuple[list[Run], list[Run]]:
    script = work / "baseline.py"
    script.write_text(BASELINE_SCRIPT)
    convert = [sys.executable, "-m", "convertkit", "convert", source,
               # cpu:ort: the one ONNX Runtime artifact the baseline builds too (`-t cpu`
               # would build and time every CPU candidate).
               *(a for i in inputs for a in ("-i", i)), "-t", "cpu:ort",
               "--report-format", "json", "-o", str(work / "convertkit-out"), "--force"]
    baseline = [sys.executable, str(script), source, str(work / "baseline.onnx"), *inputs]
    for _ in range(warmup):
        timed(convert, "convertkit convert")
        timed(baseline, "the baseline")
    ck_runs: list[Run] = []
    base_runs: list[Run] = []
    for index in range(repeat):
        order = [("ck", convert), ("base", baseline)]
        for which, command in order if index % 2 == 0 else order[::-1]:
            run = timed(command, "convertkit convert" if which == "ck" else "the baseline")
            (ck_runs if which == "ck" else base_runs).append(run)
            print(f"  round {index + 1}/{repeat}  {'convertkit' if which == 'ck' else 'baseline'}"
                  f"  {run.seconds:6.2f} s", file=sys.stderr)
    return ck_runs, base_runs


def bench_startup(repeat: int) -> dict:
    def median_of(command: list[str]) -> tuple[float, list[float]]:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
        return median(times), times

    python = sys.executable
    subprocess.run([python, "-m", "convertkit", "--help"], check=True,
                   stdout=subprocess.DEVNULL)  # warm the .pyc files
    help_median, help_runs = median_of([python, "-m", "convertkit", "--help"])
    import_median, import_runs = median_of([python, "-c", "import convertkit.cli"])
    bare_median, bare_runs = median_of([python, "-c", "pass"])

    trace = subprocess.run([python, "-X", "importtime", "-c", "import convertkit.cli"],
                           check=True, capture_output=True, text=True).stderr
    modules = []  # (name, cumulative microseconds)
    for line in trace.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        if cumulative.strip().isdigit():
            modules.append((name.strip(), int(cumulative)))
    tops = {name.split(".")[0] for name, _ in modules}
    return {
        "help_median_s": help_median, "help_runs_s": help_runs,
        "import_cli_median_s": import_median, "import_cli_runs_s": import_runs,
        "bare_python_median_s": bare_median, "bare_python_runs_s": bare_runs,
        "modules_imported": len(modules),
        "frameworks_imported": sorted(tops & set(FRAMEWORK_MODULES)),
        "notable_imported": sorted(tops & set(NOTABLE_MODULES)),
        "slowest_imports_ms": {n: c / 1000 for n, c in
                               sorted(modules, key=lambda m: -m[1])[:6]},
    }


def print_report(result: dict) -> None:
    ck, base = result["convertkit"], result["baseline"]
    print(f"\nsource: {result['source']}  inputs: {' '.join(result['inputs'])}"
          f"  repeat: {result['repeat']}  cpus: {result['cpus']}  busy before start: "
          + ("n/a" if result["cpu_busy_before"] is None else f"{result['cpu_busy_before']:.0%}"))
    print(f"{'':<12}{'median s':>10}{'min s':>9}{'max s':>9}   runs")
    for label, data in (("convertkit", ck), ("baseline", base)):
        runs = data["runs_s"]
        print(f"{label:<12}{data['median_s']:>10.2f}{min(runs):>9.2f}{max(runs):>9.2f}   "
              + " ".join(f"{r:.2f}" for r in runs))
    verdict = "ok" if result["ratio"] <= RATIO_GOAL else "OVER GOAL"
    print(f"ratio convertkit/baseline: {result['ratio']:.3f}  (goal <= {RATIO_GOAL}: {verdict})"
          f"  overhead: {ck['median_s'] - base['median_s']:+.2f} s")
    for label, data in (("convertkit", ck), ("baseline", base)):
        print(f"  {label} phases (median s): "
              + ", ".join(f"{n} {s:.2f}" for n, s in data["phases_median_s"].items()))

    s = result["startup"]
    verdict = "ok" if s["help_median_s"] <= HELP_GOAL_S else "OVER GOAL"
    print(f"\nconvertkit --help: {s['help_median_s']:.3f} s median of "
          f"{len(s['help_runs_s'])}  (goal <= {HELP_GOAL_S} s: {verdict})")
    print(f"python -c 'import convertkit.cli': {s['import_cli_median_s']:.3f} s"
          f"  (bare python -c pass: {s['bare_python_median_s']:.3f} s)")
    frameworks = s["frameworks_imported"]
    print(f"-X importtime import convertkit.cli: {s['modules_imported']} modules, framework "
          f"imported: {'yes: ' + ', '.join(frameworks) if frameworks else 'no'}"
          f"; also: {', '.join(s['notable_imported']) or 'none of ' + ', '.join(NOTABLE_MODULES)}")
    print("  slowest (cumulative ms): "
          + ", ".join(f"{n} {ms:.1f}" for n, ms in s["slowest_imports_ms"].items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent(__doc__.split("\n", 2)[2]))
    parser.add_argument("--model", choices=("tiny_cnn", "bert"), default="tiny_cnn",
                        help="a bundled model (default: tiny_cnn); bert needs transformers")
    parser.add_argument("--source", help="FILE.py:NAME or module:NAME; overrides --model")
    parser.add_argument("--input", "-i", action="append", dest="inputs", metavar="NAME:DIMS",
                        help="NAME:DIMS[:DTYPE], repeatable (needed with --source)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each first")
    parser.add_argument("--help-repeat", type=int, default=10,
                        help="runs of `convertkit --help` and the import (default 10)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    with tempfile.TemporaryDirectory(prefix="convertkit-bench-") as scratch:
        work = Path(scratch)
        if args.source:
            if not args.inputs:
                parser.error("--source needs at least one --input NAME:DIMS[:DTYPE]")
            source, inputs = args.source, args.inputs
        elif args.model == "bert":
            (work / "tiny_bert.py").write_text(BERT_FILE)
            source, inputs = f"{work / 'tiny_bert.py'}:build", args.inputs or BERT_INPUTS
        else:
            source, inputs = TINY_CNN[0], args.inputs or TINY_CNN[1]
        print(f"benchmarking {source} ({args.warmup} warm-up + {args.repeat} timed runs "
              "of each)...", file=sys.stderr)
        busy_before = busy_cpu_fraction()
        if busy_before is not None and busy_before > 0.25:
            print(f"warning: the CPUs were {busy_before:.0%} busy before starting; other work "
                  "will blur the timings", file=sys.stderr)
        ck_runs, base_runs = bench_convert(source, inputs, args.repeat, args.warmup, work)
    startup = bench_startup(args.help_repeat)

    ck_median = median([r.seconds for r in ck_runs])
    base_median = median([r.seconds for r in base_runs])
    result = {
        "source": source,
        "model": None if args.source else args.model,
        "inputs": inputs,
        "repeat": args.repeat,
        "warmup": args.warmup,
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "cpu_busy_before": busy_before,
        "convertkit": {"median_s": ck_median, "runs_s": [r.seconds for r in ck_runs],
                       "phases_median_s": phase_medians(ck_runs)},
        "baseline": {"median_s": base_median, "runs_s": [r.seconds for r in base_runs],
                     "phases_median_s": phase_medians(base_runs)},
        "ratio": ck_median / base_median,
        "ratio_goal": RATIO_GOAL,
        "startup": startup,
        "help_goal_s": HELP_GOAL_S,
    }
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
