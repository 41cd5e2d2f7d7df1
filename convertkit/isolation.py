"""Run one step in a child process and exchange plain JSON with it.

Framework exporters crash, call sys.exit, print banners and clash with each other inside
one process (paddle and mindspore both ship oneDNN); runtimes and quantisers abort on
models they mishandle. Each such step therefore runs in its own interpreter: the parent
sends a JSON payload, the child calls one function and writes a JSON result; everything
the child prints goes to a log file (and to the terminal with --debug). The same protocol
runs a step in a toolchain's own virtual environment by passing that environment's
interpreter.

A child imports only from the installation: it starts with ``-E -P`` (no PYTHON*
variables, no working folder on sys.path), so a stray ``onnx.py`` in a model repository
is never imported in its place. Every child runs under the run's limits (``run_limits``):
a wall-clock deadline shared by every child of the run (--timeout), and a memory limit
each child sets on itself before importing anything (--memory-mb, RLIMIT_DATA: heap and
anonymous mappings, not the address space frameworks and CUDA reserve).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import json
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convertkit.config import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, child_environment
from convertkit.errors import ConversionError, ConvertkitError, first_line

# The folder the convertkit package was imported from: added to a child's sys.path, so
# that a child finds convertkit where this process found it (an installed package, or a
# source checkout on PYTHONPATH, which -E makes the child ignore).
_IMPORT_ROOT = str(Path(__file__).resolve().parent.parent)


def isolated_python(statement: str, python: str = sys.executable) -> list[str]:
    """The command that runs ``statement`` importing only from the installation: no
    PYTHON* variables, no working folder on sys.path (module docstring). Arguments added
    to the command are in sys.argv[1:].

    A child of this interpreter keeps the absolute entries of PYTHONPATH in front, as
    Python would put them (packages and plug-ins installed there), never the working
    folder or a relative entry; a child of another interpreter (a toolchain's) gets
    convertkit's folder only.
    """
    front = _pythonpath_entries() if python == sys.executable else []
    return [python, "-E", "-P", "-c",
            f"import sys; sys.path[:0] = [p for p in {front!r} if p not in sys.path]; "
            f"sys.path += [p for p in [{_IMPORT_ROOT!r}] if p not in sys.path]; {statement}"]


def _pythonpath_entries() -> list[str]:
    working = os.path.realpath(os.getcwd())
    entries = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    return list(dict.fromkeys(entry for entry in entries if os.path.isabs(entry)
                              and os.path.realpath(entry) != working))


def isolated_module(module: str, python: str = sys.executable) -> list[str]:
    """``python -m module``, importing only from the installation (isolated_python)."""
    return isolated_python(f"import runpy; runpy.run_module({module!r}, run_name='__main__', "
                           "alter_sys=True)", python)


_CHILD_MAIN = "from convertkit.isolation import main; main()"
_WORKER_MAIN = "from convertkit.isolation import worker_main; worker_main()"
_STEP_HEADER = "--- step: "  # what a Worker's log shows before each step's own output


@dataclass(frozen=True)
class RunLimits:
    """The limits every child of one run works under. None: no limit."""

    timeout_s: float | None = DEFAULT_TIMEOUT_S
    memory_mb: int | None = DEFAULT_MEMORY_MB
    deadline: float | None = None  # time.monotonic() when the run must be over

    def remaining_s(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


_NO_LIMITS = RunLimits(None, None)
_limits: contextvars.ContextVar[RunLimits] = contextvars.ContextVar("run_limits")


@contextlib.contextmanager
def run_limits(timeout_s: float | None = DEFAULT_TIMEOUT_S,
               memory_mb: int | None = DEFAULT_MEMORY_MB,
               remaining_s: float | None = None) -> Iterator[RunLimits]:
    """Run the block's children under one deadline, ``timeout_s`` from now (or
    ``remaining_s``: what is left of it in a child), and a memory limit of ``memory_mb``
    each (None or 0: no limit)."""
    timeout_s = timeout_s or None
    left = remaining_s or timeout_s
    limits = RunLimits(timeout_s, memory_mb or None,
                       time.monotonic() + left if timeout_s and left else None)
    token = _limits.set(limits)
    try:
        yield limits
    finally:
        _limits.reset(token)


def current_limits() -> RunLimits:
    return _limits.get(_NO_LIMITS)


def time_limit_error(what: str, started: bool) -> ConversionError:
    """The error of a step stopped by, or not started because of, the run's deadline."""
    limits = current_limits()
    when = (f"did not finish within the run's time limit (--timeout {limits.timeout_s:g} s) "
            "and was stopped" if started else
            f"was not started: the run reached its time limit (--timeout {limits.timeout_s:g} s)")
    return ConversionError(f"{what} {when}",
                           hint="raise --timeout if the model is just large",
                           code="timeout")


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
) -> Any:
    """Call ``function`` ("package.module:name") with ``payload`` in a child interpreter.

    Returns the function's JSON result. A ConvertkitError raised in the child is raised
    again here with its class; a crash, sys.exit or timeout becomes a ConversionError that
    names ``what`` was running and where its log is (``log_shown_as``: how to name the
    log to the user, when it will have moved by the time they read it). ``environment``
    adds to, and overrides, the child's environment variables. ``launcher``: a script that
    calls ``main()`` here, run in place of the isolated interpreter (its folder, not the
    working folder, then leads the child's sys.path).
    """
    log_hint = f"the full output is in {log_shown_as or log_path}"
    timeout_s, deadline_binds = _timeout(what, timeout_s)
    limits = current_limits()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="convertkit-child-") as scratch:
        payload_path = Path(scratch, "payload.json")
        result_path = Path(scratch, "result.json")
        payload_path.write_text(json.dumps(payload))
        entry = [python, str(launcher)] if launcher else isolated_python(_CHILD_MAIN, python)
        command = [*entry, function, str(payload_path), str(result_path), *_limit_args()]
        with log_path.open("a", encoding="utf-8", errors="replace") as log:
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**child_environment(), "TMPDIR": _own_temp(scratch), **(environment or {})},
            )
            pump = threading.Thread(target=_pump, args=(process.stdout, log, echo), daemon=True)
            pump.start()
            try:
                returncode = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                pump.join()
                raise _timeout_error(what, timeout_s, deadline_binds, log_hint) from None
            pump.join()
        if result_path.exists():
            return _value_of(json.loads(result_path.read_text()), what, limits, log_hint)
    raise _crash_error(what, returncode, log_path, log_hint)


