"""What happened to one batch job, in one of a few failure classes with a one-line hint.

A job's outcome is read from what its child process left: its report.json (the error's
``code``, the artifacts' statuses), the usage error it returned when it could not start,
or how the process ended (timeout, signal, exit status).
"""

from __future__ import annotations

import enum
import re
from dataclasses import asdict, dataclass
from typing import Any

from convertkit.errors import first_line


class JobStatus(enum.StrEnum):
    PASS = "pass"  # every artifact built and, where it can run here, passed its check
    FAIL = "fail"  # a numerical check failed (and nothing worse happened)
    ERROR = "error"  # the job could not convert, crashed, timed out, ...

    def __bool__(self) -> bool:
        raise TypeError("compare a JobStatus with ==, it has no truth value")


class FailureClass(enum.StrEnum):
    UNSUPPORTED_OP = "unsupported-op"
    SHAPE = "shape"
    NUMERIC_MISMATCH = "numeric-mismatch"
    TOOLCHAIN_MISSING = "toolchain-missing"
    ENVIRONMENT = "environment"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out-of-memory"
    CRASH = "crash"
    CONVERSION = "conversion"  # any other exporter or compiler error
    INTERNAL = "internal"  # convertkit itself failed: a bug

    @property
    def label(self) -> str:
        return self.value.replace("-", " ")

    @property
    def hint(self) -> str:
        return _HINTS[self]

    @property
    def exit_code(self) -> int:
        """The batch exit code this class asks for (the batch takes the first of 5, 4, 3,
        1: errors.EXIT_CODE_PRECEDENCE)."""
        return {FailureClass.TOOLCHAIN_MISSING: 4, FailureClass.NUMERIC_MISMATCH: 1,
                FailureClass.INTERNAL: 5}.get(self, 3)


_HINTS = {
    FailureClass.UNSUPPORTED_OP: "an operator has no ONNX lowering or the target lacks it: "
    "replace it in the model, try another opset, or drop that target",
    FailureClass.SHAPE: "the declared inputs do not fit the model: fix `inputs:` "
    "(names, dims, dtypes) for this model in the manifest",
    FailureClass.NUMERIC_MISMATCH: "an artifact computes something else: open the job's "
    "report.html for the diverging node and the repro command",
    FailureClass.TOOLCHAIN_MISSING: "install the framework or toolchain the job needs "
    "(pip install 'convertkit[...]'), or run it where it is (Ray `resources:`)",
    FailureClass.ENVIRONMENT: "a file the job needs is missing or unreadable, or an "
    "option does not apply: check the model's paths (relative to the manifest) and options",
    FailureClass.TIMEOUT: "the job ran past `timeout_s`: raise it for this model if it is "
    "just large, or see the job's log for where it hangs",
    FailureClass.OUT_OF_MEMORY: "the job ran out of its address-space limit: raise "
    "`memory_mb` for this model (or set it to null)",
    FailureClass.CRASH: "the framework crashed or exited during the job: its log "
    "(logs/NAME.log and the job's logs/export.log) has the last words",
    FailureClass.CONVERSION: "the exporter or compiler failed: the job's report.json and "
    "logs/export.log say why",
    FailureClass.INTERNAL: "convertkit itself failed (a bug): the job's log (logs/NAME.log) "
    "holds the traceback; please report it",
}

# Error codes (errors.py `code`) by class; codes not listed fall back on their exit code.
CODE_CLASSES: dict[str, FailureClass] = {
    **dict.fromkeys(("unsupported-op", "export-failed", "preflight-rejected", "opset-too-new",
                     "opset-conversion-failed"), FailureClass.UNSUPPORTED_OP),
    **dict.fromkeys(("shape-rejected", "inputs-required", "unknown-input", "bad-input-spec",
                     "output-mismatch"), FailureClass.SHAPE),
    **dict.fromkeys(("source-not-found", "file-not-found", "source-unreadable",
                     "source-import-failed", "unknown-framework", "ambiguous-framework",
                     "bad-data", "bad-weights", "weights-not-applicable", "not-a-model",
                     "missing-external-data", "output-exists", "output-holds-input",
                     "bad-folder", "bad-budget-file", "unknown-target", "bad-target",
                     "bad-precision", "bad-report-format", "usage", "not-torchscript",
                     "bad-option", "unknown-option", "option-not-applicable",
                     "precision-unsupported",
                     "bad-torchscript", "bad-pt2", "corrupt-onnx"), FailureClass.ENVIRONMENT),
    **dict.fromkeys(("child-crashed", "framework-exit", "factory-failed", "job-crashed"),
                    FailureClass.CRASH),
    "timeout": FailureClass.TIMEOUT,
    "out-of-memory": FailureClass.OUT_OF_MEMORY,
    "internal-error": FailureClass.INTERNAL,
}

_MAY_HIDE_MEMORY = (FailureClass.CRASH, FailureClass.CONVERSION, FailureClass.UNSUPPORTED_OP,
                    FailureClass.TOOLCHAIN_MISSING)

# What a process that ran out of its RLIMIT_AS says (Python, C++, glibc, PyTorch).
_MEMORY_PATTERNS = re.compile(
    r"MemoryError|std::bad_alloc|Cannot allocate memory|can't allocate memory|"
    r"out of memory|failed to map segment|cannot allocate|DefaultCPUAllocator", re.IGNORECASE)


