"""Every file a conversion reads, found from names and the file system alone (nothing is
imported or run): the SOURCE and the files that come with it, the Python code a
``FILE.py:NAME`` or ``module:NAME`` source imports, and the files the options name.

OUT may hold none of them (staging.py), and a batch job's cache key hashes them all
(batch/cache.py). Folders are walked without following symbolic links, and only regular
files and links are listed (never a device, FIFO or socket); a walk that finds more than
it may list says so (``complete=False``) rather than reading on without end.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any

from convertkit.spec import SourceRef

# A folder (a SavedModel, a --data folder) with more files than this is listed in part.
MAX_FOLDER_FILES = 20_000
# The Python code of a source: more .py files than this is not a model's own package.
MAX_CODE_FILES = 5_000
_SKIPPED_FOLDERS = frozenset({"__pycache__"})
_OPTION_ROLES = (("data", "--data"), ("calib_data", "--calib-data"), ("labels", "--labels"),
                 ("weights", "--weights"), ("budget_file", "--budget-file"))


@dataclass(frozen=True)
class InputFiles:
    """One input: what the user or the model named (``path``), and the files under it
    that the result depends on."""

    role: str  # "source", "external data", "parameters", "code", "--data", ...
    path: Path  # absolute: a file, or a folder whose files are ``files``
    files: tuple[Path, ...]  # absolute; regular files and links, never followed
    complete: bool = True  # False: more files than could be listed, or not found at all

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()


def input_files(sources: SourceRef | Sequence[SourceRef], options: Any,
                cwd: Path | None = None) -> list[InputFiles]:
    """Every input of a conversion of ``sources`` with ``options`` (a ConvertOptions),
    relative paths taken from ``cwd`` (the process's working folder when None).

    Raises UsageError when an ONNX model's external data is unsafe (ir.external_data)."""
    cwd = Path.cwd() if cwd is None else cwd
    found: list[InputFiles] = []
    for source in [sources] if isinstance(sources, SourceRef) else sources:
        found += source_files(source, cwd)
    for field, option in _OPTION_ROLES:
        value = getattr(options, field, None)
        if value is not None:
            found.append(named_path(option, _absolute(Path(value), cwd)))
    return found


def source_files(source: SourceRef, cwd: Path) -> list[InputFiles]:
    """The SOURCE's own files, the files that come with it, and its Python code."""
    if source.module is not None:
        return module_code(source.module, cwd)
    if source.path is None:
        return []
    path = _absolute(source.path, cwd)
    found = [named_path("source", path)]
    if source.is_python_object:
        found.append(code_beside(path))
    elif path.is_file():
        found += companion_files(path)
    return found


def named_path(role: str, path: Path) -> InputFiles:
    """A file the user named (followed if it is a link: the user chose it), or a folder
    and every file under it."""
    if path.is_dir():
        files, complete = walk(path, MAX_FOLDER_FILES)
        return InputFiles(role, path, files, complete)
    return InputFiles(role, path, (path,))


def companion_files(path: Path) -> list[InputFiles]:
    """The files a model file reads besides itself: an ONNX model's external data, a
    Paddle program's parameters (or a parameters file's program), an OpenVINO IR's .bin,
    a large MindIR's ``NAME_variables`` folder."""
    suffix = path.suffix.lower()
    companions: list[InputFiles] = []
    if suffix == ".onnx":
        from convertkit.ir.external_data import checked_external_files

        companions += [InputFiles("external data", file, (file,))
                       for file in checked_external_files(path)]
    elif suffix in (".pdmodel", ".json", ".pdiparams"):
        from convertkit.adapters.paddle.model_files import find_inference_model, is_pir_json
        from convertkit.errors import UsageError

        if suffix != ".json" or is_pir_json(path):
            try:
                model = find_inference_model(path)
            except UsageError:  # the adapter says what is wrong, when it runs
                model = None
            if model is not None:
                companions += [InputFiles("parameters", _absolute(file, path.parent), (
                    _absolute(file, path.parent),)) for file in (model.model_path,
                                                                  model.params_path)
                               if file is not None and _absolute(file, path.parent) != path]
    elif suffix == ".xml" and path.with_suffix(".bin").is_file():
        companions.append(InputFiles("weights", path.with_suffix(".bin"),
                                     (path.with_suffix(".bin"),)))
    elif suffix == ".mindir" and (path.parent / f"{path.stem}_variables").is_dir():
        companions.append(named_path("variables", path.parent / f"{path.stem}_variables"))
    return companions


def module_code(module: str, cwd: Path) -> list[InputFiles]:
    """The code a ``package.module:NAME`` source imports, by the documented rule (the
    installed packages first, then the working folder), found without importing it: every
    .py file of the top-level package, or the module's file."""
    top = module.partition(".")[0]
    search = [*(entry for entry in sys.path if entry and entry != str(cwd)), str(cwd)]
    try:
        spec = PathFinder.find_spec(top, search)
    except (ImportError, OSError, ValueError):
        spec = None
    if spec is None:
        return [InputFiles("code", cwd / Path(*module.split(".")), (), complete=False)]
    if spec.submodule_search_locations:  # a package (a namespace package: several folders)
        found = []
        for location in spec.submodule_search_locations:
            folder = Path(location).resolve()
            files, complete = walk(folder, MAX_CODE_FILES, suffix=".py")
            found.append(InputFiles("code", folder, files, complete))
        return found
    if spec.origin is None:
        return []
    file = Path(spec.origin).resolve()
    if file.parent == cwd.resolve():  # a module of the working folder imports its siblings
        return [named_path("code", file), code_beside(file)]
    return [named_path("code", file)]


def code_beside(file: Path) -> InputFiles:
    """The Python code a ``FILE.py`` imports as top-level modules (its folder is put on
    sys.path): the .py files beside it and the packages (folders with ``__init__.py``)."""
    folder = file.parent.resolve()
    files, complete = walk(folder, MAX_CODE_FILES, suffix=".py", packages_only=True)
    return InputFiles("code", folder, files, complete)


def walk(folder: Path, limit: int, *, suffix: str | None = None,
         packages_only: bool = False) -> tuple[tuple[Path, ...], bool]:
    """The regular files and links under ``folder`` (sorted), never following a link,
    skipping devices, FIFOs and sockets; ``suffix``: only files with it, and no hidden
    folders or ``__pycache__``; ``packages_only``: below the top, only folders that hold
    an ``__init__.py``. Returns (files, complete): at most ``limit`` files."""
    files: list[Path] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda entry: entry.name)
        except OSError:
            continue
        for entry in entries:
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode):
                if suffix is not None and (entry.name.startswith(".")
                                           or entry.name in _SKIPPED_FOLDERS):
                    continue
                if packages_only and not os.path.isfile(os.path.join(entry.path,
                                                                     "__init__.py")):
                    continue
                pending.append(Path(entry.path))
            elif stat.S_ISREG(mode) or stat.S_ISLNK(mode):
                if suffix is not None and not entry.name.endswith(suffix):
                    continue
                if len(files) == limit:
                    return tuple(sorted(files)), False
                files.append(Path(entry.path))
    return tuple(sorted(files)), True


def holds(folder: Path, paths: Iterable[Path]) -> Path | None:
    """The first of ``paths`` (absolute, their folders resolved) that is ``folder``
    (resolved) or lies inside it."""
    top = str(folder)
    inside = top.rstrip(os.sep) + os.sep
    for path in paths:
        text = str(path)
        if text == top or text.startswith(inside):
            return path
    return None


def _absolute(path: Path, cwd: Path) -> Path:
    """``path`` from ``cwd``, its folders resolved but not the file itself (a link the
    user named is protected as a link, and its target separately)."""
    path = path if path.is_absolute() else cwd / path
    try:
        if path.name in ("", "..") or path.name == path.anchor:
            return path.resolve()
        return path.parent.resolve() / path.name
    except (OSError, RuntimeError):
        return path
