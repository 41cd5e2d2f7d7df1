"""convertkit/safe_text.py: strings from a model, quoted for shells and escaped for
terminals and XML."""

from __future__ import annotations

import shlex
import subprocess
import xml.etree.ElementTree as ET

import pytest

from convertkit.safe_text import printable, printable_lines, shell_join, shell_quote

HOSTILE = ["x\ntouch PWNED", "a'b", "$(touch PWNED)", "`id`", "; rm -rf ~", "\x1b[2J",
           "back\rover", "\u202egpj.exe", "tab\there", "\x00nul", "-n", ""]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_quoted_word_reaches_the_command_as_written(text):
    done = subprocess.run(["sh", "-c", f"printf %s {shell_quote(text)}"],
                          capture_output=True, check=True) if "\x00" not in text else None
    if done is not None:
        assert done.stdout.decode() == text
    assert shlex.split(shell_join(["atc", text])) == ["atc", text]


@pytest.mark.parametrize(("text", "shown"), [
    ("x\ntouch PWNED", "x\\ntouch PWNED"),
    ("\x1b[2J", "\\x1b[2J"),
    ("back\rover", "back\\rover"),
    ("a\tb", "a\\tb"),
    ("\u202egpj.exe", "\\u202egpj.exe"),
    ("line\u2028sep", "line\\u2028sep"),
    ("\x01\x0b\x7f\x85", "\\x01\\x0b\\x7f\\x85"),
    ("\ufffe", "\\ufffe"),
    ("tag\U000e0041", "tag\\U000e0041"),
])
def test_control_format_and_separator_characters_are_escaped(text, shown):
    assert printable(text) == shown


@pytest.mark.parametrize("text", ["conv1/weight:0", "über_层_ñ", "a\\nb", "emoji 🙂", ""])
def test_ordinary_names_are_kept_as_they_are(text):
    assert printable(text) == text


def test_every_code_point_comes_out_on_one_line_and_valid_in_xml():
    text = "".join(chr(code) for code in range(0x30000)) + "\U0010ffff"
    shown = printable(text)
    assert not any(char in shown for char in "\n\r\x1b\u202e\x00\ud800")
    element = ET.Element("case", name=shown)
    element.text = shown
    serialised = ET.tostring(element, encoding="unicode").encode("utf-8")
    parsed = ET.fromstring(serialised)
    assert parsed.get("name") == shown and parsed.text == shown


def test_printable_lines_keeps_the_line_breaks_of_a_text():
    assert printable_lines("one\x1b[2J\ntwo\r") == "one\\x1b[2J\ntwo\\r"