@dataclass(frozen=True)
class JobOutcome:
    name: str
    status: JobStatus
    failure: FailureClass | None = None
    message: str = ""  # the problem, one line
    hint: str = ""  # the fix, one line
    code: str | None = None  # the error code that decided the class
    duration_s: float = 0.0
    artifacts: tuple[tuple[str, str], ...] = ()  # (target, status)
    has_report: bool = False  # the job folder holds convert's report.json
    cached: bool = False  # taken from an earlier run, not redone

    @property
    def exit_code(self) -> int:
        return 0 if self.failure is None else self.failure.exit_code

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value,
                "failure": self.failure.value if self.failure else None,
                "artifacts": [list(a) for a in self.artifacts], "exit_code": self.exit_code}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> JobOutcome:
        return JobOutcome(
            name=data["name"], status=JobStatus(data["status"]),
            failure=FailureClass(data["failure"]) if data.get("failure") else None,
            message=data.get("message", ""), hint=data.get("hint", ""), code=data.get("code"),
            duration_s=float(data.get("duration_s", 0.0)),
            artifacts=tuple((t, s) for t, s in data.get("artifacts", [])),
            has_report=bool(data.get("has_report")), cached=bool(data.get("cached")))


def class_of_error(error: dict[str, Any], log_text: str = "") -> FailureClass:
    """The class of an error record ({code, exit_code, message, ...}); ``log_text`` (the
    job's console and export logs) tells an out-of-memory failure from other crashes."""
    code = str(error.get("code") or "")
    failure = CODE_CLASSES.get(code)
    if failure is None:
        exit_code = error.get("exit_code")
        failure = {4: FailureClass.TOOLCHAIN_MISSING, 2: FailureClass.ENVIRONMENT}.get(
            exit_code, FailureClass.CONVERSION)
    # A memory limit shows up as a crash, a MemoryError caught by an exporter, an input
    # "rejected" by a forward that could not allocate, or even an ImportError ("not
    # installed") when a framework's libraries cannot be mapped.
    message = str(error.get("message", ""))
    if failure not in (FailureClass.TIMEOUT, FailureClass.ENVIRONMENT,
                       FailureClass.INTERNAL) and (
            _MEMORY_PATTERNS.search(message) or (failure in _MAY_HIDE_MEMORY and
                                                 _MEMORY_PATTERNS.search(log_text))):
        failure = FailureClass.OUT_OF_MEMORY
    return failure


def outcome_from_report(name: str, report: dict[str, Any], duration_s: float,
                        log_text: str = "") -> JobOutcome:
    """The outcome of a job whose child wrote convert's report.json."""
    artifacts = tuple((a.get("target", "?"), a.get("status", "?"))
                      for a in report.get("artifacts", []))
    errors = [report["error"]] if report.get("error") else []
    errors += [dict(a["error"], target=a.get("target")) for a in report.get("artifacts", [])
               if a.get("error")]
    common = {"name": name, "duration_s": duration_s, "artifacts": artifacts,
              "has_report": True}
    if errors:
        # The most serious error decides: a missing toolchain before a failed build.
        error = min(errors, key=lambda e: {4: 0, 2: 1}.get(e.get("exit_code"), 2))
        failure = class_of_error(error, log_text)
        where = f"{error['target']}: " if error.get("target") else ""
        return JobOutcome(status=JobStatus.ERROR, failure=failure,
                          message=where + first_line(error.get("message", "")),
                          hint=_hint(error, failure), code=error.get("code"), **common)
    failed = [a for a in report.get("artifacts", []) if a.get("status") == "fail"]
    if failed:
        return JobOutcome(status=JobStatus.FAIL, failure=FailureClass.NUMERIC_MISMATCH,
                          message="; ".join(_mismatch(a) for a in failed),
                          hint=FailureClass.NUMERIC_MISMATCH.hint, code="numeric-mismatch",
                          **common)
    if report.get("status") not in (None, "pass"):
        return JobOutcome(status=JobStatus.ERROR, failure=FailureClass.CONVERSION,
                          message=f"the report's status is {report.get('status')!r}",
                          hint=FailureClass.CONVERSION.hint, **common)
    return JobOutcome(status=JobStatus.PASS, **common)


def outcome_from_error(name: str, error: dict[str, Any], duration_s: float,
                       log_text: str = "") -> JobOutcome:
    """The outcome of a job that ended without a report: an error record from its child
    (a usage error) or one made up from how the process ended."""
    failure = class_of_error(error, log_text)
    return JobOutcome(name=name, status=JobStatus.ERROR, failure=failure,
                      message=first_line(error.get("message", "")),
                      hint=_hint(error, failure), code=error.get("code"),
                      duration_s=duration_s)


def _hint(error: dict[str, Any], failure: FailureClass) -> str:
    """The error's own hint, unless the class overrides what the error thought it was."""
    if failure in (FailureClass.OUT_OF_MEMORY, FailureClass.TIMEOUT) or not error.get("hint"):
        return failure.hint
    return first_line(error["hint"])


def _mismatch(artifact: dict[str, Any]) -> str:
    over = [f"{name} (max abs {_number(m.get('max_abs'))})"
            for name, m in (artifact.get("metrics") or {}).items()
            if not m.get("within_budget")]
    return f"{artifact.get('target')}: outside the budget: {', '.join(over) or 'outputs'}"


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.2e}"
