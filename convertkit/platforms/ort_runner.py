"""The one ONNX Runtime runner: a model in an ONNX Runtime CPU session, used by the onnx and
cpu:ort platforms, the fp16 emulation and `convertkit check`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from convertkit.checker.inputs import cast_feeds
from convertkit.ir.runtime import open_session, run_session, session_options
from convertkit.platforms import Runner

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(bfloat16)": "bfloat16", "tensor(int64)": "int64", "tensor(int32)": "int32",
    "tensor(int16)": "int16", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


class OrtRunner(Runner):
    """Feeds are cast to each input's dtype (checker/inputs.py: cast_feeds). The default
    optimisation level, none, judges a model as written."""

    def __init__(self, model_path: Path, optimization_level: str = "ORT_DISABLE_ALL",
                 threads: int = 0) -> None:
        self.model_path = model_path
        self.optimization_level = optimization_level
        self.threads = threads
        self._session = None
        self._input_types: dict[str, str] = {}

    def __enter__(self) -> OrtRunner:
        options = session_options(self.optimization_level, self.threads)
        self._session = open_session(self.model_path, options)
        self._input_types = {i.name: _ORT_TYPES.get(i.type, "")
                             for i in self._session.get_inputs()}
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._session = None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._session is not None, "use the runner inside a with block"
        return run_session(self._session, cast_feeds(feeds, self._input_types))
