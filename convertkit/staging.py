"""Write an output folder whole or not at all, and never delete what the run did not
create unless --force said so.

A run writes into a hidden staging folder beside OUT, ``.OUT.partial-PID``, which holds
a marker naming its process (the pid and the process's start time, so a reused pid is
not taken for the owner). At the end the staging folder lands on OUT in one rename that
refuses to replace anything (renameat2 RENAME_NOREPLACE); with --force the OUT that was
there when the run started is first renamed aside (``.OUT.old-PID``), checked to be that
same folder, and deleted once the new one has landed. A run killed on the way leaves
those folders behind: the next run into the same OUT removes the ones whose process is
gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import functools
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from convertkit.errors import UsageError
from convertkit.input_files import InputFiles, holds, input_files
from convertkit.spec import SourceRef

T = TypeVar("T")

STAGING_MARKER = ".convertkit-staging.json"
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def protected_inputs(sources: SourceRef | Sequence[SourceRef | Path | None], options: Any,
                     cwd: Path | None = None) -> list[InputFiles]:
    """Every input of a conversion (convertkit.input_files) of ``sources`` (SourceRefs, or
    paths of models) with ``options``: what OUT may not hold."""
    if isinstance(sources, SourceRef):
        sources = [sources]
    refs = [item if isinstance(item, SourceRef) else SourceRef(str(item), item, None, None)
            for item in sources if item is not None]
    return input_files(refs, options, cwd)


def check_output_folder(out: Path, force: bool,
                        inputs: Iterable[InputFiles | Path | None]) -> None:
    """Refuse an existing OUT without --force; and even with --force an OUT that holds
    one of the user's inputs (replacing it would delete them), lies inside an input folder
    convertkit could not list whole, or is the working folder, the home folder, the root
    or a folder that holds one of them."""
    if out.exists() and not force:
        raise UsageError(f"output folder {out} already exists",
                         hint="pass --force to replace it, or choose another -o",
                         code="output-exists")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder", hint="choose another -o",
                         code="output-exists")
    check_not_protected(out, inputs)


def check_not_protected(out: Path, inputs: Iterable[InputFiles | Path | None]) -> None:
    """Raise UsageError (exit 2) when OUT is, or holds, a folder or file convertkit must
    never replace; see check_output_folder."""
    resolved_out = out.resolve()
    for name, folder in (("the working folder", Path.cwd()), ("your home folder", Path.home()),
                         ("the root folder", Path(resolved_out.anchor))):
        if holds(resolved_out, [folder.resolve()]):
            raise UsageError(
                f"the output folder {out} is or holds {name}; convertkit writes OUT whole "
                "and would replace everything in it",
                hint="choose an -o of its own, such as -o out", code="output-protected")
    for item in inputs:
        if item is None:
            continue
        if isinstance(item, Path):
            item = InputFiles("input", _absolute(item), (_absolute(item),))
        held = holds(resolved_out, _paths_of(item))
        if held is not None:
            shown = item.path if held in (item.path, _resolved(item.path)) else held
            raise UsageError(
                f"the output folder {out} contains the {item.role} {shown}; replacing it "
                "would delete that input", hint="choose an -o outside your model's folder",
                code="output-holds-input")
        if not item.complete and item.is_folder and holds(_resolved(item.path),
                                                          [resolved_out]):
            raise UsageError(
                f"the output folder {out} lies inside the {item.role} {item.path}, which "
                "holds too many files to check one by one",
                hint="choose an -o outside that folder", code="output-holds-input")


def _paths_of(item: InputFiles) -> Iterator[Path]:
    yield item.path
    yield _resolved(item.path)  # a link's target is the user's too
    yield from item.files


def _absolute(path: Path) -> Path:
    path = path.absolute()
    return path.resolve() if path.name in ("", "..") else path.parent.resolve() / path.name


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path


@contextlib.contextmanager
def staged_folder(out: Path, *, replace: bool) -> Iterator[Path]:
    """Yield a fresh folder beside ``out``; on success it lands on ``out`` in one rename,
    on any failure it is removed.

    ``replace`` (--force): the folder at ``out`` when this starts may be replaced; it is
    removed only after the new one has landed. A folder that appears at ``out`` while the
    run works is never replaced: landing then fails with UsageError (exit 2), the new
    output is discarded and that folder left untouched."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out)
    replaceable = _identity(out) if replace else None
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    _remove(staging)  # a dead process's, whose pid this process now has
    staging.mkdir()
    _write_marker(staging)
    try:
        yield staging
        (staging / STAGING_MARKER).unlink(missing_ok=True)
        _land(staging, out, replaceable)
    except BaseException:
        _remove(staging)
        raise


