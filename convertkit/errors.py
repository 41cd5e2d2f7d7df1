"""Error classes. Each carries a one-line message (the problem), a hint (the fix),
a stable kebab-case code and the exit code the CLI uses for it."""

from __future__ import annotations

import difflib
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


_ERROR_TYPES: dict[str, type[ConvertkitError]] = {
    cls.__name__: cls for cls in (UsageError, ConversionError, MissingDependencyError)
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
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}? " if close else ""
