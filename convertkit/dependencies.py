"""Optional packages come through ``require``: the module, or an error that says how to
install it. Never installs anything."""

from __future__ import annotations

import importlib
from types import ModuleType

from convertkit.errors import ConversionError, MissingDependencyError, first_line


def require(module: str, *, name: str, extra: str | None = None, needed_for: str = "",
            ) -> ModuleType:
    """Import ``module``. Missing (it or a package it needs): MissingDependencyError (exit
    4) with the install command. Installed but failing to import (a broken wheel, a
    memory limit while loading): ConversionError (exit 3), not "not installed"."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        purpose = f" ({needed_for})" if needed_for else ""
        raise MissingDependencyError(
            f"{name} is not installed{purpose}",
            hint=f"pip install 'convertkit[{extra}]'" if extra else f"pip install {module}",
            code=f"missing-{module.split('.')[0].replace('_', '-')}",
        ) from exc
    except ImportError as exc:
        first = first_line(exc)
        raise ConversionError(
            f"{name} is installed but failed to import: {first[:200]}",
            hint="check the environment (memory limits, mixed CUDA/CPU wheels)",
            code="environment",
        ) from exc
