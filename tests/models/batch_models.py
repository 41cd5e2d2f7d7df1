"""PyTorch models that misbehave the ways batch jobs must survive: each named as SOURCE
tests/models/batch_models.py:NAME. The misbehaviour happens in forward, which the adapter
runs (in its child process) to record the reference outputs."""

from __future__ import annotations

import os
import signal
import sys
import time

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


class Slow(nn.Module):
    """A good model that takes a while (to kill a batch while it runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()):
            time.sleep(2)
        return self.proj(x).relu()


def slow() -> nn.Module:
    torch.manual_seed(0)
    return Slow()
