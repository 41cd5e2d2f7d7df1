r"""How convertkit takes hostile model files: the fuzzer of tests/integration/security
(fuzzing.py) run longer than the test does. A hand-run benchmark, not a test.

    .venv/bin/python benchmarks/robustness.py                        # 30 mutants per kind
    .venv/bin/python benchmarks/robustness.py --per-kind 100 --seed 7 --kinds onnx,pt2
    .venv/bin/python benchmarks/robustness.py --keep build/fuzz --json fuzz.json

A small real model of each source kind (ONNX, Keras .keras, TF SavedModel, Paddle
.json/.pdiparams, PyTorch .pt2, MindSpore .mindir), written here by its framework, is
mutated with a seeded generator (protobuf fields found without a schema, ONNX fields,
JSON values, zip members, Paddle tensor headers, raw bytes, symlinks and FIFOs in model
folders), and every mutant goes through `convertkit convert MUTANT -o OUT -t onnx` and
`convertkit inspect MUTANT`, each from a fresh working folder with its own TMPDIR, under
--timeout and --memory-mb. Printed: the files run, the exit-code histogram per kind and in
total, tracebacks, files created outside OUT, the slowest run and the largest peak RSS
(with the mutant each came from), and every run that broke the contract, with the command
that reproduces it (the mutants are kept then, or always with --keep). Exit 1 when any run broke it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.integration.security.fuzzing import (  # noqa: E402 (after the path)
    KINDS,
    Finding,
    command_line,
    mutants,
    run_mutant,
)


def _histogram(counter: Counter) -> str:
    return " ".join(f"{code}:{count}" for code, count in sorted(counter.items())) or "-"


def summarise(findings: list[Finding], seconds: float) -> dict:
    runs = [(finding, run) for finding in findings for run in finding.runs]
    by_kind: dict[str, dict[str, Counter]] = {}
    for finding, run in runs:
        by_kind.setdefault(finding.mutant.kind, {}).setdefault(run.command, Counter())[
            run.exit_code] += 1
    slowest = max(runs, key=lambda pair: pair[1].seconds)
    largest = max(runs, key=lambda pair: pair[1].max_rss_mb)
    return {
        "mutants": len(findings),
        "runs": len(runs),
        "seconds": round(seconds, 1),
        "exit_codes": {kind: {command: dict(sorted(counter.items()))
                              for command, counter in commands.items()}
                       for kind, commands in by_kind.items()},
        "total": dict(sorted(Counter(run.exit_code for _, run in runs).items())),
        "tracebacks": sum(run.traceback for _, run in runs),
        "outside_out": sorted({path for finding in findings for path in finding.strays}),
        "temp_left": sum(bool(finding.temp_left) for finding in findings),
        "max_seconds": {"seconds": round(slowest[1].seconds, 1),
                        "command": command_line(slowest[1]),
                        "mutant": slowest[0].mutant.description},
        "max_rss_mb": {"mb": round(largest[1].max_rss_mb),
                       "command": command_line(largest[1]),
                       "mutant": largest[0].mutant.description},
        "problems": [{"kind": finding.mutant.kind, "mutant": finding.mutant.description,
                      "problems": finding.problems,
                      "commands": [command_line(run) for run in finding.runs],
                      "stderr": [run.stderr.strip().splitlines()[-4:]
                                 for run in finding.runs]}
                     for finding in findings if finding.problems],
    }


def report(figures: dict, args: argparse.Namespace) -> None:
    print(f"{figures['mutants']} mutants, {figures['runs']} runs (convert -t onnx and "
          f"inspect), seed {args.seed}, {figures['seconds']:.0f} s, {os.cpu_count()} cores")
    print("exit codes (code:count)")
    width = max(len(kind) for kind in figures["exit_codes"])
    for kind, commands in figures["exit_codes"].items():
        print(f"  {kind.ljust(width)}  " + "   ".join(
            f"{command} {_histogram(Counter(codes))}" for command, codes in commands.items()))
    print(f"  {'total'.ljust(width)}  {_histogram(Counter(figures['total']))}")
    print(f"tracebacks: {figures['tracebacks']}")
    print(f"files outside OUT: {len(figures['outside_out'])}"
          + "".join(f"\n  {path}" for path in figures["outside_out"][:20]))
    print(f"mutants whose runs left files in TMPDIR (framework caches, not refused): "
          f"{figures['temp_left']}")
    slowest, largest = figures["max_seconds"], figures["max_rss_mb"]
    print(f"max wall time: {slowest['seconds']:.1f} s  ({slowest['mutant']})\n"
          f"  {slowest['command']}")
    print(f"max RSS: {largest['mb']} MiB  ({largest['mutant']})\n  {largest['command']}")
    print(f"runs that broke the contract: {len(figures['problems'])}")
    for problem in figures["problems"]:
        print(f"  {problem['kind']}: {problem['mutant']}")
        for line in problem["problems"]:
            print(f"    {line}")
        for command, stderr in zip(problem["commands"], problem["stderr"], strict=True):
            print(f"    $ {command}")
            print("".join(f"      {line}\n" for line in stderr), end="")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="The generator's seed.")
    parser.add_argument("--per-kind", type=int, default=30, help="Mutants of each kind.")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"Comma-separated, of: {', '.join(KINDS)}.")
    parser.add_argument("--timeout", type=int, default=120,
                        help="--timeout of each run; over the limit 30 s later.")
    parser.add_argument("--memory-mb", type=int, default=4096, help="--memory-mb of each run.")
    parser.add_argument("--keep", type=Path,
                        help="Write the seeds and mutants here and keep them.")
    parser.add_argument("--json", type=Path, help="Also write the figures to this file.")
    args = parser.parse_args()
    kinds = tuple(kind for kind in args.kinds.split(",") if kind)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")

    folder = args.keep or Path(tempfile.mkdtemp(prefix="convertkit-robustness-"))
    rng = random.Random(args.seed)
    findings: list[Finding] = []
    started = time.monotonic()
    for mutant in mutants(folder / "seeds", rng, args.per_kind, kinds=kinds,
                          into=folder / "mutants"):
        finding = run_mutant(mutant, timeout_s=args.timeout, memory_mb=args.memory_mb)
        findings.append(finding)
        codes = "/".join(str(run.exit_code) for run in finding.runs)
        print(f"[{time.monotonic() - started:5.0f} s] {mutant.folder.name} exit {codes}"
              f"{'  BROKE THE CONTRACT' if finding.problems else ''}: "
              f"{mutant.description[:100]}", flush=True)
    figures = summarise(findings, time.monotonic() - started)
    print()
    report(figures, args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if args.keep or figures["problems"]:
        print(f"seeds and mutants: {folder}")
    else:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    return 1 if figures["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
