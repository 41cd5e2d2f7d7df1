"""convertkit/selection.py: the CPU candidates, timed in turn, and a choice the timing
noise cannot flip."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from convertkit.platforms import Runner
from convertkit.platforms.cpu import OrtCpuPlatform
from convertkit.platforms.onnx import OnnxPlatform
from convertkit.selection import (
    MIN_ROUNDS,
    TIMED_ROUNDS,
    WARMUP_RUNS,
    CandidateRecord,
    candidates,
    choose,
    time_decoding,
    time_interleaved,
)
from convertkit.spec import Family, Precision, Status


def _record(latency: float | None, status: Status = Status.PASS, precision: str = "fp32",
            spread: float = 0.0, target: str = "cpu:x", generated: bool = False,
            rounds: tuple[float, ...] = ()) -> CandidateRecord:
    return CandidateRecord(target, precision, status, "p", latency, 0.0, 1.0,
                           spread_ms=spread, calibrated_on_generated=generated,
                           round_ms=rounds)


def test_choose_ignores_failed_untimed_and_unproven_candidates() -> None:
    records = [_record(1.0, Status.FAIL), _record(5.0), _record(None, Status.ERROR),
               _record(3.0), _record(0.5, precision="int8", generated=True)]

    chosen, why = choose(records)

    assert chosen == 3
    assert "the fastest of 2 that passed" in why


def test_choose_is_none_when_nothing_may_be_chosen() -> None:
    assert choose([_record(1.0, Status.FAIL), _record(None, Status.ERROR),
                   _record(0.5, generated=True)]) is None


def test_a_lower_precision_must_beat_the_noise_to_win() -> None:
    """Runs not timed in the same rounds: int8 measures 8% faster but the runs spread by
    10%, so fp32 is kept, and why is said."""
    fp32 = _record(10.0, precision="fp32", spread=1.0, target="cpu:ort")
    int8 = _record(9.2, precision="int8", spread=0.8, target="cpu:ort")

    chosen, why = choose([int8, fp32])

    assert chosen == 1
    assert "higher precision than the fastest, cpu:ort int8, which is within its spread" in why


def test_paired_rounds_decide_who_is_faster() -> None:
    """A burst of load that slows both candidates in a round moves their medians and
    spreads, not which of the two was faster in that round."""
    load = (0.0, 30.0, 0.0, 50.0, 10.0, 0.0, 40.0, 0.0, 20.0, 0.0)
    fp32 = _record(12.0, precision="fp32", spread=25.0, target="cpu:ort",
                   rounds=tuple(10.0 + extra for extra in load))
    steady_int8 = _record(11.0, precision="int8", spread=25.0, target="cpu:ort",
                          rounds=tuple(9.0 + extra for extra in load))

    chosen, why = choose([fp32, steady_int8])

    assert chosen == 1  # faster in every round, though by less than the spread
    assert "beat every other in at least 70% of the rounds" in why


def test_a_lower_precision_that_wins_too_few_rounds_is_not_chosen() -> None:
    fp32_rounds = (10.0,) * 10
    int8_rounds = (9.0,) * 6 + (11.0,) * 4  # faster in 6 of 10 rounds: 60% < 70%
    fp32 = _record(10.0, precision="fp32", rounds=fp32_rounds, target="cpu:ort")
    int8 = _record(9.0, precision="int8", rounds=int8_rounds, target="cpu:openvino")

    chosen, why = choose([int8, fp32])

    assert chosen == 1
    assert "cpu:openvino int8, which beat it in only 6 of 10 rounds" in why


def test_a_lower_precision_that_beats_the_noise_wins() -> None:
    fp32 = _record(10.0, precision="fp32", spread=0.3)
    bf16 = _record(6.0, precision="bf16", spread=0.4)
    int8 = _record(5.8, precision="int8", spread=0.3)

    chosen, _ = choose([fp32, bf16, int8])

    assert chosen == 1  # int8 is faster than bf16 only within the noise: bf16 is kept


class _Recorder(Runner):
    """A real runner over a callable that records the order of the runs."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def __enter__(self) -> _Recorder:
        self.calls.append(f"open {self.name}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.calls.append(f"close {self.name}")

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append(self.name)
        return {"y": feeds["x"]}


def test_candidates_are_timed_in_turn_round_after_round() -> None:
    calls: list[str] = []
    ticks = iter(range(10**6))

    timings = time_interleaved({0: _Recorder("a", calls), 1: _Recorder("b", calls)},
                               {"x": np.zeros(2)}, clock=lambda: float(next(ticks)))

    runs = [c for c in calls if c in ("a", "b")]
    warmup = 2 * WARMUP_RUNS
    assert runs[:warmup] == ["a"] * WARMUP_RUNS + ["b"] * WARMUP_RUNS
    assert runs[warmup:] == ["a", "b"] * (len(runs[warmup:]) // 2)  # interleaved
    assert MIN_ROUNDS <= timings[0].runs <= TIMED_ROUNDS
    assert timings[0].median_ms == 1000.0 and timings[0].spread_ms == 0.0
    assert calls[-2:] == ["close b", "close a"]


class _Decoder(Runner):
    """A real runner shaped like an exported decoder (logits, one layer's presents) whose
    prompt step costs 4 clock ticks more than a cached step."""

    def __init__(self, name: str, calls: list[str], clock: list[int]) -> None:
        self.name, self.calls, self.clock = name, calls, clock

    def __enter__(self) -> _Decoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tokens = feeds["input_ids"].shape[1]
        if tokens > 1:
            self.clock[0] += 4
        self.calls.append(f"{self.name}{'P' if tokens > 1 else ''}")
        past = feeds["past_key_values.0.key"]
        present = np.concatenate([past, np.zeros((1, 2, tokens, 4), np.float32)], axis=2)
        return {"logits": np.zeros((1, tokens, 10), np.float32),
                "present.0.key": present, "present.0.value": present}


def test_decoders_are_timed_decoding_in_turn_round_after_round() -> None:
    from convertkit.checker.decode import CacheInputs, DecodeReference

    cache = CacheInputs(("past_key_values.0.key", "past_key_values.0.value"),
                        {"past_key_values.0.key": (2, 4), "past_key_values.0.value": (2, 4)},
                        ("input_ids", "attention_mask", "past_key_values.0.key",
                         "past_key_values.0.value"))
    reference = DecodeReference(np.zeros((1, 5), np.int64), np.arange(3),
                                np.zeros((3, 10), np.float32), "test")
    calls: list[str] = []
    clock = [0]

    def tick() -> float:
        clock[0] += 1
        return float(clock[0])

    timings = time_decoding({0: _Decoder("a", calls, clock), 1: _Decoder("b", calls, clock)},
                            cache, reference, clock=tick)

    # One decode per runner per round: the prompt, then a cached step per further token.
    assert calls[:6] == ["aP", "a", "a", "bP", "b", "b"]
    assert calls[6:] == ["aP", "a", "a", "bP", "b", "b"] * (len(calls[6:]) // 6)
    timing = timings[1]
    assert MIN_ROUNDS <= timing.runs <= TIMED_ROUNDS
    assert timing.ttft_ms == 5000.0  # the prompt's step: 1 tick + 4
    assert timing.median_ms == 1000.0 and timing.tokens_per_s == 1.0


def test_candidates_are_the_family_platforms_at_each_precision() -> None:
    found = candidates([OnnxPlatform, OrtCpuPlatform], Family.CPU, None)

    assert [(c.platform, c.precision) for c in found] == [
        (OrtCpuPlatform, Precision.FP32), (OrtCpuPlatform, Precision.INT8)]
    assert found[1].folder == "cpu/ort-int8"


def test_precision_limits_the_candidates() -> None:
    found = candidates([OrtCpuPlatform], Family.CPU, Precision.INT8)

    assert [c.precision for c in found] == [Precision.INT8]
