"""TensorFlow's exceptions as convertkit's one-line errors (no TensorFlow import)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from convertkit.adapters import LowerRequest
from convertkit.adapters.tensorflow.inputs import DeclaredInput, dims_text
from convertkit.adapters.tensorflow.layout import onnx_layout
from convertkit.errors import ConversionError, ConvertkitError, UsageError, first_line
from convertkit.spec import InputSpec

# This adapter has always cut quoted errors at 240 characters (the shared first_line's
# default is 300); kept so that splitting the module changed no message.
_LIMIT = 240


def error_reason(error: BaseException | str) -> str:
    """The line of an error message that says what went wrong. TensorFlow's runtime errors
    open with 'Graph execution error:' and a Python stack; the reason comes after it."""
    text = str(error)
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and lines[0].startswith("Graph execution error"):
        node = re.search(r"Detected at node (\S+)", text)
        reason = next((line.strip() for line in lines[1:]
                       if not line[0].isspace() and not line.startswith("Detected at node")),
                      lines[0].strip())
        return (f"{reason} (node {node.group(1)})" if node else reason)[:_LIMIT]
    return first_line(error, limit=_LIMIT)


def inputs_rejected(what: str, declared: Sequence[DeclaredInput], specs: list[InputSpec],
                    request: LowerRequest, exc: BaseException,
                    feeds: Mapping[str, np.ndarray] | None = None) -> ConvertkitError:
    """The model failed on its inputs: the user's fault (exit 2) when they gave them."""
    if feeds is not None:
        shapes = ", ".join(f"{name}:{dims_text(value.shape)}:{value.dtype}"
                           for name, value in feeds.items())
    else:
        shapes = ", ".join(str(onnx_layout(s, request.options.inputs_as_nchw)) for s in specs)
    message = f"{what} rejects inputs {shapes}: {type(exc).__name__}: {error_reason(exc)}"
    if request.options.inputs or request.options.data is not None or not declared:
        return UsageError(message, hint="fix the shapes and dtypes given with -i (or the "
                          "arrays in --data)", code="shape-rejected")
    return ConversionError(message, hint="the model fails on the inputs its own signature "
                           "declares; give concrete sizes with -i", code="shape-rejected")
