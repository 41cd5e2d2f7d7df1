"""PyTorch models that misbehave the ways batch jobs must survive: each named as SOURCE
tests/models/batch_models.py:NAME. The misbehaviour happens in forward, which the adapter
runs (in its child process) to record the reference outputs.

``gated`` waits instead, on a file the test creates: a test that must act while a
conversion runs copies this file into its tmp_path (see ``gate``) and names that copy."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import torch
from torch import nn


class Segfaults(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        os.kill(os.getpid(), signal.SIGSEGV)
        return x


class CallsExit(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sys.exit(3)


class Hangs(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(3600)
        return x


class AllocatesTooMuch(nn.Module):
    """Asks for 64 GiB, past any job's memory limit in the tests."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.ones(1 << 34).sum()


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).relu()


STARTED, RELEASE = "started", "release"
GATE_LIMIT_S = 900  # a test that died without releasing the gate does not leave it forever


def gated() -> nn.Module:
    """A good model whose factory, called by the conversion, creates ``started`` beside
    this file and then waits until ``release`` appears there."""
    here = Path(__file__).parent
    (here / STARTED).touch()
    deadline = time.monotonic() + GATE_LIMIT_S
    while not (here / RELEASE).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing created {here / RELEASE}")
        time.sleep(0.05)
    torch.manual_seed(0)
    return Small()


def gate(folder: Path) -> str:
    """Copy this file into ``folder`` and return the SOURCE of its gated model there."""
    copy = folder / Path(__file__).name
    shutil.copyfile(__file__, copy)
    return f"{copy}:gated"


def wait_until_started(folder: Path, running, limit_s: float = 600) -> None:
    """Wait until the gated model in ``folder`` has started (``running()`` says whether
    the process that should get there still runs); fails if it ended first."""
    deadline = time.monotonic() + limit_s
    while not (folder / STARTED).exists():
        assert running(), "the run ended before the gated model started"
        assert time.monotonic() < deadline, f"the gated model did not start in {limit_s} s"
        time.sleep(0.05)


def release(folder: Path) -> None:
    (folder / RELEASE).touch()
