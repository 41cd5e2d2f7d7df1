"""ONNX sources pass through: validated by the hub, referenced by ONNX Runtime as written."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from convertkit.adapters import (
    Adapter,
    Lowered,
    LowerRequest,
    merge_specs,
    plan_check_samples,
    save_check_data,
)
from convertkit.errors import ConversionError, UsageError
from convertkit.ir.info import OnnxInfo, describe
from convertkit.ir.io import load_model, save_model
from convertkit.ir.runtime import open_session, run_session, session_options
from convertkit.spec import SourceRef


class OnnxAdapter(Adapter):
    name: ClassVar[str] = "onnx"

    def detect(self, source: SourceRef) -> bool:
        return source.path is not None and source.path.suffix.lower() == ".onnx"

    def lower(self, request: LowerRequest) -> Lowered:
        assert request.source.path is not None
        # --opset is applied on the hub, for every source alike.
        model = load_model(request.source.path, load_external_data=False)
        save_model(model, request.export_path, external_from=request.source.path.parent)
        info = describe(model)
        specs = merge_specs(info.input_specs(), request.options.inputs, "the ONNX model")
        plan = plan_check_samples(request, specs, request.export_path)

        # The reference is the source model as written, with no graph optimisation.
        session = open_session(request.source.path, session_options("ORT_DISABLE_ALL"))
        references = [_run(session, feeds, request, info) for feeds in plan.evaluation.samples]
        return Lowered(
            framework=self.name, onnx_path=request.export_path,
            check=save_check_data(request, plan, references),
            exporter="none (ONNX source)", inputs=tuple(specs),
            output_names=tuple(references[0]),
        )


def _run(session, feeds: dict[str, np.ndarray], request: LowerRequest,
         info: OnnxInfo) -> dict[str, np.ndarray]:
    try:
        return run_session(session, feeds)
    except ConversionError as exc:
        if request.options.inputs or request.options.data:
            given = ", ".join(f"{n}:{'x'.join(map(str, a.shape))}:{a.dtype}"
                              for n, a in feeds.items())
            raise UsageError(f"the model rejects inputs {given}: {exc.message}",
                             hint="check -i/--data against the model's inputs: "
                             + ", ".join(str(s) for s in info.input_specs()),
                             code="shape-rejected") from exc
        raise

