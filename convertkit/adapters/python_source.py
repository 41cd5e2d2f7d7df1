"""Python-object sources, FILE.py:NAME and package.module:NAME, shared by every adapter."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from convertkit.errors import UsageError, first_line
from convertkit.spec import SourceRef


def source_file(source: SourceRef) -> Path | None:
    """The .py file behind a Python-object source, found without importing anything."""
    if source.path is not None:
        return source.path
    if source.module is None:
        return None
    relative = Path(*source.module.split("."))
    for root in [Path.cwd(), *(Path(p) for p in sys.path if p)]:
        for candidate in (root / relative.with_suffix(".py"), root / relative / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def source_mentions(source: SourceRef, packages: Iterable[str]) -> bool:
    """Whether the source's file imports any of ``packages``: read and parsed, never run."""
    path = source_file(source)
    if path is None or not path.is_file():
        return False
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    return not imported_packages(text).isdisjoint(packages)


def imported_packages(text: str) -> set[str]:
    """The top-level package of every module a Python file imports (``import os, torch``,
    ``from keras import layers``, imports inside functions too). A file that does not
    parse is read line by line."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        packages = set(re.findall(r"^\s*from\s+([A-Za-z_]\w*)", text, re.MULTILINE))
        for names in re.findall(r"^\s*import\s+([\w., ]+)", text, re.MULTILINE):
            packages.update(name.split()[0].partition(".")[0] for name in names.split(",")
                            if name.strip())
        return packages
    packages = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            packages.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            packages.add(node.module.partition(".")[0])
    return packages


def load_python_object(source: SourceRef) -> Any:
    """Import the module a source names and return its attribute.

    A FILE.py is imported under its own module name with its folder on sys.path (last, so
    that a file there never shadows an installed package), so frameworks that re-import a
    model's module by name (MindSpore's graph compiler) find it.
    """
    assert source.attribute is not None
    if source.path is not None:
        module = _import_file(source.path)
    else:
        assert source.module is not None
        # Last: a module in the working folder is found, but never in place of an
        # installed package (a stray onnx.py there is not imported for onnx).
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.append(str(Path.cwd()))
        try:
            module = importlib.import_module(source.module)
        except ModuleNotFoundError as exc:
            raise UsageError(
                f"cannot import module {source.module!r}: {exc}",
                hint="run from the folder that holds the package, or pass FILE.py:NAME",
                code="source-not-found",
            ) from exc
        except Exception as exc:
            raise _import_failed(source.module, exc) from exc
    try:
        return getattr(module, source.attribute)
    except AttributeError:
        public = [n for n in vars(module) if not n.startswith("_")]
        raise UsageError(
            f"{source.path or source.module} has no attribute {source.attribute!r}",
            hint=f"name one of its objects: {', '.join(public[:12]) or '(none)'}",
            code="source-not-found",
        ) from None


def model_from_python(source: SourceRef, model_class: type, what: str) -> Any:
    """The model a Python-object source names: an instance of ``model_class`` itself, or
    what a class or function returns when called with no arguments. ``what`` names the
    class in messages ("an nn.Module")."""
    obj = load_python_object(source)
    if isinstance(obj, model_class):
        return obj
    if not callable(obj):
        raise UsageError(
            f"{source.text} is a {type(obj).__name__}, not {what} or a callable",
            hint=f"name {what}, its class, or a function returning one", code="not-a-model")
    try:
        model = obj()
    except MemoryError:
        raise  # the run's memory limit, not a fault of the factory (isolation.py says so)
    except Exception as exc:
        raise UsageError(
            f"{source.text}() raised {type(exc).__name__}: {first_line(exc)}",
            hint="the factory must build the model with no arguments",
            code="factory-failed") from exc
    if not isinstance(model, model_class):
        raise UsageError(f"{source.text}() returned a {type(model).__name__}, not {what}",
                         hint=f"return the model ({what}) from the factory",
                         code="not-a-model")
    return model


def _import_file(path: Path):
    path = path.resolve()
    name = path.stem
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.append(folder)  # last, as for module:NAME
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path}", hint="pass a Python source file",
                         code="source-unreadable")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise _import_failed(str(path), exc) from exc
    return module


def _import_failed(where: str, exc: Exception) -> UsageError:
    first = first_line(exc)
    return UsageError(
        f"importing {where} failed: {type(exc).__name__}: {first[:200]}",
        hint="fix the error in the model's source file (rerun with --debug for the traceback)",
        code="source-import-failed",
    )
