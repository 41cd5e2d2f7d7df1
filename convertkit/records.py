"""Records across the process boundary: the frozen dataclasses a worker step returns
(isolation.Worker), written as JSON and read back as the same objects.

Only the classes listed in RECORD_CLASSES are ever built from the JSON, so a child that
went wrong can make the parent build nothing else. This is a transport, not a file
format: the reports keep their own documented shape (each record's ``to_dict``).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
from pathlib import Path
from typing import Any

import numpy as np

# "module:Class" of every record that may cross; enums included.
RECORD_CLASSES = (
    "convertkit.reports.record:ArtifactResult",
    "convertkit.reports.record:MixedPrecision",
    "convertkit.reports.record:KeptNode",
    "convertkit.checker.budgets:Budget",
    "convertkit.checker.decode:DecodeCheck",
    "convertkit.checker.metrics:OutputMetrics",
    "convertkit.checker.localize:Localization",
    "convertkit.checker.localize:DivergingNode",
    "convertkit.checker.localize:TensorError",
    "convertkit.checker.localize:Repro",
    "convertkit.checker.source_map:SourceLocation",
    "convertkit.selection:Timing",
    "convertkit.spec:Status",
    "convertkit.spec:Precision",
    "convertkit.spec:InputSpec",
    "convertkit.ir.info:OnnxInfo",
    "convertkit.ir.info:TensorInfo",
    "convertkit.ir.info:OpCount",
    "convertkit.ir.preflight:Preflight",
)


@functools.cache
def _classes() -> dict[str, type]:
    classes = {}
    for entry in RECORD_CLASSES:
        module, _, name = entry.partition(":")
        classes[name] = getattr(importlib.import_module(module), name)
    return classes


def encode(value: Any) -> Any:
    """``value`` as JSON data: records, enums, tuples and paths tagged, numbers plain."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if name not in _classes():
            raise TypeError(f"{name} is not a record that may cross processes")
        return {"__record__": name, **{f.name: encode(getattr(value, f.name))
                                      for f in dataclasses.fields(value)}}
    if isinstance(value, enum.Enum):
        return {"__enum__": type(value).__name__, "value": value.value}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(item) for item in value]}
    if isinstance(value, list):
        return [encode(item) for item in value]
    if isinstance(value, dict):
        return {str(key): encode(item) for key, item in value.items()}
    if isinstance(value, Path):
        return {"__path__": str(value)}
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode(data: Any) -> Any:
    """The value ``encode`` wrote; a record or enum not in RECORD_CLASSES is refused."""
    if isinstance(data, list):
        return [decode(item) for item in data]
    if not isinstance(data, dict):
        return data
    if "__record__" in data:
        cls = _known(data["__record__"])
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: decode(item) for key, item in data.items() if key in fields})
    if "__enum__" in data:
        return _known(data["__enum__"])(data["value"])
    if "__tuple__" in data:
        return tuple(decode(item) for item in data["__tuple__"])
    if "__path__" in data:
        return Path(data["__path__"])
    return {key: decode(item) for key, item in data.items()}


def _known(name: str) -> type:
    cls = _classes().get(name)
    if cls is None:
        raise ValueError(f"{name!r} is not a record that may cross processes")
    return cls
