"""One batch, start to end: read the manifest, open OUT, reuse every job whose cache key
is unchanged, run the rest (locally or on Ray), write the summary.

OUT holds:

    batch.json            the batch's state: running (or interrupted) / complete
    jobs/NAME/            one job's `convert` output, sealed by job.json (cache.py)
    logs/NAME.log         the job process's console output
    summary.json  summary.html  junit.xml
    .lock                 held while a batch writes OUT (released by the kernel on kill -9)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from convertkit import __version__
from convertkit.batch.cache import job_inputs, job_key, read_record, write_atomically
from convertkit.batch.classify import FailureClass, JobOutcome
from convertkit.batch.executors import EXECUTORS, Work, run_local, run_on_ray
from convertkit.batch.jobs import JOBS_DIR, JobContext, job_dir
from convertkit.batch.manifest import JobSpec, Manifest, load_manifest
from convertkit.batch.summary import BatchSummary, write_summary
from convertkit.errors import UsageError
from convertkit.input_files import InputFiles
from convertkit.staging import check_not_protected

STATE_FILE = "batch.json"
LOCK_FILE = ".lock"
# Outcomes that depend on the limits and the machine's load more than on the job's
# inputs: redone on every run rather than taken from the cache.
NOT_CACHED = (FailureClass.TIMEOUT, FailureClass.OUT_OF_MEMORY)


@dataclass(frozen=True)
class BatchProgress:
    """One step of a running batch, for the caller's progress display."""

    event: str  # "cached" | "started" | "done"
    job: str
    outcome: JobOutcome | None
    total: int
    counts: dict[str, int]  # pass, fail, error, cached, running, pending


