"""Steps for test_isolation.py, run in a child by
`python -m convertkit.isolation tests.unit.child_steps:NAME`.

Not a test module: the child imports it through PYTHONPATH (set by the tests)."""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
from pathlib import Path

from convertkit.errors import UsageError


def returns_value(payload: dict) -> dict:
    return {"doubled": [2 * n for n in payload["numbers"]], "pid": os.getpid()}


def raises_usage_error(payload: dict) -> None:
    raise UsageError(f"bad option {payload['option']}", hint="fix the option",
                     code="bad-option")


def raises_value_error(payload: dict) -> None:
    raise ValueError("something odd\nsecond line")


def calls_sys_exit(payload: dict) -> None:
    print("exporter giving up", flush=True)
    sys.exit(3)


def exits_hard(payload: dict) -> None:
    print("last words", flush=True)
    os._exit(5)


def crashes(payload: dict) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
    print("about to crash", flush=True)
    if payload["how"] == "abort":
        os.abort()
    os.kill(os.getpid(), getattr(signal, payload["how"]))


def prints(payload: dict) -> str:
    print("hello on stdout")
    print("hello on stderr", file=sys.stderr)
    return "done"


def sleeps(payload: dict) -> None:
    Path(payload["pid_file"]).write_text(str(os.getpid()))
    time.sleep(60)


def reads_environment(payload: dict) -> dict:
    return {name: os.environ.get(name) for name in payload["names"]}
