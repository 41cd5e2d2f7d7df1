"""How far an artifact may stray from the reference, per precision.

The pass rule is elementwise ``|actual - expected| <= atol + rtol * |expected|``: the
relative term lets large-valued outputs (an untrained ResNet-50 reaches 1e3, a random
DenseNet 3e7) pass when they agree in relative terms, the absolute term covers values
near zero.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from convertkit.spec import Precision


@dataclass(frozen=True)
class Budget:
    atol: float
    rtol: float

    def with_overrides(self, atol: float | None = None, rtol: float | None = None) -> Budget:
        return replace(self, atol=self.atol if atol is None else atol,
                       rtol=self.rtol if rtol is None else rtol)

    def to_dict(self) -> dict[str, float]:
        return {"atol": self.atol, "rtol": self.rtol}


DEFAULT_BUDGETS: dict[Precision, Budget] = {
    Precision.FP32: Budget(atol=1e-4, rtol=1e-3),
    Precision.FP16: Budget(atol=1e-2, rtol=1e-2),
    Precision.BF16: Budget(atol=5e-2, rtol=5e-2),
    Precision.INT8: Budget(atol=1e-1, rtol=1e-1),
}


def budget_for(precision: Precision, atol: float | None = None,
               rtol: float | None = None) -> Budget:
    return DEFAULT_BUDGETS[precision].with_overrides(atol, rtol)
