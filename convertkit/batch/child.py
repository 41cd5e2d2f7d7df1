"""The process of one batch job: `python -m convertkit.batch.child PAYLOAD RESULT`.

It first applies its own limits (before importing anything large): an address-space
limit that its children (the framework export) inherit, and a parent-death signal so that
it, and the process group it leads, never outlive the batch (kill -9 included). Then it
runs one conversion into the job folder, which the pipeline writes whole or not at all,
and prints what `convertkit convert` prints. RESULT receives the usage error that stopped
the job before it wrote anything, if one did.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import traceback
from dataclasses import replace
from pathlib import Path

from convertkit.isolation import limit_memory

_PR_SET_PDEATHSIG = 1


def main(payload_path: str, result_path: str) -> int:
    payload = json.loads(Path(payload_path).read_text())
    limit_memory(payload.get("memory_mb"), resource.RLIMIT_AS)  # the job's address space
    _die_with_parent(payload["parent_pid"])

    from convertkit.batch.manifest import ConversionSpec
    from convertkit.errors import ConvertkitError, InternalError, UsageError
    from convertkit.pipeline import convert
    from convertkit.reports.record import error_record
    from convertkit.reports.terminal import format_table

    spec = ConversionSpec.from_dict(payload["conversion"])
    # The job's limits are the conversion's (the batch also enforces them from outside).
    options = replace(spec.options, timeout=payload["timeout_s"],
                      memory_mb=payload["memory_mb"] or 0)
    try:
        report = convert(spec.source, payload["out"], options, force=True,
                         progress=lambda message: print(f"... {message}", flush=True))
    except UsageError as error:
        print(f"error: {error.message}\nhint: {error.hint}", flush=True)
        _write(result_path, {"error": error_record(error)})
        return error.exit_code
    except ConvertkitError as error:  # raised before the pipeline could write a report
        traceback.print_exc()
        _write(result_path, {"error": error_record(error)})
        return error.exit_code
    except MemoryError:
        traceback.print_exc()
        _write(result_path, {"error": {"code": "out-of-memory", "exit_code": 3,
                                       "message": "the job ran out of memory (MemoryError)",
                                       "hint": ""}})
        return 3
    except Exception as exc:  # a bug in convertkit: its traceback goes to the job's log
        traceback.print_exc()
        if child_traceback := getattr(exc, "child_traceback", ""):
            print(f"in the child process that ran the step:\n{child_traceback}", flush=True)
        error = InternalError.from_exception(exc, "the job's log (logs/NAME.log)")
        _write(result_path, {"error": error_record(error)})
        return error.exit_code
    if report.artifacts:
        print(format_table(report))
    print(f"status: {report.status}   report: {payload['out']}/report.json", flush=True)
    return report.exit_code


def _die_with_parent(parent_pid: int) -> None:
    """On Linux, get SIGTERM when the batch (the thread that started us) dies, and then
    take the whole process group (the framework export) down with us."""
    signal.signal(signal.SIGTERM, _kill_own_group)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the batch's timeout still applies
        pass
    if os.getppid() != parent_pid:  # the batch died before the signal was armed
        _kill_own_group()


def _kill_own_group(*_: object) -> None:
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os._exit(143)


def _write(path: str, data: dict) -> None:
    Path(path).write_text(json.dumps(data))


if __name__ == "__main__":
    code = main(*sys.argv[1:3])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
