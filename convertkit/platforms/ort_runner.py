"""A runner over one ONNX Runtime CPU session, used by the onnx and cpu:ort platforms."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from convertkit.ir.runtime import open_session, run_session, session_options
from convertkit.platforms import Runner


class OrtRunner(Runner):
    def __init__(self, model_path: Path, optimization_level: str = "ORT_DISABLE_ALL",
                 threads: int = 0) -> None:
        self.model_path = model_path
        self.optimization_level = optimization_level
        self.threads = threads
        self._session = None

    def __enter__(self) -> OrtRunner:
        options = session_options(self.optimization_level, self.threads)
        self._session = open_session(self.model_path, options)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._session = None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._session is not None, "use the runner inside a with block"
        return run_session(self._session, feeds)