def _land(staging: Path, out: Path, replaceable: tuple[int, int] | None) -> None:
    retired = None
    if replaceable is not None:
        retired = out.parent / f".{out.name}.old-{os.getpid()}"
        _remove(retired)
        try:
            rename_no_replace(out, retired)
        except FileNotFoundError:  # removed while the run worked: nothing to replace
            retired = None
        else:
            if _identity(retired) != replaceable:
                rename_no_replace(retired, out)
                raise _appeared(out, "was replaced by another folder")
            with contextlib.suppress(OSError):  # a read-only OUT: removed by pid alone
                _write_marker(retired)
    try:
        rename_no_replace(staging, out)
    except FileExistsError:
        if retired is not None:  # keep the folder --force would have replaced, visibly
            kept = out.parent / f"{out.name}.previous-{os.getpid()}"
            (retired / STAGING_MARKER).unlink(missing_ok=True)
            rename_no_replace(retired, kept)
            raise _appeared(out, f"appeared (the folder it replaced is kept as {kept})") \
                from None
        raise _appeared(out, "appeared") from None
    if retired is not None:
        _remove(retired)


def _appeared(out: Path, what: str) -> UsageError:
    return UsageError(
        f"output folder {out} {what} while convertkit was running; it was left untouched "
        "and this run's output discarded",
        hint="move that folder away or choose another -o, and run again",
        code="output-appeared")


def rename_no_replace(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, raising FileExistsError if ``target`` exists (at
    the moment of the rename, by the kernel: Linux renameat2 RENAME_NOREPLACE)."""
    renameat2 = _renameat2()
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target),
                     _RENAME_NOREPLACE) == 0:
            return
        number = ctypes.get_errno()
        if number not in (errno.ENOSYS, errno.EINVAL):  # EINVAL: the file system has no flag
            raise OSError(number, os.strerror(number), str(source), None, str(target))
    # Elsewhere: checked, then renamed. A rename onto a folder that is not empty fails, so
    # only an empty folder created between the two steps could be replaced.
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
    os.rename(source, target)


@functools.cache
def _renameat2() -> Any:
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a C library before glibc 2.28
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _identity(path: Path) -> tuple[int, int] | None:
    """The folder at ``path`` (device and inode; a link itself, not its target), or None."""
    try:
        info = path.lstat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


# -- staging folders left by killed runs -----------------------------------------------------


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove the staging folders (``.OUT.partial-PID``, ``.OUT.old-PID``) beside ``out``
    whose process is gone; returns them. A folder whose pid is alive stays unless its
    marker proves it belongs to an earlier process with that pid."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(?:partial|old)-([0-9]+)")
    removed = []
    try:
        entries = list(os.scandir(out.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False):
            continue
        folder = Path(entry.path)
        if not _belongs_to_live_process(folder, int(match[1])):
            _remove(folder)
            removed.append(folder)
    return removed


def _belongs_to_live_process(folder: Path, pid: int) -> bool:
    started = process_start(pid)
    if started is None:
        return False
    try:
        marker = json.loads((folder / STAGING_MARKER).read_text())
    except (OSError, ValueError):
        return True  # no marker yet (or an older convertkit's): cannot tell, keep it
    return isinstance(marker, dict) and marker.get("pid") == pid \
        and marker.get("start") == started


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc/PID/stat; "" where
    there is no /proc), or None when there is no such process."""
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # another user's process: alive
        pass
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "" if not Path("/proc/self/stat").exists() else None
    except OSError:
        return ""
    # The name (field 2) is in parentheses and may hold spaces; field 22 is the start time.
    fields = text[text.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else ""


def _write_marker(folder: Path) -> None:
    (folder / STAGING_MARKER).write_text(json.dumps(
        {"pid": os.getpid(), "start": process_start(os.getpid())}))


def _remove(path: Path) -> None:
    """Remove a folder this run (or a dead run) made; a link is removed, never followed."""
    if path.is_symlink() or (os.path.lexists(path) and not path.is_dir()):
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


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
