"""OUT: nothing the run did not create is deleted without --force, no input is ever
deleted, and a killed run's staging folder is removed by the next run into the same
parent. Each case runs the real CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT
from tests.integration.security.test_bounded_runs import BLOCKING_SOURCE

# Builds a model, but first writes into OUT, as another process could while the run works.
INTRUDING_SOURCE = """\
import torch
from pathlib import Path


def build():
    (Path({out!r}) / "notes.txt").parent.mkdir(parents=True, exist_ok=True)
    (Path({out!r}) / "notes.txt").write_text("the user's notes")
    return torch.nn.Linear(4, 3)
"""

PACKAGE_SOURCE = """\
import torch


def build():
    return torch.nn.Linear(4, 3)
"""


def convertkit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convertkit", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_a_folder_that_appears_at_out_during_the_run_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (tmp_path / "intruder.py").write_text(INTRUDING_SOURCE.format(out=str(out)))

    done = convertkit("convert", "intruder.py:build", "-i", "x:1x4", "-o", "out",
                      cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    assert (out / "notes.txt").read_text() == "the user's notes"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name or ".old" in p.name]


def test_force_never_deletes_the_package_a_module_source_imports(tmp_path: Path) -> None:
    package = tmp_path / "mymodels"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "net.py").write_text(PACKAGE_SOURCE)
    (package / "notes.md").write_text("experiments")

    done = convertkit("convert", "mymodels.net:build", "-i", "x:1x4", "-o", "mymodels",
                      "--force", cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    assert "mymodels" in done.stderr and "input" in done.stderr
    assert sorted(p.name for p in package.iterdir()) == ["__init__.py", "net.py", "notes.md"]


def test_force_never_deletes_a_budget_file_inside_out(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    budgets = tmp_path / "out" / "budgets.toml"
    budgets.write_text("[fp32]\natol = 0.1\n")

    done = convertkit("convert", str(ROOT / "examples/tiny_cnn.py") + ":build",
                      "-i", "x:1x3x32x32", "--budget-file", str(budgets), "-o", "out",
                      "--force", cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    assert "--budget-file" in done.stderr
    assert budgets.read_text() == "[fp32]\natol = 0.1\n"


def _staging_folders(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".out.partial-")]


def test_the_next_run_removes_the_staging_folder_of_a_killed_one(tmp_path: Path) -> None:
    fifo = tmp_path / "gate.fifo"
    os.mkfifo(fifo)
    (tmp_path / "blocking.py").write_text(BLOCKING_SOURCE.format(fifo=str(fifo)))
    run = subprocess.Popen([sys.executable, "-m", "convertkit", "convert", "blocking.py:build",
                            "-i", "x:1x4", "-o", "out"], cwd=tmp_path,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    # The export child opens the FIFO for reading: opening it for writing returns then,
    # so the run is in flight and its staging folder exists.
    with open(fifo, "w"):
        os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    killed = _staging_folders(tmp_path)
    assert len(killed) == 1  # what a killed run leaves behind

    # Give the kernel the moment it needs to reap the killed group before the next run
    # asks whether the staging folder's owner is alive.
    deadline = time.monotonic() + 30
    while _group_alive(run.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    done = convertkit("convert", str(ROOT / "examples/tiny_cnn.py") + ":build",
                      "-i", "x:1x3x32x32", "-t", "onnx", "-o", "out", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert _staging_folders(tmp_path) == []
    assert (tmp_path / "out" / "report.json").is_file()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
