"""Plug-ins installed as a user installs them: a module and its dist-info on PYTHONPATH.
Builds and checks run in convertkit's worker process, so a test that needs a platform
with unusual behaviour installs one this way rather than patching this process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest


def install_plugin(folder: Path, module: str, source: str,
                   entry_points: dict[str, str]) -> Path:
    """``folder`` holding ``module``.py and a dist-info declaring ``entry_points``
    (group -> "name = module:attribute" lines)."""
    info = folder / f"{module}-0.1.dist-info"
    info.mkdir(parents=True)
    (folder / f"{module}.py").write_text(source)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n{lines}\n" for group, lines in entry_points.items()))
    return folder


@contextlib.contextmanager
def use_plugin(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make the plug-in in ``folder`` visible, here and to convertkit's children, inside
    the block only: the registry forgets it again at the end."""
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", str(folder))
    _forget_registered()
    try:
        yield
    finally:
        monkeypatch.undo()
        _forget_registered()


def _forget_registered() -> None:
    from convertkit import registry

    for cached in (registry._entry_points, registry.load_adapter, registry.load_platforms):
        cached.cache_clear()
