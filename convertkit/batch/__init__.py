"""Batch porting jobs: many models x targets from one manifest, each job in its own child
process with time and memory limits, cached by content, resumable, locally or on Ray.

``convertkit.batch.run_batch(manifest, out, ...)`` does what ``convertkit batch`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from convertkit.batch.summary import BatchSummary


def run_batch(manifest: Any, out: Any, **options: Any) -> BatchSummary:
    """See ``convertkit.batch.driver.run_batch``."""
    from convertkit.batch.driver import run_batch as run

    return run(manifest, out, **options)


__all__ = ["run_batch"]
