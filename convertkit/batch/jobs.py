"""Run one batch job: a child process with a wall-clock and a memory limit, writing the job
folder OUT/jobs/NAME; then classify what happened and seal the folder with job.json.

``run_job`` is the one function both executors call (the Ray executor calls it inside a
Ray task), so a job behaves the same wherever it runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convertkit.batch.cache import write_record
from convertkit.batch.classify import JobOutcome, outcome_from_error, outcome_from_report
from convertkit.batch.manifest import JobSpec
from convertkit.config import job_environment
from convertkit.isolation import isolated_module, signal_name

JOBS_DIR = "jobs"
LOGS_DIR = "logs"
_LOG_TAIL_BYTES = 64 * 1024

# Process groups of the jobs running in this process, so an interrupted batch can stop them.
_running: set[int] = set()
_running_lock = threading.Lock()
_stopping = threading.Event()


class JobInterruptedError(Exception):
    """The batch was interrupted while the job ran: it has no outcome and no record."""


@dataclass(frozen=True)
class JobContext:
    """Where and how a job runs, besides its spec (plain data: it travels to Ray workers)."""

    out_dir: str  # the batch's OUT, absolute
    base_dir: str  # the manifest's folder: the job's working folder
    key: str  # the job's cache key, sealed into job.json
    threads: int | None  # math threads when the job does not set its own

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": self.out_dir, "base_dir": self.base_dir, "key": self.key,
                "threads": self.threads}


def job_dir(out_dir: Path, name: str) -> Path:
    return out_dir / JOBS_DIR / name


def log_path(out_dir: Path, name: str) -> Path:
    return out_dir / LOGS_DIR / f"{name}.log"


def run_job(job: JobSpec, context: JobContext) -> JobOutcome:
    """Run ``job`` in a child process and return its outcome, sealed into its folder."""
    out_dir = Path(context.out_dir)
    folder = job_dir(out_dir, job.name)
    log = log_path(out_dir, job.name)
    remove_job_folder(folder)
    log.parent.mkdir(parents=True, exist_ok=True)
    threads = job.limits.threads or context.threads
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="convertkit-job-") as scratch:
        payload_path = Path(scratch, "payload.json")
        result_path = Path(scratch, "result.json")
        payload_path.write_text(json.dumps({
            "conversion": job.conversion.to_dict(), "out": str(folder),
            "memory_mb": job.limits.memory_mb, "timeout_s": job.limits.timeout_s,
            "parent_pid": os.getpid()}))
        command = [*isolated_module("convertkit.batch.child"), str(payload_path),
                   str(result_path)]
        with log.open("w", encoding="utf-8", errors="replace") as log_file:
            log_file.write(f"$ convertkit convert {job.conversion.source} (job {job.name}, "
                           f"timeout {job.limits.timeout_s:g} s, memory "
                           f"{job.limits.memory_mb or 'unlimited'} MB, threads "
                           f"{threads or 'default'})\n")
            log_file.flush()
            returncode, timed_out = _run_limited(command, context.base_dir, log_file,
                                                 job.limits.timeout_s,
                                                 job_environment(threads))
        duration_s = round(time.monotonic() - start, 3)
        result = _read_json(result_path)
    _remove_staging_leftovers(folder)
    if _stopping.is_set():  # killed by stop_running_jobs: not the job's own outcome
        remove_job_folder(folder)
        raise JobInterruptedError(job.name)
    outcome = _outcome(job, folder, log, returncode, timed_out, result, duration_s)
    folder.mkdir(parents=True, exist_ok=True)
    write_record(folder, {"key": context.key, "name": job.name,
                          "has_report": outcome.has_report, "outcome": outcome.to_dict()})
    return outcome


def _run_limited(command: list[str], cwd: str, log_file, timeout_s: float,
                 env: dict[str, str]) -> tuple[int, bool]:
    """Run ``command`` as the leader of a new process group; on timeout kill the group.
    Returns (returncode, timed_out)."""
    process = subprocess.Popen(command, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    with _running_lock:
        _running.add(process.pid)
    timed_out = False
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        # Also reaps what the job left behind (an export still running in its group).
        _kill_group(process.pid)
        process.wait()
        with _running_lock:
            _running.discard(process.pid)
    return process.returncode, timed_out


def allow_jobs() -> None:
    """Let jobs run again in this process after an interrupted batch."""
    _stopping.clear()


def stop_running_jobs() -> None:
    """Kill every job this process is running (the batch was interrupted); they end
    without a record, so a resumed batch redoes them."""
    _stopping.set()
    with _running_lock:
        groups = list(_running)
    for group in groups:
        _kill_group(group)


def _kill_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)


def _outcome(job: JobSpec, folder: Path, log: Path, returncode: int, timed_out: bool,
             result: dict[str, Any] | None, duration_s: float) -> JobOutcome:
    log_text = _log_tail(log) + _log_tail(folder / "logs" / "export.log")
    if timed_out:
        remove_job_folder(folder)  # whatever it wrote before the limit is not a result
        return outcome_from_error(job.name, {
            "code": "timeout", "exit_code": 3,
            "message": f"the job did not finish within its {job.limits.timeout_s:g} s "
                       "limit and was stopped"}, duration_s)
    report = _read_json(folder / "report.json")
    if report is not None:
        return outcome_from_report(job.name, report, duration_s, log_text)
    if result is not None and result.get("error"):
        return outcome_from_error(job.name, result["error"], duration_s, log_text)
    return outcome_from_error(job.name, {
        "code": "job-crashed", "exit_code": 3,
        "message": f"the job process {_describe_exit(returncode)}{_last_line(log_text)}"},
        duration_s, log_text)


def remove_job_folder(folder: Path) -> None:
    """Remove a job folder so that it never mixes two runs: renamed aside first (one step),
    then deleted."""
    if not folder.exists():
        return
    aside = folder.with_name(f".{folder.name}.removed-{os.getpid()}-{threading.get_ident()}")
    folder.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)


def _remove_staging_leftovers(folder: Path) -> None:
    """A killed conversion leaves its hidden staging folder beside the job folder."""
    for pattern in (f".{folder.name}.partial-*", f".{folder.name}.old-*"):
        for leftover in folder.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def _describe_exit(returncode: int) -> str:
    name = signal_name(returncode)
    if name:
        note = " (the kernel's out-of-memory killer sends SIGKILL)" if name == "SIGKILL" else ""
        return f"was killed by {name}{note}"
    return f"exited with status {returncode} without a report"


def _last_line(log_text: str) -> str:
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    return f": {lines[-1][:200]}" if lines else ""


def _log_tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - _LOG_TAIL_BYTES))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
