"""convertkit/isolation.py: one step in a child interpreter, JSON in and out."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convertkit.config import CHILD_ENVIRONMENT
from convertkit.errors import ConversionError, UsageError
from convertkit.isolation import run_in_child

ROOT = Path(__file__).resolve().parents[2]  # the child imports tests.unit.child_steps


@pytest.fixture(autouse=True)
def _child_can_import_child_steps(monkeypatch):
    existing = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), existing])))


def _run(function: str, payload: dict, log: Path, **options):
    return run_in_child(f"tests.unit.child_steps:{function}", payload, what="the test step",
                        log_path=log, **options)


def test_returns_the_function_value(tmp_path):
    value = _run("returns_value", {"numbers": [1, 2, 3]}, tmp_path / "log.txt")

    assert value["doubled"] == [2, 4, 6]
    assert value["pid"] != os.getpid()  # it really ran in another process


def test_child_gets_the_parent_environment_plus_the_quiet_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVERTKIT_TEST_MARK", "from-parent")
    names = ["CONVERTKIT_TEST_MARK", *CHILD_ENVIRONMENT]

    value = _run("reads_environment", {"names": names}, tmp_path / "log.txt")

    assert value == {"CONVERTKIT_TEST_MARK": "from-parent", **CHILD_ENVIRONMENT}


def test_usage_error_is_raised_again_with_its_class(tmp_path):
    with pytest.raises(UsageError) as caught:
        _run("raises_usage_error", {"option": "--bogus"}, tmp_path / "log.txt")

    assert type(caught.value) is UsageError
    assert caught.value.message == "bad option --bogus"
    assert caught.value.hint == "fix the option"
    assert caught.value.code == "bad-option"
    assert caught.value.exit_code == 2


def test_other_exceptions_become_a_conversion_error(tmp_path):
    log = tmp_path / "log.txt"

    with pytest.raises(ConversionError) as caught:
        _run("raises_value_error", {}, log)

    assert caught.value.message == "ValueError: something odd"
    assert caught.value.exit_code == 3
    assert "Traceback" in log.read_text()


def test_sys_exit_becomes_a_conversion_error(tmp_path):
    log = tmp_path / "log.txt"

    with pytest.raises(ConversionError) as caught:
        _run("calls_sys_exit", {}, log)

    assert "sys.exit(3)" in caught.value.message
    assert caught.value.code == "framework-exit"
    assert "exporter giving up" in log.read_text()


def test_a_hard_exit_names_the_status_and_the_last_line(tmp_path):
    log = tmp_path / "log.txt"

    with pytest.raises(ConversionError) as caught:
        _run("exits_hard", {}, log)

    assert caught.value.code == "child-crashed"
    assert caught.value.message.startswith("the test step exited with status 5")
    assert caught.value.message.endswith(": last words")
    assert str(log) in caught.value.hint


@pytest.mark.parametrize(("how", "signal_name"),
                         [("abort", "SIGABRT"), ("SIGSEGV", "SIGSEGV"), ("SIGKILL", "SIGKILL")])
def test_a_crash_names_the_signal(tmp_path, how, signal_name):
    log = tmp_path / "log.txt"

    with pytest.raises(ConversionError) as caught:
        _run("crashes", {"how": how}, log)

    assert caught.value.code == "child-crashed"
    assert caught.value.exit_code == 3
    assert f"crashed ({signal_name})" in caught.value.message
    assert "about to crash" in caught.value.message
    assert "about to crash" in log.read_text()


def test_printed_output_lands_in_the_log_file(tmp_path):
    log = tmp_path / "logs" / "step.log"

    value = _run("prints", {}, log)

    assert value == "done"
    text = log.read_text()
    assert "hello on stdout" in text
    assert "hello on stderr" in text


def test_the_log_is_appended_to(tmp_path):
    log = tmp_path / "step.log"
    log.write_text("earlier run\n")

    _run("prints", {}, log)

    assert log.read_text().startswith("earlier run\nhello on")


def test_echo_copies_child_output_to_stderr(tmp_path, capsys):
    _run("prints", {}, tmp_path / "log.txt", echo=True)

    assert "hello on stdout" in capsys.readouterr().err


def test_timeout_stops_the_child(tmp_path):
    pid_file = tmp_path / "pid"
    started = time.monotonic()

    with pytest.raises(ConversionError) as caught:
        _run("sleeps", {"pid_file": str(pid_file)}, tmp_path / "log.txt", timeout_s=2)

    assert caught.value.code == "timeout"
    assert "did not finish within 2 s" in caught.value.message
    assert time.monotonic() - started < 30
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)  # the child is gone


def test_the_child_dies_with_a_killed_parent(tmp_path):
    """A CLI killed by SIGKILL must not leave its export running."""
    import signal
    import subprocess
    import sys

    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "from convertkit.isolation import run_in_child\n"
        f"run_in_child('tests.unit.child_steps:sleeps', {{'pid_file': {str(pid_file)!r}}}, "
        f"what='sleep', log_path=__import__('pathlib').Path({str(tmp_path / 'log.txt')!r}))")])
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())

    parent.send_signal(signal.SIGKILL)
    parent.wait()
    gone = False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = Path(f"/proc/{child}/status")
        try:
            state = next(ln for ln in status.read_text().splitlines() if ln.startswith("State:"))
        except FileNotFoundError:
            gone = True
            break
        if "Z" in state.split()[1]:  # dead, waiting for a reaper that may never come
            gone = True
            break
        time.sleep(0.05)

    assert gone, f"child {child} still runs after its parent was killed"


# --- the Worker: one child for a run's steps ----------------------------------------------

def _worker_call(worker, function: str, payload: dict, **options):
    return worker.call(f"tests.unit.child_steps:{function}", payload, what="the test step",
                       **options)


def test_a_worker_runs_steps_one_after_another_in_one_process(tmp_path):
    from convertkit.isolation import Worker

    with Worker(tmp_path / "build.log") as worker:
        first = _worker_call(worker, "returns_value", {"numbers": [1]})
        second = _worker_call(worker, "returns_value", {"numbers": [2, 3]})

    assert (first["doubled"], second["doubled"]) == ([2], [4, 6])
    assert first["pid"] == second["pid"] != os.getpid()
    log = (tmp_path / "build.log").read_text()
    assert log.count("--- step: the test step") == 2


def test_a_step_that_crashes_the_worker_is_its_error_and_the_next_gets_a_new_one(tmp_path):
    from convertkit.isolation import Worker

    with Worker(tmp_path / "build.log") as worker:
        before = _worker_call(worker, "returns_value", {"numbers": [1]})
        with pytest.raises(ConversionError) as caught:
            _worker_call(worker, "crashes", {"how": "abort"})
        after = _worker_call(worker, "returns_value", {"numbers": [1]})

    assert caught.value.code == "child-crashed"
    assert caught.value.message == "the test step crashed (SIGABRT): about to crash"
    assert before["pid"] != after["pid"]


def test_a_step_past_its_time_is_stopped_and_the_next_gets_a_new_worker(tmp_path):
    from convertkit.isolation import Worker

    with Worker(tmp_path / "build.log") as worker:
        # Started first (imports paid), so the time limit falls on the step alone: on a
        # loaded machine the worker's start-up could otherwise take the 2 s itself.
        before = _worker_call(worker, "returns_value", {"numbers": [1]})
        with pytest.raises(ConversionError) as caught:
            _worker_call(worker, "sleeps", {"pid_file": str(tmp_path / "pid")}, timeout_s=2)
        after = _worker_call(worker, "returns_value", {"numbers": [1]})

    assert caught.value.code == "timeout"
    with pytest.raises(ProcessLookupError):
        os.kill(before["pid"], 0)  # the stopped worker is gone (reaped by Worker._stop)
    assert after["doubled"] == [2] and after["pid"] != before["pid"]


def test_an_unexpected_exception_in_a_step_is_a_bug_with_its_traceback(tmp_path):
    from convertkit.isolation import ChildBug, Worker

    with Worker(tmp_path / "build.log") as worker, pytest.raises(ChildBug) as caught:
        _worker_call(worker, "raises_value_error", {})

    assert caught.value.type_name == "ValueError"
    assert "raises_value_error" in caught.value.child_traceback


def test_steps_share_the_run_deadline(tmp_path):
    from convertkit.isolation import Worker, run_limits

    with run_limits(timeout_s=0.001), Worker(tmp_path / "build.log") as worker:
        time.sleep(0.01)
        with pytest.raises(ConversionError) as caught:
            _worker_call(worker, "returns_value", {"numbers": [1]})

    assert caught.value.code == "timeout"
    assert "was not started" in caught.value.message


def test_a_toolchain_step_imports_nothing_newer_than_python_3_10() -> None:
    """Toolchain steps run in the toolchain's own Python (tpu-mlir: 3.10): the child's
    entry point (isolation.main) and the steps must not import what needs 3.11, such as
    spec.py's enum.StrEnum (a Sophgo build died at start-up when isolation.py imported
    options.py for its limits)."""
    code = ("import enum; del enum.StrEnum\n"
            "import convertkit.isolation, convertkit.toolchain_steps.sophgo, "
            "convertkit.toolchain_steps.rknn, convertkit.toolchain_steps.qnn\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)

    assert done.returncode == 0, done.stderr
