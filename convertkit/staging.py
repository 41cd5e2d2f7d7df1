"""Write an output folder whole or not at all."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from convertkit.errors import UsageError

T = TypeVar("T")


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


def relocate(value: T, staging: Path, out: Path) -> T:
    """``value`` (a record of plain data: dataclasses, dicts, lists, tuples, strings) with
    every mention of the staging folder naming where the files are once the run has
    landed: a string that is a path inside it becomes relative to OUT, a sentence that
    mentions one names it under ``out``."""
    old, new = str(staging), str(out)
    if isinstance(value, str):
        if value.startswith(old + os.sep) and " " not in value:
            return value[len(old) + 1:]  # type: ignore[return-value]
        return value.replace(old, new) if old in value else value  # type: ignore[return-value]
    if isinstance(value, Path):
        return Path(relocate(str(value), staging, out)) if old in str(value) else value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: relocate(getattr(value, f.name), staging, out)
                   for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **changes)  # type: ignore[return-value]
    if isinstance(value, dict):
        return {key: relocate(item, staging, out) for key, item in value.items()}
    if isinstance(value, list | tuple) and not hasattr(value, "_fields"):
        return type(value)(relocate(item, staging, out) for item in value)
    return value
