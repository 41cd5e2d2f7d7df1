"""Run one step in a child process and exchange plain JSON with it.

Framework exporters crash, call sys.exit, print banners and clash with each other inside
one process (paddle and mindspore both ship oneDNN). Each framework step therefore runs
in its own interpreter: the parent sends a JSON payload, the child calls one function and
writes a JSON result; everything the child prints goes to a log file (and to the terminal
with --debug). The same protocol runs a step in a toolchain's own virtual environment by
passing that environment's interpreter.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

from convertkit.config import child_environment
from convertkit.errors import ConversionError, ConvertkitError, first_line


def run_in_child(
    function: str,
    payload: dict[str, Any],
    *,
    what: str,
    log_path: Path,
    echo: bool = False,
    timeout_s: float | None = None,
    python: str = sys.executable,
    log_shown_as: str | None = None,
    environment: dict[str, str] | None = None,
    launcher: Path | None = None,
) -> dict[str, Any]:
    """Call ``function`` ("package.module:name") with ``payload`` in a child interpreter.

    Returns the function's JSON result. A ConvertkitError raised in the child is raised
    again here with its class; a crash, sys.exit or timeout becomes a ConversionError that
    names ``what`` was running and where its log is (``log_shown_as``: how to name the
    log to the user, when it will have moved by the time they read it). ``environment``
    adds to, and overrides, the child's environment variables. ``launcher``: a script that
    calls ``main()`` here, run in place of ``-m convertkit.isolation`` (its folder, not the
    working folder, then leads the child's sys.path).
    """
    log_hint = f"the full output is in {log_shown_as or log_path}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="convertkit-child-") as scratch:
        payload_path = Path(scratch, "payload.json")
        result_path = Path(scratch, "result.json")
        payload_path.write_text(json.dumps(payload))
        entry = [str(launcher)] if launcher else ["-m", "convertkit.isolation"]
        command = [python, *entry, function, str(payload_path), str(result_path)]
        with log_path.open("a", encoding="utf-8", errors="replace") as log:
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env={**child_environment(), **(environment or {})},
            )
            pump = threading.Thread(target=_pump, args=(process.stdout, log, echo), daemon=True)
            pump.start()
            try:
                returncode = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                pump.join()
                raise ConversionError(
                    f"{what} did not finish within {timeout_s:.0f} s and was stopped",
                    hint=f"{log_hint}; raise the time limit if the model is just large",
                    code="timeout",
                ) from None
            pump.join()
        if result_path.exists():
            result = json.loads(result_path.read_text())
            if result["ok"]:
                return result["value"]
            error = ConvertkitError.from_dict(result["error"])
            error.hint = error.hint or log_hint
            raise error
    raise ConversionError(
        f"{what} {_describe_exit(returncode)}{_last_line(log_path)}",
        hint=f"{log_hint}; rerun with --debug to see it live",
        code="child-crashed",
    )


def _pump(stream, log, echo: bool) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace")
        log.write(line)
        if echo:
            sys.stderr.write(line)
    log.flush()


def signal_name(returncode: int) -> str | None:
    """SIGSEGV for a process killed by that signal (negative return code), else None."""
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def _describe_exit(returncode: int) -> str:
    name = signal_name(returncode)
    return f"crashed ({name})" if name else f"exited with status {returncode} before finishing"


def _last_line(log_path: Path) -> str:
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return f": {lines[-1][:200]}" if lines else ""


def _die_with_parent() -> None:
    """Ask Linux to kill this child when the process that started it dies (even by
    kill -9), so that no export is left running behind a dead CLI."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _child_main(function: str, payload_path: str, result_path: str) -> None:
    _die_with_parent()
    module_name, _, attribute = function.partition(":")
    payload = json.loads(Path(payload_path).read_text())
    try:
        value = getattr(importlib.import_module(module_name), attribute)(payload)
        result: dict[str, Any] = {"ok": True, "value": value}
    except ConvertkitError as exc:
        traceback.print_exc()
        result = {"ok": False, "error": exc.to_dict()}
    except SystemExit as exc:
        # paddle.onnx.export and others call sys.exit on failure.
        traceback.print_exc()
        error = ConversionError(f"the framework called sys.exit({exc.code!r})",
                                code="framework-exit")
        result = {"ok": False, "error": error.to_dict()}
    except Exception as exc:
        traceback.print_exc()
        error = ConversionError(f"{type(exc).__name__}: {first_line(exc)}")
        result = {"ok": False, "error": error.to_dict()}
    sys.stdout.flush()
    sys.stderr.flush()
    Path(result_path).write_text(json.dumps(result))



def main() -> None:
    """The child's entry point: FUNCTION PAYLOAD RESULT on the command line."""
    _child_main(*sys.argv[1:4])
    # Tearing down the ~3000 modules a torch export loads takes 1-1.5 s
    # (benchmarks/convert_overhead.py); the result and the log are written and flushed.
    os._exit(0)


if __name__ == "__main__":
    main()
