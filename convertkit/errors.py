"""Error classes. Each carries a one-line message (the problem), a hint (the fix),
a stable kebab-case code and the exit code the CLI uses for it:

    0 everything built and passed its check     3 the conversion failed (ConversionError)
    1 a numerical check failed (not an error)   4 a framework or toolchain is missing
    2 bad usage or unreadable input             5 convertkit itself failed (a bug)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar


class ConvertkitError(Exception):
    exit_code: ClassVar[int] = 3
    default_code: ClassVar[str] = "error"

    def __init__(self, message: str, hint: str = "", code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code or self.default_code

    def to_dict(self) -> dict[str, str]:
        return {
            "type": type(self).__name__,
            "message": self.message,
            "hint": self.hint,
            "code": self.code,
        }

    @staticmethod
    def from_dict(data: dict[str, str]) -> ConvertkitError:
        cls = _ERROR_TYPES.get(data.get("type", ""), ConversionError)
        return cls(data["message"], data.get("hint", ""), data.get("code"))


class UsageError(ConvertkitError):
    """Bad option, unreadable input, unknown target."""

    exit_code = 2
    default_code = "usage"


class ConversionError(ConvertkitError):
    """Unsupported op, shape problem, exporter or compiler failure, child process crash."""

    exit_code = 3
    default_code = "conversion-failed"


class MissingDependencyError(ConvertkitError):
    """A framework or toolchain is not installed."""

    exit_code = 4
    default_code = "missing-dependency"


class InternalError(ConvertkitError):
    """convertkit itself failed: an exception no step expected (a bug). Never raised on
    purpose; the CLI and batch jobs turn such exceptions into it, with the traceback in
    a log file."""

    exit_code = 5
    default_code = "internal-error"

    @staticmethod
    def from_exception(exc: BaseException, log_path: str) -> InternalError:
        # An exception from a child process (isolation.ChildBug) names the original type.
        type_name = getattr(exc, "type_name", type(exc).__name__)
        return InternalError(
            f"convertkit failed unexpectedly: {type_name}: {first_line(exc)}",
            hint=f"this is a bug in convertkit; the traceback is in {log_path} "
                 "(please report it with that file)")


# The order in which exit codes decide when several apply: a usage error stops
# everything, then a bug, a missing toolchain, a failed build, a failed check.
EXIT_CODE_PRECEDENCE = (2, 5, 4, 3, 1)

_ERROR_TYPES: dict[str, type[ConvertkitError]] = {
    cls.__name__: cls for cls in (UsageError, ConversionError, MissingDependencyError,
                                  InternalError)
}


def first_line(error: BaseException | str, limit: int = 300) -> str:
    """The first non-empty line of an error's message, cut at ``limit`` characters: the
    line a one-line error quotes. An exception without a message gives its type name."""
    for line in str(error).splitlines():
        line = line.strip()
        if line:
            return line[:limit]
    return type(error).__name__ if isinstance(error, BaseException) else ""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """"did you mean 'x'? " for the closest of ``known`` (a hint's opening), else ""."""
    import difflib  # only when a name is wrong: not at every start-up

    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}? " if close else ""


def listed(names: list[str], limit: int = 4) -> str:
    """"a, b, c, d and 3 more": a few names for a one-line message."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