class ChildBug(Exception):
    """An exception no step expected, raised in a Worker's step (a bug in convertkit or a
    plug-in): the CLI reports it as an internal error, exit 5, with the child's
    traceback in the crash log."""

    def __init__(self, type_name: str, message: str, child_traceback: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.child_traceback = child_traceback


class Worker:
    """One child process that runs steps one after another, in the isolated interpreter
    and under the run's limits, paying the imports once; a step that crashes it (a signal,
    an abort in a runtime, the time limit) is that step's error, and the next call starts
    a new one. Requests and results travel as JSON lines on pipes of their own; the
    worker's output goes to ``log_path``, a line naming each step before it starts."""

    def __init__(self, log_path: Path, *, echo: bool = False,
                 log_shown_as: str | None = None) -> None:
        self.log_path = log_path
        self.echo = echo
        self.log_hint = f"the full output is in {log_shown_as or log_path}"
        self._process: subprocess.Popen | None = None

    def call(self, function: str, payload: dict[str, Any], *, what: str,
             timeout_s: float | None = None) -> Any:
        """``function(payload)`` in the worker: its JSON result, or its error raised here
        (as run_in_child raises them)."""
        timeout_s, deadline_binds = _timeout(what, timeout_s)
        limits = current_limits()
        process = self._process or self._start()
        request = {"function": function, "payload": payload, "what": what,
                   "limits": _limit_args()}
        try:
            os.write(self._requests, (json.dumps(request) + "\n").encode())
            line = self._read_line(timeout_s)
        except BrokenPipeError:
            line = b""
        if line is None:  # out of time
            self._stop()
            raise _timeout_error(what, timeout_s, deadline_binds, self.log_hint)
        if not line:  # the worker died during the step
            returncode = self._stop()
            raise _crash_error(what, returncode, self.log_path, self.log_hint)
        assert process is self._process
        return _value_of(json.loads(line), what, limits, self.log_hint)

    def close(self) -> None:
        if self._process is not None:
            os.close(self._requests)  # the worker's loop ends at the end of its requests
            self._requests = -1
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=30)
            self._stop()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start(self) -> subprocess.Popen:
        request_read, self._requests = os.pipe()
        self._results, result_write = os.pipe()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("a", encoding="utf-8", errors="replace")
        command = [*isolated_python(_WORKER_MAIN), str(request_read), str(result_write)]
        self._scratch = tempfile.TemporaryDirectory(prefix="convertkit-worker-")
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**child_environment(), "TMPDIR": _own_temp(self._scratch.name)},
            pass_fds=(request_read, result_write))
        os.close(request_read)
        os.close(result_write)
        self._pump = threading.Thread(target=_pump, args=(self._process.stdout, self._log,
                                                          self.echo), daemon=True)
        self._pump.start()
        self._buffer = b""
        return self._process

    def _read_line(self, timeout_s: float | None) -> bytes | None:
        """The worker's next result line; b"" when it died first, None when ``timeout_s``
        passed first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._results], [], [], wait)
            if not ready:
                return None
            chunk = os.read(self._results, 1 << 16)
            if not chunk:
                return b""
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _stop(self) -> int:
        """Kill the worker (if it still runs) and release what it held: its return code."""
        process, self._process = self._process, None
        assert process is not None
        if process.poll() is None:
            process.kill()
        returncode = process.wait()
        self._pump.join()
        self._log.close()
        self._scratch.cleanup()
        for fd in (self._requests, self._results):
            if fd >= 0:
                os.close(fd)
        return returncode


def _own_temp(scratch: str) -> str:
    """A temporary folder for one child, removed with ``scratch``: what frameworks leave
    in TMPDIR (autograph's generated files, torchinductor's caches) goes with it."""
    folder = Path(scratch, "tmp")
    folder.mkdir(exist_ok=True)
    return str(folder)


def _timeout(what: str, timeout_s: float | None) -> tuple[float | None, bool]:
    """How long a step may take: ``timeout_s`` or what is left of the run's time, whichever
    is shorter, and whether the run's deadline is the binding one. A step that would start
    after the deadline is refused here."""
    remaining = current_limits().remaining_s()
    if remaining is not None and remaining <= 0:
        raise time_limit_error(what, started=False)
    if remaining is not None and (timeout_s is None or remaining < timeout_s):
        return remaining, True
    return timeout_s, False


def _limit_args() -> list[str]:
    """The run's limits for a child: its own children share the deadline and the memory
    limit (MEMORY_MB TIMEOUT_S REMAINING_S, 0: none)."""
    limits = current_limits()
    return [str(limits.memory_mb or 0), str(limits.timeout_s or 0),
            f"{limits.remaining_s() or 0:.3f}"]


def _timeout_error(what: str, timeout_s: float | None, deadline_binds: bool,
                   log_hint: str) -> ConversionError:
    if deadline_binds:
        error = time_limit_error(what, started=True)
        error.hint = f"{error.hint}; {log_hint}"
        return error
    return ConversionError(f"{what} did not finish within {timeout_s or 0:.0f} s and was "
                           "stopped",
                           hint=f"{log_hint}; raise the time limit if the model is just large",
                           code="timeout")


def _crash_error(what: str, returncode: int, log_path: Path, log_hint: str) -> ConversionError:
    return ConversionError(f"{what} {_describe_exit(returncode)}{_last_line(log_path)}",
                           hint=f"{log_hint}; rerun with --debug to see it live",
                           code="child-crashed")


def _value_of(result: dict[str, Any], what: str, limits: RunLimits, log_hint: str) -> Any:
    """The value of a child's result, or its error raised with what the parent knows."""
    if result["ok"]:
        return result["value"]
    if "bug" in result:
        bug = result["bug"]
        raise ChildBug(bug["type"], bug["message"], bug["traceback"])
    error = ConvertkitError.from_dict(result["error"])
    if error.code == "out-of-memory":
        error = ConversionError(
            f"{what} ran out of memory at the limit of {limits.memory_mb} MB (--memory-mb)",
            hint=f"raise --memory-mb (0: no limit) if the model is just large; {log_hint}",
            code="out-of-memory")
    error.hint = error.hint or log_hint
    raise error


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
    if not lines or lines[-1].startswith(_STEP_HEADER):  # the step printed nothing
        return ""
    line = lines[-1]  # a long one keeps its end too: an assertion names itself last
    return f": {line if len(line) <= 200 else line[:80] + ' ... ' + line[-115:]}"


