r"""How fast `convertkit batch` gets through many small real models: `-j 1` against `-j 2`,
and a re-run that takes every job from the cache. A hand-run benchmark, not a test.

    .venv/bin/python benchmarks/batch.py                 # every framework installed here
    .venv/bin/python benchmarks/batch.py --json batch.json --keep build/bench-batch

The models, all real architectures others wrote, random weights, nothing downloaded:

* PyTorch: examples/tiny_cnn.py, the test catalogue's CNN, dict-output model and two
  transformers BERTs built from tiny configs;
* ONNX: five of the "light" models shipped inside the onnx package;
* TensorFlow: keras.applications MobileNetV3Small and DenseNet121 (weights=None);
* PaddlePaddle: paddle.vision.models mobilenet_v2 and resnet18 (pretrained=False).

A framework whose adapter is not registered (`convertkit targets`/`adapter_names()`) or
not installed is left out, and the output says so. Each run is `python -m convertkit batch`
in a fresh interpreter into a fresh OUT (the cached run re-uses the `-j 2` OUT), timed
wall clock. Goals: `-j 2` at least 1.8x faster than `-j 1` on 2 cores; the cached re-run
at most 5% of the first.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SPEEDUP_GOAL = 1.8
CACHED_GOAL = 0.05

KERAS_MODELS = '''\
"""keras.applications models with random weights, written by benchmarks/batch.py."""

import keras


def mobilenet_v3_small():
    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV3Small(weights=None, input_shape=(64, 64, 3),
                                               classes=10)


def densenet121():
    keras.utils.set_random_seed(0)
    return keras.applications.DenseNet121(weights=None, input_shape=(32, 32, 3), classes=10)
'''

PADDLE_MODELS = '''\
"""paddle.vision models with random weights, written by benchmarks/batch.py."""

import paddle


def mobilenet_v2():
    paddle.seed(0)
    return paddle.vision.models.mobilenet_v2(pretrained=False, num_classes=10)


def resnet18():
    paddle.seed(0)
    return paddle.vision.models.resnet18(pretrained=False, num_classes=10)
'''


def model_entries(work: Path) -> tuple[list[str], list[str], list[str]]:
    """Manifest entries (YAML flow mappings) for every framework usable here, the frameworks
    used, and notes on the frameworks left out. Slow models first, so the parallel run
    ends evenly."""
    import onnx

    from convertkit.registry import adapter_names

    registered = set(adapter_names())
    entries: list[str] = []
    notes: list[str] = []
    frameworks: list[str] = []

    def usable(framework: str, module: str) -> bool:
        if framework not in registered:
            notes.append(f"{framework}: no adapter registered here, left out")
            return False
        if importlib.util.find_spec(module) is None:
            notes.append(f"{framework}: {module} is not installed, left out")
            return False
        frameworks.append(framework)
        return True

    if usable("tensorflow", "tensorflow"):
        (work / "keras_models.py").write_text(KERAS_MODELS)
        entries += ["{name: keras_densenet121, source: keras_models.py:densenet121}",
                    "{name: keras_mobilenet_v3, source: keras_models.py:mobilenet_v3_small}"]
    if usable("paddle", "paddle"):
        (work / "paddle_models.py").write_text(PADDLE_MODELS)
        entries += ["{name: paddle_resnet18, source: paddle_models.py:resnet18, "
                    "inputs: [x:1x3x64x64]}",
                    "{name: paddle_mobilenet_v2, source: paddle_models.py:mobilenet_v2, "
                    "inputs: [x:1x3x64x64]}"]
    if usable("pytorch", "torch"):
        catalogue = REPO / "tests/models/torch_models.py"
        entries += [f"{{name: torch_bert, source: '{catalogue}:tiny_bert', "
                    "inputs: ['input_ids:1x16:int64']}",
                    f"{{name: torch_bert_classifier, source: '{catalogue}:tiny_bert_classifier', "
                    "inputs: ['input_ids:1x16:int64']}",
                    f"{{name: torch_tiny_cnn, source: '{REPO}/examples/tiny_cnn.py:build', "
                    "inputs: [x:1x3x32x32]}",
                    f"{{name: torch_small_cnn, source: '{catalogue}:small_cnn', "
                    "inputs: [x:1x3x16x16]}",
                    f"{{name: torch_dict_outputs, source: '{catalogue}:dict_outputs', "
                    "inputs: [x:2x8, y:2x4]}"]
    light = Path(onnx.__file__).parent / "backend/test/data/light"
    for name in ("zfnet512", "resnet50", "inception_v1", "shufflenet", "squeezenet"):
        entry = f"{{name: onnx_{name}, source: '{light}/light_{name}.onnx'}}"
        if name == "zfnet512":  # among the slowest jobs (~25 s): start it early
            entries.insert(1, entry)
        else:
            entries.append(entry)
    return entries, [*frameworks, "onnx"], notes


def run_batch(manifest: Path, out: Path, parallel: int) -> tuple[float, dict]:
    command = [sys.executable, "-m", "convertkit", "batch", str(manifest), "-j",
               str(parallel), "-o", str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1, 3, 4):
        sys.exit(f"batch failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    summary = json.loads((out / "summary.json").read_text())
    return elapsed, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="Also write the figures to this file.")
    parser.add_argument("--keep", type=Path, help="Keep the manifest and outputs here.")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="convertkit-bench-batch-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    entries, frameworks, notes = model_entries(work)
    manifest = work / "manifest.yaml"
    manifest.write_text("defaults:\n  targets: [cpu:ort]\n  timeout_s: 900\nmodels:\n"
                        + "".join(f"  - {entry}\n" for entry in entries))
    print(f"{len(entries)} models from {', '.join(frameworks)}; {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for note in notes:
        print(f"  {note}")

    serial_s, serial = run_batch(manifest, work / "out-j1", 1)
    print(f"-j 1          {serial_s:7.1f} s   {_counts(serial)}")
    parallel_s, parallel = run_batch(manifest, work / "out-j2", 2)
    print(f"-j 2          {parallel_s:7.1f} s   {_counts(parallel)}")
    cached_s, cached = run_batch(manifest, work / "out-j2", 2)
    print(f"-j 2 cached   {cached_s:7.1f} s   {_counts(cached)}")

    speedup = serial_s / parallel_s
    cached_share = cached_s / parallel_s
    print(f"speed-up -j2 / -j1: {speedup:.2f}x (goal >= {SPEEDUP_GOAL}x) "
          f"{'met' if speedup >= SPEEDUP_GOAL else 'NOT met'}")
    print(f"cached re-run: {100 * cached_share:.1f}% of the first -j 2 run "
          f"(goal <= {100 * CACHED_GOAL:.0f}%) "
          f"{'met' if cached_share <= CACHED_GOAL else 'NOT met'}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    jobs = {j["name"]: j["duration_s"] for j in serial["jobs"]}
    print("per job at -j 1 (s): " + ", ".join(f"{n} {t:.1f}" for n, t in jobs.items()))
    failed = [j["name"] for j in parallel["jobs"] if j["status"] != "pass"]
    if failed:
        print(f"jobs that did not pass: {', '.join(failed)}")
    if args.json:
        args.json.write_text(json.dumps({
            "models": len(entries), "frameworks": frameworks, "notes": notes,
            "cores": os.cpu_count(), "serial_s": serial_s, "parallel_s": parallel_s,
            "cached_s": cached_s, "speedup": speedup, "cached_share": cached_share,
            "per_job_serial_s": jobs}, indent=2) + "\n")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _counts(summary: dict) -> str:
    counts = summary["counts"]
    return (f"{counts['pass']} pass, {counts['fail']} fail, {counts['error']} error, "
            f"{counts['cached']} cached")


if __name__ == "__main__":
    sys.exit(main())
