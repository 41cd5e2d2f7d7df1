"""How far an artifact may stray from the reference, per precision.

Every precision is judged by the same tests, over every check sample; an output passes
either of two:

- elementwise: ``|actual - expected| <= atol * scale + rtol * |expected|``, with ``scale``
  the output's root-mean-square reference value, at least 1. The relative term lets
  large-valued outputs (an untrained ResNet-50 reaches 1e3, a random DenseNet 3e7) pass
  when they agree in relative terms, the absolute term covers values near zero; an
  element near zero (large terms that cancelled) carries the rounding error of the values
  it came from, which is why ``atol`` is measured in the output's scale;
- direction, where the precision has a cosine floor (every reduced precision): the
  smallest cosine similarity of any sample at least ``min_cosine``, and for outputs
  shaped like class scores top-1 agreement and top-5 overlap at least ``min_top1`` and
  ``min_top5``, with nothing NaN or Inf on one side only. Reduced precision moves single
  elements far while the output as a whole stays put.

The thresholds only loosen as precision drops (fp32, fp16, bf16, int8, int4): numbers that pass
at one precision pass at every lower one, and no precision is judged by a kind of test
another is spared (a bf16 ResNet-50 at cosine 0.99995 used to fail elementwise while
int8 passed at 0.9993). With labels, an artifact also fails when its top-1 accuracy is
more than ``max_accuracy_drop`` points below the source model's.

The defaults below can be overridden per precision by a TOML file (``--budget-file``)::

    [fp16]
    atol = 0.02
    rtol = 0.02

    [int8]
    min_cosine = 0.98

and ``--atol``/``--rtol`` override both for the one run.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from convertkit.errors import UsageError
from convertkit.spec import Precision

CHECK_RULE = ("over every sample, each output: elementwise |actual - reference| <= atol * "
              "scale + rtol * |reference| (scale = max(1, root-mean-square of the output's "
              "reference)), or, for budgets with min_cosine, the smallest cosine >= "
              "min_cosine and top-1/top-5 agreement >= min_top1/min_top5 for class scores; "
              "thresholds loosen from fp32 to fp16, bf16, int8 and int4, so numbers that pass at "
              "one precision pass at every lower one; a NaN or Inf reference fails; with "
              "labels, top-1 accuracy at most max_accuracy_drop points below the source's")

@dataclass(frozen=True)
class Budget:
    atol: float
    rtol: float
    # With min_cosine set, an output that misses the elementwise tolerance may pass by
    # direction: cosine >= min_cosine on every sample, top-1/top-5 agreement at least
    # min_top1/min_top5 for class scores, nothing NaN or Inf on one side only.
    min_cosine: float | None = None
    min_top1: float | None = None
    min_top5: float | None = None
    # With labels: the most top-1 accuracy (percentage points) the artifact may lose.
    max_accuracy_drop: float | None = None

    @property
    def is_elementwise(self) -> bool:
        return self.min_cosine is None

    def with_overrides(self, atol: float | None = None, rtol: float | None = None, *,
                       min_cosine: float | None = None, min_top1: float | None = None,
                       min_top5: float | None = None,
                       max_accuracy_drop: float | None = None) -> Budget:
        """Each value given replaces the budget's. A tolerance (atol or rtol) given without
        any floor asks for the elementwise rule alone: the cosine and top-k floors are
        dropped."""
        floors = (min_cosine, min_top1, min_top5)
        base = self
        if (atol is not None or rtol is not None) and all(f is None for f in floors):
            base = replace(self, min_cosine=None, min_top1=None, min_top5=None)
        return replace(
            base, atol=base.atol if atol is None else atol,
            rtol=base.rtol if rtol is None else rtol,
            min_cosine=base.min_cosine if min_cosine is None else min_cosine,
            min_top1=base.min_top1 if min_top1 is None else min_top1,
            min_top5=base.min_top5 if min_top5 is None else min_top5,
            max_accuracy_drop=(base.max_accuracy_drop if max_accuracy_drop is None
                               else max_accuracy_drop))

    def to_dict(self) -> dict[str, float]:
        optional = {"min_cosine": self.min_cosine, "min_top1": self.min_top1,
                    "min_top5": self.min_top5, "max_accuracy_drop": self.max_accuracy_drop}
        return {"atol": self.atol, "rtol": self.rtol,
                **{k: v for k, v in optional.items() if v is not None}}


# Every threshold loosens (or stays) from one precision to the next lower one: tested.
PRECISION_ORDER = (Precision.FP32, Precision.FP16, Precision.BF16, Precision.INT8,
                   Precision.INT4)
DEFAULT_BUDGETS: dict[Precision, Budget] = {
    Precision.FP32: Budget(atol=1e-4, rtol=1e-3, max_accuracy_drop=0.0),
    Precision.FP16: Budget(atol=1e-2, rtol=1e-2, min_cosine=0.9999, min_top1=0.99,
                           min_top5=0.95, max_accuracy_drop=0.5),
    Precision.BF16: Budget(atol=5e-2, rtol=5e-2, min_cosine=0.999, min_top1=0.98,
                           min_top5=0.9, max_accuracy_drop=0.5),
    Precision.INT8: Budget(atol=1e-1, rtol=1e-1, min_cosine=0.98, min_top1=0.9, min_top5=0.8,
                           max_accuracy_drop=1.0),
    # Weight-only int4 (block-wise, 32 weights per scale). Measured on a random
    # GPT-2-small's 16 greedy decode steps: logits at cosine 0.965 (ONNX Runtime's
    # MatMulNBits) and 0.968 (NNCF), 14 of 16 tokens identical and the other 2 ties, top-1
    # agreement 0.875, top-5 overlap 0.59 to 0.65: a random model's logits are flat, and
    # its top 5 of 50257 near-equal values is mostly a draw among near-ties.
    Precision.INT4: Budget(atol=2e-1, rtol=2e-1, min_cosine=0.95, min_top1=0.8, min_top5=0.5,
                           max_accuracy_drop=2.0),
}
FLOOR_KEYS = ("min_cosine", "min_top1", "min_top5")

BudgetTable = Mapping[Precision, Budget]


def budget_for(precision: Precision, atol: float | None = None,
               rtol: float | None = None, table: BudgetTable | None = None,
               max_accuracy_drop: float | None = None) -> Budget:
    """The budget for ``precision`` from ``table`` (default: DEFAULT_BUDGETS), with the
    command line's ``atol``/``rtol``/``max_accuracy_drop`` on top."""
    return (table or DEFAULT_BUDGETS)[precision].with_overrides(
        atol, rtol, max_accuracy_drop=max_accuracy_drop)