def _die_with_parent() -> None:
    """Ask Linux to kill this child when the process that started it dies (even by
    kill -9), so that no export is left running behind a dead CLI."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def limit_memory(memory_mb: int | None, which: int = resource.RLIMIT_DATA) -> None:
    """Cap this process's heap and anonymous mappings (RLIMIT_DATA, or ``which``) at
    ``memory_mb``; its children inherit the cap. An allocation beyond it fails
    (MemoryError in Python)."""
    if not memory_mb:
        return
    limit = int(memory_mb) << 20
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(which, (limit, hard))


def _prepare_child(memory_mb: str) -> None:
    _die_with_parent()
    limit_memory(int(memory_mb))
    if os.environ.get("PYTHONWARNINGS") == "ignore":  # -E made the interpreter skip it
        warnings.simplefilter("ignore")


def _call(function: str, payload: Any, limits: list[str], *,
          bugs_are_internal: bool = False) -> dict[str, Any]:
    """``function(payload)`` under ``limits`` (_limit_args), as a result for the parent:
    its value, or its error. An unexpected exception is the framework's failure (an
    export), or with ``bugs_are_internal`` a bug in convertkit (a Worker's steps run
    convertkit's own code), which the parent raises as ChildBug with this traceback."""
    module_name, _, attribute = function.partition(":")
    memory_mb, timeout_s, remaining_s = limits
    try:
        with run_limits(float(timeout_s), int(memory_mb), float(remaining_s)):
            value = getattr(importlib.import_module(module_name), attribute)(payload)
        return {"ok": True, "value": value}
    except MemoryError:
        traceback.print_exc()
        error: ConvertkitError = ConversionError("out of memory", code="out-of-memory")
    except ConvertkitError as exc:
        traceback.print_exc()
        error = exc
    except SystemExit as exc:
        # paddle.onnx.export and others call sys.exit on failure.
        traceback.print_exc()
        error = ConversionError(f"the framework called sys.exit({exc.code!r})",
                                code="framework-exit")
    except Exception as exc:
        traceback.print_exc()
        if bugs_are_internal:
            return {"ok": False, "bug": {"type": type(exc).__name__,
                                         "message": first_line(exc),
                                         "traceback": traceback.format_exc()}}
        error = ConversionError(f"{type(exc).__name__}: {first_line(exc)}")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return {"ok": False, "error": error.to_dict()}


def main() -> None:
    """A one-step child: FUNCTION PAYLOAD RESULT [MEMORY_MB TIMEOUT_S REMAINING_S] on the
    command line (0: no limit)."""
    function, payload_path, result_path, *limits = sys.argv[1:7]
    limits = limits or ["0", "0", "0"]
    _prepare_child(limits[0])
    result = _call(function, json.loads(Path(payload_path).read_text()), limits)
    Path(result_path).write_text(json.dumps(result))
    # Tearing down the ~3000 modules a torch export loads takes 1-1.5 s
    # (benchmarks/convert_overhead.py); the result and the log are written and flushed.
    os._exit(0)


def worker_main() -> None:
    """A Worker's child: REQUEST_FD RESULT_FD on the command line; one JSON request per
    line in, one JSON result per line out, until the requests end."""
    requests = os.fdopen(int(sys.argv[1]), "rb")
    results = os.fdopen(int(sys.argv[2]), "wb")
    _die_with_parent()
    limited = False
    for line in requests:
        request = json.loads(line)
        if not limited:  # the same memory limit for every request of a run
            _prepare_child(request["limits"][0])
            limited = True
        print(f"{_STEP_HEADER}{request['what']}", flush=True)
        result = _call(request["function"], request["payload"], request["limits"],
                       bugs_are_internal=True)
        results.write(json.dumps(result).encode() + b"\n")
        results.flush()
    os._exit(0)
