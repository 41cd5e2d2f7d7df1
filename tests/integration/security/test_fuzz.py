"""The fuzzer of issue 16, bounded for `make test`: seeded mutants of a small real model of
every source kind (fuzzing.py), each run through the real CLI (`convert -t onnx` and
`inspect`). Every run must end with a documented exit code (5, convertkit's own failure,
is a bug), no traceback, one `error:` line and at most one `hint:` line when it fails, no
raw control characters, no file outside OUT, within its time limit, leaving no process.

About 2.5 minutes on 2 cores in all (ONNX runs take under a second, framework sources a
few seconds each). benchmarks/robustness.py runs the same fuzzer longer and prints the
figures."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.integration.security.fuzzing import (
    KINDS,
    Finding,
    command_line,
    mutants,
    run_mutant,
)

SEED = 16  # the number: change it to fuzz other mutants
# Mutants per kind: an ONNX run takes under a second, a framework source's a few seconds.
COUNTS = {"onnx": 16, "keras": 4, "savedmodel": 4, "paddle": 4, "pt2": 4, "mindir": 4,
          "hf": 4}
TIMEOUT_S = 30  # --timeout of each run (a mutant may hang a framework: a FIFO for a file)
GRACE_S = 30  # over the limit GRACE_S after the timeout, killed 2 * GRACE_S after it
MEMORY_MB = 4096


def _report(finding: Finding) -> str:
    lines = [f"{finding.mutant.kind} mutant {finding.mutant.folder}: "
             f"{finding.mutant.description}"]
    lines += [f"  {problem}" for problem in finding.problems]
    for run in finding.runs:
        lines.append(f"  $ {command_line(run)}  -> exit {run.exit_code}, "
                     f"{run.seconds:.1f} s")
        lines += [f"    {line}" for line in (run.stderr.strip().splitlines()[-6:])]
    return "\n".join(lines)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_mutated_models_keep_the_untrusted_input_contract(kind: str, tmp_path: Path) -> None:
    rng = random.Random(f"{SEED}-{kind}")
    findings = []
    for mutant in mutants(tmp_path / "seeds", rng, COUNTS[kind], kinds=(kind,),
                          into=tmp_path / "mutants"):
        findings.append(run_mutant(mutant, timeout_s=TIMEOUT_S, memory_mb=MEMORY_MB,
                                   grace_s=GRACE_S))

    assert len(findings) == COUNTS[kind]
    failed = [finding for finding in findings if finding.problems]
    assert not failed, "\n\n".join(_report(finding) for finding in failed)
    # Untrusted files mostly fail to load: the fuzzer reaches the refusals, not only passes.
    codes = {run.exit_code for finding in findings for run in finding.runs}
    assert codes & {2, 3}, codes
