"""PaddlePaddle sources: inference models (a Paddle 3 PIR ``*.json`` or a legacy
``*.pdmodel``, each with its ``*.pdiparams``; a folder holding one model is enough) and
``FILE.py:NAME`` / ``module:NAME`` naming a ``paddle.nn.Layer`` or a callable returning one.

A Layer is saved with ``paddle.jit.save`` (InputSpecs from ``-i``, named axes left dynamic)
and then lowered like an inference model. The exporter is paddle2onnx, run in a process of
its own: it aborts the process (SIGABRT) on an unsupported operator without naming it, and
``paddle.onnx.export`` calls ``sys.exit``. When it fails, this adapter reads the program
itself to name the operators paddle2onnx lacks and where they are.

References come from Paddle itself: the Layer in dygraph mode for Python sources, the
Paddle Inference predictor for inference models.

Where things are:

- ``model_files``: which files form an inference model (detection, pairing a program with
  its ``.pdiparams``).
- ``program``: what a program records (inputs, parameters, operators), whichever format;
  ``pir_program`` and ``legacy_program`` read the two formats, ``params_file`` reads a
  ``.pdiparams`` file's tensor headers and checks it belongs with its program. None of
  these needs Paddle (``legacy_program`` uses Paddle's protobuf classes).
- ``inference_model``: lowering an inference model (Paddle Inference predictor).
- ``layer``: lowering a ``paddle.nn.Layer`` (weights, ``paddle.jit.save``, a forward
  whose first argument is not ``self``).
- ``export``: paddle2onnx in a child process, and naming the exported model's axes and
  outputs; ``unsupported``: naming the operators paddle2onnx cannot convert.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import ClassVar

from convertkit.adapters import Adapter, Lowered, LowerRequest, save_check_data
from convertkit.adapters.paddle.inference_model import lower_inference_model
from convertkit.adapters.paddle.layer import lower_layer
from convertkit.adapters.paddle.model_files import (
    LEGACY_SUFFIX,
    PARAMS_SUFFIX,
    PIR_SUFFIX,
    is_pir_json,
    model_files_in,
    models_beside,
)
from convertkit.adapters.python_source import source_mentions
from convertkit.dependencies import require
from convertkit.errors import UsageError
from convertkit.spec import SourceRef


class PaddleAdapter(Adapter):
    name: ClassVar[str] = "paddle"
    # --trust-code: let paddle.load unpickle --weights in full.
    options: ClassVar[frozenset[str]] = frozenset({"trust_code"})

    def detect(self, source: SourceRef) -> bool:
        if source.is_python_object:
            return source_mentions(source, ("paddle",))
        path = source.path
        if path is None or not path.exists():
            return False
        if path.is_dir():
            return bool(model_files_in(path))
        suffix = path.suffix.lower()
        if suffix == LEGACY_SUFFIX:
            return True
        if suffix == PIR_SUFFIX:
            return is_pir_json(path)
        if suffix == PARAMS_SUFFIX:
            return bool(models_beside(path))
        return False

    def lower(self, request: LowerRequest) -> Lowered:
        if request.options.trust_code and request.options.weights is None:
            raise UsageError("--trust-code does not apply to Paddle sources without --weights",
                             hint="drop --trust-code; for Paddle it lets paddle.load read "
                             "--weights FILE.pdparams", code="option-not-applicable")
        paddle = require("paddle", name="PaddlePaddle", extra="paddle")
        lower_source = lower_layer if request.source.is_python_object else lower_inference_model
        with tempfile.TemporaryDirectory(prefix="convertkit-paddle-") as scratch:
            exported = lower_source(request, paddle, Path(scratch))
        return Lowered(
            framework=self.name, onnx_path=request.export_path,
            check=save_check_data(request, exported.plan, exported.references),
            exporter=exported.exporter, inputs=exported.inputs,
            output_names=exported.output_names, notes=exported.notes,
        )
