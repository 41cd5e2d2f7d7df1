"""`-t cpu` with no toolchain: build every CPU candidate, check each, time the ones that
pass on this machine, and keep the fastest, unless it is not faster than the noise.

A candidate is one platform at one precision (cpu:ort fp32, cpu:openvino bf16, ...). A
candidate that calibrated on generated inputs (no real samples were given) is a smoke
test, not evidence: it is never chosen unless the user asked for its precision.

Timing: every candidate that passed is opened, warmed up, then run once per round in
turn (round-robin), so a burst of load on the machine falls on all of them rather than
on whichever happened to be timed then; every candidate at the runtime's default thread
count, the same for all: every core. Each gets its median and its spread (the
interquartile range of its runs). The fastest median wins over another candidate only
when it was faster in at least WIN_SHARE of the rounds, each round comparing two runs
made moments apart (a paired comparison, which a burst of load on the machine hardly
moves); among the candidates it does not beat that way, the highest precision is chosen
(fp32 before bf16 before int8), so that noise cannot trade accuracy for nothing.
Measured here: the same ResNet-50 under ORT fp32 took 42 to 75 ms from one run to the
next on a loaded 2-core machine, and timed one after the other the choice flipped
between identical runs.

A decoder with a KV cache is timed as it is used, decoding: each round runs the check's
greedy decode in every candidate in turn (checker/decode.py: the prompt with an empty
cache, then one token per step fed the cache the candidate returned). The prompt's step is
the time to the first token; the mean of the cached steps is the round's per-token
latency, by which the candidates are compared and chosen (its median over the rounds,
and tokens per second from it). Decoders also get weight-only int4 candidates
(``DECODER_ONLY``): their speed is bound by reading the weights, and int4 weights are an
eighth of fp32's bytes.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from convertkit.platforms import Platform, Runner
from convertkit.spec import Family, Precision, Status, TargetSpec

if TYPE_CHECKING:
    from convertkit.checker.decode import CacheInputs, DecodeCheck, DecodeReference

WARMUP_RUNS = 3
TIMED_ROUNDS = 20
TIME_LIMIT_S = 10.0  # per candidate; fewer rounds when a model is slow
MIN_ROUNDS = 5
WIN_SHARE = 0.7  # of the rounds the fastest must win to count as faster than another
# Higher precision first: the order in which candidates within noise are preferred.
PRECISION_PREFERENCE = (Precision.FP32, Precision.FP16, Precision.BF16, Precision.INT8,
                        Precision.INT4)
# Precisions `-t cpu` considers only for a decoder with a KV cache (weight-only int4).
DECODER_ONLY = frozenset({Precision.INT4})
DECODE_WARMUP_ROUNDS = 1


@dataclass(frozen=True)
class Candidate:
    platform: type[Platform]
    precision: Precision

    @property
    def target(self) -> TargetSpec:
        return TargetSpec(self.platform.family.value, self.platform.name)

    @property
    def folder(self) -> str:
        return f"{self.platform.family.value}/{self.platform.name}-{self.precision.value}"


def candidates(platforms: Iterable[type[Platform]], family: Family,
               precision: Precision | None, *, decoder: bool = False) -> list[Candidate]:
    """Every installed platform of ``family`` at each precision it builds (only
    ``precision`` when given); DECODER_ONLY precisions only for a ``decoder``."""
    found = []
    for platform in platforms:
        if platform.family != family or not platform.is_available():
            continue
        builds = platform().precisions_for(TargetSpec(family.value, platform.name)).builds
        found += [Candidate(platform, p) for p in builds
                  if (precision is None or p == precision)
                  and (decoder or p not in DECODER_ONLY)]
    return found


@dataclass(frozen=True)
class Timing:
    median_ms: float
    spread_ms: float  # interquartile range of the timed runs
    round_ms: tuple[float, ...]  # one run per round, in round order
    # A decoder, timed decoding (time_decoding): median_ms and round_ms are per decoded
    # token (cached steps); the prompt's step is the time to the first token.
    ttft_ms: float | None = None
    tokens_per_s: float | None = None

    @property
    def runs(self) -> int:
        return len(self.round_ms)


def time_interleaved(runners: Mapping[int, Runner], feeds: Mapping[str, Any],
                     clock: Callable[[], float] = time.perf_counter) -> dict[int, Timing]:
    """Time every runner on ``feeds``, one run each per round, round after round, until
    TIMED_ROUNDS or the time limit (at least MIN_ROUNDS). Runners are opened here."""
    with contextlib.ExitStack() as stack:
        opened = {key: stack.enter_context(runner) for key, runner in runners.items()}
        for runner in opened.values():
            for _ in range(WARMUP_RUNS):
                runner.run(feeds)
        times: dict[int, list[float]] = {key: [] for key in opened}
        deadline = clock() + TIME_LIMIT_S * max(1, len(opened))
        rounds = 0
        while rounds < TIMED_ROUNDS and (rounds < MIN_ROUNDS or clock() < deadline):
            for key, runner in opened.items():
                start = clock()
                runner.run(feeds)
                times[key].append((clock() - start) * 1000)
            rounds += 1
    return {key: _timing(values) for key, values in times.items()}


def time_decoding(runners: Mapping[int, Runner], cache: CacheInputs,
                  reference: DecodeReference,
                  clock: Callable[[], float] = time.perf_counter) -> dict[int, Timing]:
    """Time every runner decoding ``reference``'s prompt and tokens with its own cache
    (checker.decode.timed_decode), one decode each per round, round after round, like
    time_interleaved. Per round: the prompt's step (time to first token) and the mean of
    the cached steps (per-token latency)."""
    from convertkit.checker.decode import timed_decode

    with contextlib.ExitStack() as stack:
        opened = {key: stack.enter_context(runner) for key, runner in runners.items()}
        for runner in opened.values():
            for _ in range(DECODE_WARMUP_ROUNDS):
                timed_decode(runner, cache, reference, clock)
        first: dict[int, list[float]] = {key: [] for key in opened}
        per_token: dict[int, list[float]] = {key: [] for key in opened}
        deadline = clock() + TIME_LIMIT_S * max(1, len(opened))
        rounds = 0
        while rounds < TIMED_ROUNDS and (rounds < MIN_ROUNDS or clock() < deadline):
            for key, runner in opened.items():
                steps = timed_decode(runner, cache, reference, clock)
                first[key].append(steps[0])
                per_token[key].append(statistics.fmean(steps[1:] or steps))
            rounds += 1
    timings = {}
    for key, values in per_token.items():
        timing = _timing(values)
        timings[key] = replace(timing, ttft_ms=statistics.median(first[key]),
                               tokens_per_s=1000.0 / timing.median_ms
                               if timing.median_ms > 0 else None)
    return timings


def _timing(values: Sequence[float]) -> Timing:
    quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return Timing(statistics.median(values), quartiles[2] - quartiles[0], tuple(values))


@dataclass(frozen=True)
class CandidateRecord:
    """One candidate's outcome, as the report lists it."""

    target: str
    precision: str
    status: Status
    path: str | None
    latency_ms: float | None  # median, measured only for candidates that passed
    max_abs: float | None
    cosine: float | None
    chosen: bool = False
    reason: str = ""  # why it failed, was not run, or cannot be chosen
    calibrated_on_generated: bool = False  # its build tuned itself on generated inputs
    accuracy_drop: float | None = None  # with labels: points of top-1 accuracy it lost
    spread_ms: float | None = None  # interquartile range of its timed runs
    round_ms: tuple[float, ...] = ()  # its timed runs, one per round, in round order
    # int8 that missed its budget and passed with nodes kept in fp32: MixedPrecision.summary()
    mixed: str = ""
    # A decoder, timed decoding: latency_ms is per decoded token; the prompt's step took
    # ttft_ms (time to first token)
    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    # A decoder: its token-by-token check (decode_record of checker.decode.DecodeCheck)
    decode: dict[str, Any] | None = None

    @property
    def runs(self) -> int | None:
        return len(self.round_ms) or None

    @property
    def is_eligible(self) -> bool:
        return (self.status == Status.PASS and self.latency_ms is not None
                and not self.calibrated_on_generated)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "precision": self.precision,
                "status": self.status.value, "path": self.path,
                "latency_ms": self.latency_ms, "spread_ms": self.spread_ms, "runs": self.runs,
                "round_ms": [round(t, 4) for t in self.round_ms],
                "max_abs": self.max_abs, "cosine": self.cosine, "chosen": self.chosen,
                "reason": self.reason, "calibrated_on_generated": self.calibrated_on_generated,
                "accuracy_drop": self.accuracy_drop, "mixed": self.mixed,
                "ttft_ms": self.ttft_ms, "tokens_per_s": self.tokens_per_s,
                "decode": self.decode}


