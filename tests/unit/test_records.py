"""The records a worker step returns cross the process boundary as JSON and come back as
the same objects; nothing outside the list of records is ever built from that JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convertkit.checker.budgets import budget_for
from convertkit.checker.metrics import OutputMetrics
from convertkit.records import decode, encode
from convertkit.reports.record import ArtifactResult
from convertkit.spec import Precision, Status


def test_an_artifact_result_comes_back_equal() -> None:
    metrics = OutputMetrics(**{f: None for f in OutputMetrics.__dataclass_fields__}
                            | {"name": "logits"})
    result = ArtifactResult("cpu:ort", Status.PASS, "cpu-ort/model.onnx", "int8",
                            budget_for(Precision.INT8), (metrics,), ("a note",),
                            samples=4, accuracy={"drop": np.float64(0.5)})

    back = decode(json.loads(json.dumps(encode(result))))

    assert back == ArtifactResult("cpu:ort", Status.PASS, "cpu-ort/model.onnx", "int8",
                                  budget_for(Precision.INT8), (metrics,), ("a note",),
                                  samples=4, accuracy={"drop": 0.5})
    assert isinstance(back.status, Status) and isinstance(back.outputs, tuple)


def test_paths_and_nested_containers_keep_their_types() -> None:
    value = {"where": Path("/x/y"), "pairs": (1, (2, 3)), "list": [Precision.FP16]}

    assert decode(json.loads(json.dumps(encode(value)))) == value


@pytest.mark.parametrize("name", ["Popen", "Path", "ConvertOptions"])
def test_a_class_outside_the_list_is_never_built(name: str) -> None:
    with pytest.raises(ValueError, match="not a record"):
        decode({"__record__": name, "args": ["sh", "-c", "true"]})
    with pytest.raises(ValueError, match="not a record"):
        decode({"__enum__": name, "value": 1})
