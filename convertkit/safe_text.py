"""Strings from a model file on their way into a shell script, onto a terminal or into a
report.

A model file is untrusted input (README, Security): its node, tensor, input and output
names, op types, domains and producer strings are whatever its author wrote. A newline
ends a shell comment and starts a command; ESC sequences clear or rewrite a terminal;
U+202E shows what follows it reversed; XML 1.0 cannot carry most control characters at
all, not even as character references. So every such string is quoted (``shell_quote``)
where it is a word of a generated script, and shown with those characters escaped
(``printable``) everywhere else a person or a parser reads it.
"""

from __future__ import annotations

import shlex
import unicodedata
from collections.abc import Iterable

# Shown as escapes: controls (C0, DEL, C1: newline, CR, ESC...), format characters (bidi
# overrides and isolates, zero-width characters), lone surrogates (not encodable), line
# and paragraph separators (U+2028/9 end a line for some readers).
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Not characters in XML 1.0 (nor anywhere a name should hold them).
_NONCHARACTERS = frozenset({"\ufffe", "\uffff"})
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shell_quote(text: str) -> str:
    """``text`` as one word of a POSIX shell command, whatever it holds."""
    return shlex.quote(text)


def shell_join(words: Iterable[str]) -> str:
    """``words`` as one shell command line, each word quoted."""
    return " ".join(shell_quote(word) for word in words)


def printable(text: str) -> str:
    """``text`` on one line, with every control, format or separator character written as
    its Python escape (``\\n``, ``\\x1b``, ``\\u202e``): safe in a shell comment, on a
    terminal and in XML, and still readable. Other characters, backslashes included,
    are kept as they are."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(_escape(char) if _is_escaped(char) else char for char in text)


def printable_lines(text: str) -> str:
    """``printable`` for each line of a text that is several lines by design (a report
    section): its line breaks stay, every other such character is escaped."""
    return "\n".join(printable(line) for line in text.split("\n"))


def _is_escaped(char: str) -> bool:
    return unicodedata.category(char) in _ESCAPED_CATEGORIES or char in _NONCHARACTERS


def _escape(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
