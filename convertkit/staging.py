"""Write an output folder whole or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from convertkit.errors import UsageError


def check_output_folder(out: Path, force: bool, inputs: Iterable[Path | None]) -> None:
    """Refuse an existing OUT without --force, and an OUT that holds one of the user's
    inputs even with --force (replacing it would delete them)."""
    if out.exists() and not force:
        raise UsageError(f"output folder {out} already exists",
                         hint="pass --force to replace it, or choose another -o",
                         code="output-exists")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder", hint="choose another -o",
                         code="output-exists")
    resolved_out = out.resolve()
    for path in inputs:
        if path is None:
            continue
        resolved = path.resolve()
        if resolved == resolved_out or resolved_out in resolved.parents:
            raise UsageError(
                f"the output folder {out} contains the input {path}; replacing it would "
                "delete that input", hint="choose an -o outside your model's folder",
                code="output-holds-input")


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield a fresh folder beside ``out``; on success it replaces ``out`` in one rename
    (the old ``out``, if any, is removed only after that), on any failure it is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    retired = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(retired)
    staging.rename(out)
    shutil.rmtree(retired, ignore_errors=True)