def decode_record(check: DecodeCheck | None) -> dict[str, Any] | None:
    """What a candidate's record keeps of its decode check."""
    if check is None:
        return None
    return {"summary": check.summary(), "within_budget": check.within_budget,
            "token_match": check.token_match, "min_token_match": check.min_token_match,
            "steps": check.steps, "note": check.note}


NOT_EVIDENCE = "not chosen: calibrated on generated inputs"
NOT_EVIDENCE_HINT = ("a build calibrated on generated inputs is a smoke test, not evidence: "
                     "pass real samples with --data or --calib-data, or ask for its "
                     "precision with --precision")


def choose(records: Sequence[CandidateRecord]) -> tuple[int, str] | None:
    """The candidate to keep and why, or None when none may be chosen: the fastest, unless
    it did not beat a candidate of higher precision in WIN_SHARE of the rounds (module
    docstring); then the highest such precision (its fastest)."""
    eligible = [i for i, r in enumerate(records) if r.is_eligible]
    if not eligible:
        return None
    fastest = min(eligible, key=lambda i: records[i].latency_ms or 0.0)
    best = records[fastest]
    close = [i for i in eligible if i == fastest or not _beats(best, records[i])]
    chosen = min(close, key=lambda i: (_preference(records[i].precision),
                                       records[i].latency_ms or 0.0))
    record = records[chosen]
    timing = f"{record.latency_ms:.2f} ms median, spread {record.spread_ms or 0.0:.2f} ms"
    if record.tokens_per_s is not None:
        timing = (f"decoding {record.tokens_per_s:.1f} tokens/s, {record.latency_ms:.2f} ms "
                  f"per token median, spread {record.spread_ms or 0.0:.2f} ms; first token "
                  f"{record.ttft_ms or 0.0:.1f} ms")
    if chosen == fastest:
        reason = f"the fastest of {len(eligible)} that passed ({timing})"
        if len(eligible) > 1:
            reason += f"; it beat every other in at least {WIN_SHARE:.0%} of the rounds"
        return chosen, reason
    wins = _wins(best, record)
    beaten = (f"beat it in only {wins[0]} of {wins[1]} rounds" if wins
              else f"is within its spread ({best.latency_ms:.2f} ms)")
    return chosen, (f"of higher precision than the fastest, {_label(best)}, which {beaten} "
                    f"({timing})")


def _wins(best: CandidateRecord, other: CandidateRecord) -> tuple[int, int] | None:
    """In how many of how many rounds ``best`` ran faster than ``other``; None when their
    runs were not timed in the same rounds."""
    if not len(best.round_ms) == len(other.round_ms) >= MIN_ROUNDS:
        return None
    wins = sum(b < o for b, o in zip(best.round_ms, other.round_ms, strict=True))
    return wins, len(best.round_ms)


def _beats(best: CandidateRecord, other: CandidateRecord) -> bool:
    wins = _wins(best, other)
    if wins is not None:
        return wins[0] >= WIN_SHARE * wins[1]
    noise = max(other.spread_ms or 0.0, best.spread_ms or 0.0)
    return (other.latency_ms or 0.0) - (best.latency_ms or 0.0) > noise


def _preference(precision: str) -> int:
    order = [p.value for p in PRECISION_PREFERENCE]
    return order.index(precision) if precision in order else len(order)


def _label(record: CandidateRecord) -> str:
    return f"{record.target} {record.precision}"
