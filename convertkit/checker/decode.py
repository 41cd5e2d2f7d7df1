"""The token-by-token check of a generator: an artifact of a decoder with a KV cache,
decoding the source's greedy continuation of a prompt, step by step with its own cache.

The reference is transformers' own greedy ``generate`` of N new tokens (``--decode-steps``)
on the first check prompt, recorded by the adapter with the raw logits of every step.
The artifact is fed the prompt (an empty cache), then each reference token in turn with
the cache it returned (teacher forcing), and its logits at every step are compared with
the reference's. Its greedy token at a step is the argmax of its logits there: when it
picks the reference's token at every step, its own greedy decode is the reference's,
token for token; when it picks another, the steps after are still compared on the same
context rather than on a continuation that has drifted apart.

A step where the artifact picks another token than the reference is a *tie* when the
reference's own margin between the two tokens is inside the logits' elementwise
tolerance: the two were equal within the precision, and either pick is right.

Verdict: every step's logits within the precision's budget (checker/budgets.py, the same
rule as every output), and identical tokens (ties aside) on at least the precision's
share of steps: every step at fp32, ``MIN_TOKEN_MATCH`` below it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from convertkit.checker.budgets import Budget
from convertkit.checker.metrics import OutputMetrics, compare_output_samples, output_scale
from convertkit.spec import Precision

DECODE_FILE = "decode.npz"
# The share of steps (ties aside) whose token must be the reference's, per precision.
MIN_TOKEN_MATCH = {Precision.FP32: 1.0, Precision.FP16: 0.9, Precision.BF16: 0.9,
                   Precision.INT8: 0.75, Precision.INT4: 0.7}
_PAST = "past_key_values."
_PRESENT = "present."
_FIXED = "fixed/"


@dataclass(frozen=True)
class DecodeReference:
    """The source's greedy decode: the prompt [1, P] (an encoder-decoder's decoder: its
    start token), the new tokens [N], the raw logits [N, vocab] each was chosen from, and
    the inputs that stay as they are at every step (an encoder-decoder's decoder: the
    encoder's attention mask and cross-attention cache, from the source's encoder)."""

    prompt: np.ndarray
    tokens: np.ndarray
    logits: np.ndarray
    by: str  # "transformers 5.24.0 generate (greedy)"
    fixed: Mapping[str, np.ndarray] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        np.savez(path, prompt=self.prompt, tokens=self.tokens, logits=self.logits,
                 by=np.array(self.by),
                 **{_FIXED + name: value for name, value in self.fixed.items()})

    @staticmethod
    def load(path: Path) -> DecodeReference:
        with np.load(path, allow_pickle=False) as data:
            fixed = {key.removeprefix(_FIXED): data[key] for key in data.files
                     if key.startswith(_FIXED)}
            return DecodeReference(data["prompt"], data["tokens"], data["logits"],
                                   str(data["by"]), fixed)


@dataclass(frozen=True)
class DecodeCheck:
    """How an artifact's decode compares with the source's."""

    within_budget: bool
    steps: int
    identical: int  # steps whose token is the reference's
    ties: int  # steps with another token, equal to the reference's within tolerance
    first_difference: int | None  # the first step with another token (ties included)
    reference_tokens: tuple[int, ...]
    tokens: tuple[int, ...]  # the artifact's pick at each step
    step_cosines: tuple[float | None, ...]
    logits: OutputMetrics  # every step's logits, against the reference's
    min_token_match: float
    by: str
    note: str = ""
    prompt_tokens: int = 0
    step_max_abs: tuple[float, ...] = field(default=())

    @property
    def token_match(self) -> float:
        return (self.identical + self.ties) / max(1, self.steps)

    def summary(self) -> str:
        """'16/16 tokens identical to transformers generate; logits cosine >= 0.99999'."""
        ties = f" (+{self.ties} tie(s))" if self.ties else ""
        text = f"{self.identical}/{self.steps} tokens identical{ties} to {self.by}"
        if self.first_difference is not None:
            text += f", first differs at step {self.first_difference + 1}"
        if self.logits.cosine is not None:
            text += f"; logits cosine >= {self.logits.cosine:.5f}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "within_budget": self.within_budget,
                "steps": self.steps, "identical": self.identical, "ties": self.ties,
                "token_match": self.token_match, "min_token_match": self.min_token_match,
                "first_difference": self.first_difference,
                "reference_tokens": list(self.reference_tokens), "tokens": list(self.tokens),
                "step_cosines": list(self.step_cosines),
                "step_max_abs": list(self.step_max_abs),
                "logits": self.logits.to_dict(), "by": self.by, "note": self.note,
                "prompt_tokens": self.prompt_tokens}


@dataclass(frozen=True)
class CacheInputs:
    """The inputs of an exported decoder with a KV cache, read from its ONNX model."""

    past: tuple[str, ...]  # past_key_values.*, in the model's input order
    shapes: Mapping[str, tuple[int, int]]  # per past input: (kv_heads, head_dim)
    inputs: tuple[str, ...] = ()  # every input of the model

    @property
    def takes_position_ids(self) -> bool:
        return "position_ids" in self.inputs

    @staticmethod
    def of(model: onnx.ModelProto) -> CacheInputs | None:
        """None when ``model`` is not a decoder with a KV cache."""
        names = [value.name for value in model.graph.input]
        past = tuple(name for name in names if name.startswith(_PAST))
        if not past or "input_ids" not in names:
            return None
        shapes = {}
        for value in model.graph.input:
            if value.name in past:
                dims = value.type.tensor_type.shape.dim
                shapes[value.name] = (dims[1].dim_value, dims[3].dim_value)
        return CacheInputs(past, shapes, tuple(names))

    def present_for(self, past: str) -> str:
        return _PRESENT + past.removeprefix(_PAST)


def teacher_forced_logits(runner: Any, cache: CacheInputs,
                          reference: DecodeReference) -> np.ndarray:
    """The artifact's last-position logits at each of the reference's steps [N, vocab]:
    the prompt with an empty cache, then each reference token with the cache it
    returned. The reference's fixed inputs (an encoder-decoder's cross-attention cache)
    are fed unchanged at every step."""
    prompt = reference.prompt.astype(np.int64)
    length = prompt.shape[1]
    growing = [name for name in cache.past if name not in reference.fixed]

    def feeds_for(ids: np.ndarray, total: int) -> dict[str, np.ndarray]:
        feeds = {"input_ids": ids, **reference.fixed}
        if "attention_mask" in cache.inputs:
            feeds["attention_mask"] = np.ones((1, total), np.int64)
        if cache.takes_position_ids:
            feeds["position_ids"] = np.arange(total - ids.shape[1], total,
                                              dtype=np.int64)[None]
        return feeds

    feeds = feeds_for(prompt, length)
    for name in growing:
        heads, head_dim = cache.shapes[name]
        feeds[name] = np.zeros((1, heads, 0, head_dim), np.float32)
    steps = []
    for index, token in enumerate(reference.tokens):
        outputs = runner.run(feeds)
        steps.append(np.asarray(outputs["logits"], np.float32)[0, -1])
        feeds = feeds_for(np.array([[int(token)]], np.int64), length + index + 1)
        for name in growing:
            feeds[name] = outputs[cache.present_for(name)]
    return np.stack(steps)


def timed_decode(runner: Any, cache: CacheInputs, reference: DecodeReference,
                 clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """The milliseconds of each of ``runner``'s runs in teacher_forced_logits: the first
    is the prompt's (the time to the first token), the others one cached decode step each
    (the runner fed the presents it returned)."""
    times: list[float] = []

    class _Timed:
        def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            start = clock()
            outputs = runner.run(feeds)
            times.append((clock() - start) * 1000)
            return outputs

    teacher_forced_logits(_Timed(), cache, reference)
    return times


def compare_decode(logits: np.ndarray, reference: DecodeReference, budget: Budget,
                   precision: Precision) -> DecodeCheck:
    """The verdict on an artifact's teacher-forced ``logits`` [N, vocab]."""
    expected = reference.logits.astype(np.float32)
    metrics = compare_output_samples("logits", [row[None] for row in logits],
                                     [row[None] for row in expected], budget)
    picks = logits.argmax(axis=-1)
    identical = ties = 0
    first = None
    for step, (pick, want) in enumerate(zip(picks, reference.tokens, strict=True)):
        if pick == want:
            identical += 1
            continue
        first = step if first is None else first
        row = expected[step]
        tolerance = budget.atol * output_scale(np.abs(row)) + budget.rtol * abs(row[want])
        if row[want] - row[pick] <= tolerance:
            ties += 1
    cosines = tuple(_cosine(got, want) for got, want in zip(logits, expected, strict=True))
    floor = MIN_TOKEN_MATCH.get(precision, MIN_TOKEN_MATCH[Precision.INT8])
    steps = len(reference.tokens)
    token_match = (identical + ties) / max(1, steps)
    note = ""
    if not metrics.within_budget:
        note = "logits outside the budget"
    elif token_match < floor:
        note = f"{token_match:.0%} of tokens identical, under the {floor:.0%} floor"
    return DecodeCheck(
        within_budget=metrics.within_budget and token_match >= floor, steps=steps,
        identical=identical, ties=ties, first_difference=first,
        reference_tokens=tuple(int(t) for t in reference.tokens),
        tokens=tuple(int(t) for t in picks), step_cosines=cosines, logits=metrics,
        min_token_match=floor, by=reference.by, note=note,
        prompt_tokens=int(reference.prompt.shape[1]),
        step_max_abs=tuple(float(np.abs(got - want).max())
                           for got, want in zip(logits, expected, strict=True)))


def _cosine(actual: np.ndarray, expected: np.ndarray) -> float | None:
    norms = float(np.linalg.norm(actual) * np.linalg.norm(expected))
    if not np.isfinite(norms) or norms == 0:
        return None
    return float(np.dot(actual.astype(np.float64), expected.astype(np.float64)) / norms)
