"""Map an ONNX node back to the source model, where the exporter recorded it.

torch's dynamo exporter writes node metadata: ``pkg.torch.onnx.name_scopes`` (the module
path, e.g. ``['', 'encoder', 'encoder.layer.3', 'encoder.layer.3.attention', 'matmul']``),
``pkg.torch.onnx.class_hierarchy``, ``namespace`` and ``pkg.torch.onnx.stack_trace``
(the Python frames that created the op). The TorchScript exporter names nodes after the
module path instead (``/encoder/layer.3/attention/MatMul``). Other exporters keep only a
node name, which is reported as it is.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from pathlib import Path

import onnx

NAME_SCOPES = "pkg.torch.onnx.name_scopes"
CLASS_HIERARCHY = "pkg.torch.onnx.class_hierarchy"
STACK_TRACE = "pkg.torch.onnx.stack_trace"
NAMESPACE = "namespace"

_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')
# Frames inside these packages say how torch runs a module, not where the model is.
_FRAMEWORK_PARTS = ("site-packages/torch/", "dist-packages/torch/", "site-packages/onnxscript/",
                    "dist-packages/onnxscript/", "<frozen ")


@dataclass(frozen=True)
class SourceLocation:
    """Where a node came from in the source model; any field may be unknown."""

    layer: str | None = None  # module path, e.g. encoder.layer.3.attention
    module_class: str | None = None  # e.g. torch.nn.modules.linear.Linear
    file: str | None = None
    line: int | None = None
    origin: str = ""  # which metadata it was read from

    def describe(self) -> str:
        """'layer `encoder.layer.3.attention` (modeling_bert.py:321)', or what is known."""
        where = f"{_short_path(self.file)}:{self.line}" if self.file and self.line else ""
        if self.layer:
            return f"layer `{self.layer}`" + (f" ({where})" if where else "")
        if where:
            return f"source {where}"
        return ""

    def to_dict(self) -> dict:
        return {"layer": self.layer, "module_class": self.module_class, "file": self.file,
                "line": self.line, "origin": self.origin, "text": self.describe()}


def locate(node: onnx.NodeProto) -> SourceLocation | None:
    """Where ``node`` came from, or None when the exporter recorded nothing usable."""
    metadata = {p.key: p.value for p in node.metadata_props}
    layer, module_class = _layer_from_metadata(metadata)
    file, line = _frame_from_stack(metadata.get(STACK_TRACE, ""))
    if layer or file:
        return SourceLocation(layer, module_class, file, line, origin="dynamo metadata")
    layer = _layer_from_scoped_name(node.name)
    if layer:
        return SourceLocation(layer, origin="node name")
    return None


def _layer_from_metadata(metadata: dict[str, str]) -> tuple[str | None, str | None]:
    scopes = _literal_list(metadata.get(NAME_SCOPES))
    classes = _literal_list(metadata.get(CLASS_HIERARCHY))
    if not scopes and NAMESPACE in metadata:
        # ": pkg.Model/encoder: pkg.Encoder/encoder.layer.0: pkg.Layer/node: target"
        parts = [p.split(":", 1) for p in metadata[NAMESPACE].split("/")]
        scopes = [p[0].strip() for p in parts]
        classes = [p[1].strip() if len(p) > 1 else "" for p in parts]
    if len(scopes) < 2:
        return None, None
    modules = scopes[:-1]  # the last entry names the FX node, not a module
    for index in range(len(modules) - 1, -1, -1):
        if modules[index]:
            module_class = classes[index] if index < len(classes) else None
            return modules[index], module_class or None
    return None, None


def _literal_list(text: str | None) -> list[str]:
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, list | tuple) else []


def _frame_from_stack(stack: str) -> tuple[str | None, int | None]:
    """The innermost frame outside torch itself: the model code that created the op."""
    frames = [(m["file"], int(m["line"])) for m in _FRAME.finditer(stack)]
    if not frames:
        return None, None
    for file, line in reversed(frames):
        if not any(part in file.replace(os.sep, "/") for part in _FRAMEWORK_PARTS):
            return file, line
    return frames[-1]


def _layer_from_scoped_name(name: str) -> str | None:
    """'/encoder/layer.3/attention/MatMul' (TorchScript exporter) -> encoder.layer.3.attention."""
    if not name.startswith("/") or name.count("/") < 2:
        return None
    parts = [p for p in name.split("/")[:-1] if p]
    return ".".join(parts) or None


def _short_path(file: str) -> str:
    normalized = file.replace(os.sep, "/")
    if "site-packages/" in normalized:
        return normalized.split("site-packages/", 1)[1]
    try:
        relative = Path(file).resolve().relative_to(Path.cwd().resolve())
    except (ValueError, OSError):
        return file
    return str(relative)
