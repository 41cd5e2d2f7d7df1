"""Markers by folder (unit / integration), a guard that unit tests import no ML
framework, and helpers to run the CLI the way a user does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

FRAMEWORKS = ("torch", "tensorflow", "paddle", "mindspore")
ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        item.add_marker(pytest.mark.unit if parts[0] == "unit" else pytest.mark.integration)


@pytest.fixture(autouse=True)
def _unit_tests_import_no_framework(request: pytest.FixtureRequest):
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    before = {m for m in FRAMEWORKS if m in sys.modules}
    yield
    imported = [m for m in FRAMEWORKS if m in sys.modules and m not in before]
    assert not imported, f"a unit test imported {imported}; move it to tests/integration"


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    out: Path

    @property
    def report(self) -> dict:
        return json.loads((self.out / "report.json").read_text())


def run_cli(*args: str, out: Path | None = None, cwd: Path | None = None,
            timeout_s: float = 600) -> CliResult:
    """Run `python -m convertkit ARGS` in a subprocess, as a user would."""
    command = [sys.executable, "-m", "convertkit", *args]
    if out is not None:
        command += ["-o", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd or ROOT, env=env,
                          timeout=timeout_s)
    return CliResult(done.returncode, done.stdout, done.stderr, out or Path())


@pytest.fixture
def cli():
    return run_cli


def install_toolchain(name: str, timeout_s: float = 1800) -> None:
    """`convertkit toolchains install NAME`, as a user runs it: a no-op when installed,
    and concurrent calls (pytest-xdist workers) wait for one another."""
    done = subprocess.run([sys.executable, "-m", "convertkit", "toolchains", "install", name],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout_s)
    assert done.returncode == 0, done.stdout + done.stderr


CORE_DISTRIBUTIONS = ("click", "numpy", "onnx", "onnxruntime", "onnxslim", "sympy")


def core_only_environment(folder: Path) -> dict[str, str]:
    """The environment variables that run ``python -S -m convertkit`` with convertkit and
    its core dependencies only (no framework, runtime or toolchain package): the core
    distributions and what they require are linked from this environment into ``folder``,
    which with the repository is all the interpreter sees (``-S``: no site-packages)."""
    import re
    from importlib import metadata

    folder.mkdir(parents=True, exist_ok=True)
    todo, seen = [*CORE_DISTRIBUTIONS, "convertkit"], set()
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        todo += [re.split(r"[ ;<>=!\[~(]", r)[0] for r in distribution.requires or []
                 if "extra ==" not in r]
        for entry in {Path(str(f)).parts[0] for f in distribution.files or ()}:
            source = Path(distribution.locate_file(entry))
            if entry.endswith(".pth") or entry == ".." or not source.exists():
                continue
            target = folder / entry
            if not target.exists():
                target.symlink_to(source)
    return dict(os.environ, PYTHONPATH=f"{folder}{os.pathsep}{ROOT}")
