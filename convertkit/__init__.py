"""convertkit: port deep-learning models across hardware through ONNX, with proof.

``convertkit.convert(source, out, inputs=[...], targets=[...])`` does what
``convertkit convert`` does. Importing convertkit imports no ML framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from convertkit.report import Report


def convert(source: Any, out: Any, **options: Any) -> Report:
    """See ``convertkit.pipeline.convert``."""
    from convertkit.pipeline import convert as run

    return run(source, out, **options)


__all__ = ["__version__", "convert"]