def load_budget_file(path: str | Path) -> dict[Precision, Budget]:
    """DEFAULT_BUDGETS with the per-precision tables of a TOML file on top. A table may
    set any of atol, rtol and the floors (a tolerance without a floor asks for the
    elementwise rule, see Budget.with_overrides); unknown precisions and keys are refused."""
    path = Path(path)
    hint = ("write one table per precision, e.g. [fp16] atol = 0.02 rtol = 0.02; keys: "
            f"atol, rtol, {', '.join(FLOOR_KEYS)}, max_accuracy_drop (points); "
            f"precisions: {', '.join(p.value for p in Precision)}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UsageError(f"--budget-file not found: {path}", hint="pass an existing TOML file",
                         code="file-not-found") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read --budget-file {path}: {exc}", hint=hint,
                         code="bad-budget-file") from exc
    table = dict(DEFAULT_BUDGETS)
    for key, values in data.items():
        try:
            precision = Precision(key.lower())
        except ValueError:
            raise UsageError(f"--budget-file {path}: unknown precision [{key}]", hint=hint,
                             code="bad-budget-file") from None
        if not isinstance(values, dict):
            raise UsageError(f"--budget-file {path}: {key} must be a table", hint=hint,
                             code="bad-budget-file")
        unknown = sorted(set(values) - {"atol", "rtol", "max_accuracy_drop", *FLOOR_KEYS})
        if unknown:
            raise UsageError(f"--budget-file {path}: unknown key(s) {', '.join(unknown)} "
                             f"in [{key}]", hint=hint, code="bad-budget-file")
        for name, value in values.items():
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not math.isfinite(value) or value < 0
                    or (name in FLOOR_KEYS and value > 1)):
                limits = "between 0 and 1" if name in FLOOR_KEYS else ">= 0"
                raise UsageError(f"--budget-file {path}: [{key}] {name} = {value!r} is not a "
                                 f"number {limits}", hint=hint, code="bad-budget-file")
        table[precision] = table[precision].with_overrides(
            _float_or_none(values.get("atol")), _float_or_none(values.get("rtol")),
            max_accuracy_drop=_float_or_none(values.get("max_accuracy_drop")),
            **{floor: _float_or_none(values.get(floor)) for floor in FLOOR_KEYS})
    return table


def budget_table_dict(table: BudgetTable | None = None) -> dict[str, dict[str, float]]:
    """The table as report data: {"fp32": {"atol": ..., "rtol": ...}, ...}."""
    return {p.value: b.to_dict() for p, b in (table or DEFAULT_BUDGETS).items()}


def _float_or_none(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
