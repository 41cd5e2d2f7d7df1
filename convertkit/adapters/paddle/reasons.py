"""The line of a Paddle error that says what went wrong, for a one-line message."""

from __future__ import annotations

import re


def error_reason(exc: BaseException) -> str:
    """The line of a Paddle error that says what went wrong: Paddle puts "In user code:"
    and the transformed code first, and the reason ("InvalidArgumentError: ...",
    "(InvalidArgument) ...") further down."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    found = next((ln for ln in lines if re.match(r"(\w+Error: |\(\w+\) )", ln)), None)
    if found is None:
        found = next((ln for ln in reversed(lines) if "<--- HERE" not in ln and not
                      ln.startswith(("File ", "[", "^", "~", "In user code"))), "")
    if re.match(r"\w+Error: ", found):
        return found[:300]
    return f"{type(exc).__name__}: {found[:300]}" if found else type(exc).__name__
