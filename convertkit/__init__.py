"""convertkit: port deep-learning models across hardware through ONNX, with proof.

``convertkit.convert(source, out, inputs=[...], targets=[...])`` does what
``convertkit convert`` does, ``convertkit.check(reference, candidate, out)`` what
``convertkit check`` does. Importing convertkit imports no ML framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from convertkit.options import ConvertOptions
    from convertkit.reports.record import Report


def convert(source: Any, out: Any, options: ConvertOptions | None = None,
            **keywords: Any) -> Report:
    """See ``convertkit.pipeline.convert``."""
    from convertkit.pipeline import convert as run

    return run(source, out, options, **keywords)


def check(reference: Any, candidate: Any, out: Any = None,
          options: ConvertOptions | None = None, **keywords: Any) -> Report:
    """See ``convertkit.check_models.check_models``."""
    from convertkit.check_models import check_models as run

    return run(reference, candidate, out, options, **keywords)


__all__ = ["__version__", "check", "convert"]