def run_batch(
    manifest: str | Path,
    out: str | Path,
    *,
    parallel: int | None = None,
    executor: str = "local",
    address: str | None = None,
    resume: bool = False,
    use_cache: bool = True,
    progress: Callable[[BatchProgress], None] = lambda event: None,
) -> BatchSummary:
    """Run every job of ``manifest`` into ``out`` and return the summary (also written to
    OUT). Raises UsageError for a bad manifest or OUT before any job runs."""
    if executor not in EXECUTORS:
        raise UsageError(f"unknown executor {executor!r}",
                         hint=f"use one of: {', '.join(EXECUTORS)}", code="bad-executor")
    if parallel is not None and parallel < 1:
        raise UsageError("-j must be 1 or more", hint="pass -j N with N >= 1", code="usage")
    if address and executor != "ray":
        raise UsageError("--address applies to --executor ray only",
                         hint="add --executor ray", code="usage")
    loaded = load_manifest(manifest)
    out_dir = Path(out).resolve()
    inputs = {job.name: job_inputs(job.conversion, loaded.base_dir) for job in loaded.jobs}
    check_not_protected(out_dir, [loaded.path, *(item for listed in inputs.values()
                                                 for item in listed or ())])
    start = time.monotonic()
    with _open_out(out_dir, resume) as state:
        state.write({"state": "running", "manifest": str(loaded.path), "pid": os.getpid(),
                     "executor": executor, "started": time.time()})
        if executor == "local":
            parallel = parallel or os.cpu_count() or 1
            threads = max(1, (os.cpu_count() or 1) // parallel)
        else:
            threads = 1  # a Ray task asks for one CPU per math thread
        outcomes, work = _split_cached(loaded, inputs, out_dir, threads, use_cache)
        tracker = _Tracker(len(loaded.jobs), progress)
        for outcome in outcomes.values():
            tracker.cached(outcome)
        tracker.pending(len(work))

        def on_done(outcome: JobOutcome) -> None:
            outcomes[outcome.name] = outcome
            tracker.done(outcome)

        if executor == "local":
            run_local(work, parallel, tracker.started, on_done)
        else:
            run_on_ray(work, parallel, address, tracker.started, on_done)
        summary = BatchSummary(
            manifest=str(loaded.path), out_dir=str(out), executor=executor,
            outcomes=tuple(outcomes[job.name] for job in loaded.jobs),
            sources=tuple(job.conversion.source for job in loaded.jobs),
            duration_s=time.monotonic() - start, version=__version__)
        write_summary(summary, out_dir)
        state.write({"state": "complete", "manifest": str(loaded.path), "executor": executor,
                     "finished": time.time(), "exit_code": summary.exit_code})
    return summary


def _split_cached(manifest: Manifest, inputs: dict[str, list[InputFiles] | None],
                  out_dir: Path, threads: int,
                  use_cache: bool) -> tuple[dict[str, JobOutcome], list[Work]]:
    """Outcomes taken from complete job folders with the same key, and the work left."""
    cached: dict[str, JobOutcome] = {}
    work: list[Work] = []
    hashes: dict = {}
    for job in manifest.jobs:
        cache_key = job_key(job.conversion, manifest.base_dir, inputs[job.name], hashes)
        key = cache_key.digest()
        record = (read_record(job_dir(out_dir, job.name), key)
                  if use_cache and cache_key.cacheable else None)
        outcome = _cached_outcome(record, job)
        if outcome is not None:
            cached[job.name] = outcome
            continue
        work.append(Work(job, JobContext(str(out_dir), str(manifest.base_dir), key, threads)))
    return cached, work


def _cached_outcome(record: dict[str, Any] | None, job: JobSpec) -> JobOutcome | None:
    if record is None:
        return None
    try:
        outcome = JobOutcome.from_dict(record["outcome"])
    except (KeyError, TypeError, ValueError):
        return None
    if outcome.failure in NOT_CACHED or outcome.name != job.name:
        return None
    return replace(outcome, cached=True)


class _Tracker:
    def __init__(self, total: int, progress: Callable[[BatchProgress], None]) -> None:
        self.total = total
        self.progress = progress
        self.counts = {"pass": 0, "fail": 0, "error": 0, "cached": 0, "running": 0,
                       "pending": 0}

    def pending(self, count: int) -> None:
        self.counts["pending"] = count

    def cached(self, outcome: JobOutcome) -> None:
        self.counts[outcome.status.value] += 1
        self.counts["cached"] += 1
        self._emit("cached", outcome.name, outcome)

    def started(self, job: JobSpec) -> None:
        self.counts["pending"] -= 1
        self.counts["running"] += 1
        self._emit("started", job.name, None)

    def done(self, outcome: JobOutcome) -> None:
        self.counts["running"] -= 1
        self.counts[outcome.status.value] += 1
        self._emit("done", outcome.name, outcome)

    def _emit(self, event: str, name: str, outcome: JobOutcome | None) -> None:
        self.progress(BatchProgress(event, name, outcome, self.total, dict(self.counts)))


class _State:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write(self, data: dict[str, Any]) -> None:
        write_atomically(self.path, json.dumps(data, indent=2) + "\n")


@contextlib.contextmanager
def _open_out(out_dir: Path, resume: bool) -> Iterator[_State]:
    """Hold OUT for this batch: refuse a folder that is not a batch's, one another batch
    is writing, and an interrupted batch without --resume; clear what a killed run left."""
    state = _State(out_dir / STATE_FILE)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} exists and is not a folder", hint="choose another -o",
                         code="output-exists")
    if out_dir.is_dir() and state.read() is None and any(
            p.name != LOCK_FILE for p in out_dir.iterdir()):
        raise UsageError(f"{out_dir} exists and does not hold a batch's output",
                         hint="choose another -o (a batch reuses only its own folders)",
                         code="output-exists")
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / LOCK_FILE).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = (state.read() or {}).get("pid", "?")
            raise UsageError(f"another batch (pid {holder}) is writing {out_dir}",
                             hint="wait for it to finish, or choose another -o",
                             code="output-busy") from None
        previous = state.read()
        if previous is not None and previous.get("state") != "complete" and not resume:
            raise UsageError(
                f"{out_dir} holds a batch that was interrupted before it finished",
                hint="pass --resume to finish it (complete jobs are kept, the rest are "
                "redone), or choose another -o", code="batch-interrupted")
        _remove_leftovers(out_dir / JOBS_DIR)
        yield state


def _remove_leftovers(jobs: Path) -> None:
    """Hidden folders and files a killed run left: conversions' staging folders, folders
    being removed, half-written records. Job folders themselves are judged by job.json."""
    if not jobs.is_dir():
        return
    for path in jobs.glob(".*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    for folder in jobs.iterdir():
        if folder.is_dir():
            for temporary in folder.glob(".job.json.tmp-*"):
                temporary.unlink(missing_ok=True)
