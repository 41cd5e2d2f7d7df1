"""convertkit/options.py: the one record of a conversion's options, parsed the same way
from the CLI, the Python API and a manifest; the CLI's flags and the README's table come
from it."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from convertkit.errors import UsageError
from convertkit.options import (
    COMMANDS,
    ConvertOptions,
    markdown_table,
    option_fields,
    options_from,
)
from convertkit.spec import InputSpec, Precision, TargetSpec

ROOT = Path(__file__).resolve().parents[2]


def test_values_from_the_cli_and_from_python_build_the_same_record() -> None:
    from_cli = ConvertOptions.parse({"inputs": ("x:1x3x8x8",), "targets": ("cpu", "cpu:ort"),
                                     "atol": "1e-3", "precision": "INT8",
                                     "report_formats": "html", "output_names": ("a,b", "c")})
    from_python = ConvertOptions(inputs=(InputSpec("x", (1, 3, 8, 8)),),
                                 targets=(TargetSpec("cpu"), TargetSpec("cpu", "ort")),
                                 atol=1e-3, precision=Precision.INT8,
                                 report_formats=("json", "html"), output_names=("a", "b", "c"))

    assert from_cli == from_python


def test_the_record_survives_its_json_form() -> None:
    options = ConvertOptions.parse({"inputs": ["ids:batchx128:int64"], "data": "d.npz",
                                    "targets": ["npu:rknn@rk3588"], "optimize": False,
                                    "trust_code": True, "opset": 17})

    assert ConvertOptions.from_dict(options.to_dict()) == options
    assert options.to_dict()["targets"] == ["npu:rknn@rk3588"]


def test_none_and_empty_lists_leave_the_defaults() -> None:
    assert ConvertOptions.parse({"inputs": (), "atol": None, "report_formats": None}) == \
        ConvertOptions()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("json", ("json",)), ("html", ("json", "html")), ("junit, json", ("json", "junit")),
     ("all", ("json", "html", "junit")), (["html", "junit"], ("json", "html", "junit"))],
)
def test_report_formats(value, expected) -> None:
    assert ConvertOptions.parse({"report_formats": value}).report_formats == expected


@pytest.mark.parametrize(("values", "message"), [
    ({"report_formats": "json,pdf"}, "unknown report format 'pdf'"),
    ({"atol": -1}, "must be a number >= 0"),
    ({"atol": "lots"}, "must be a number >= 0"),
    ({"opset": 99}, "opset 99 is out of range"),
    ({"optimize": "yes"}, "must be true or false"),
    ({"precision": "int3"}, "unknown precision 'int3'"),
    ({"framework": "pytorh"}, "unknown framework 'pytorh'"),
    ({"inputs": ["x:1xfoo!"]}, "cannot read dimension"),
    ({"output_names": [""]}, "must be a non-empty string"),
])
def test_bad_values_are_usage_errors(values, message) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        ConvertOptions.parse(values)


def test_an_unknown_option_suggests_the_closest() -> None:
    with pytest.raises(UsageError) as caught:
        ConvertOptions.parse({"input": ["x:1x3"]})

    assert caught.value.code == "unknown-option"
    assert "did you mean 'inputs'?" in caught.value.hint


def test_an_option_the_command_does_not_take_is_refused() -> None:
    with pytest.raises(UsageError, match=r"--target does not apply to `convertkit check`"):
        ConvertOptions.parse({"targets": ["cpu"]}, command="check")


def test_a_record_and_keyword_options_together_are_refused() -> None:
    with pytest.raises(UsageError, match="not both"):
        options_from(ConvertOptions(), {"opset": 17}, command="convert")


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_exactly_the_flags_of_the_record(command: str) -> None:
    from convertkit.cli import cli

    params = {p.name: p for p in cli.commands[command].params}
    for spec in option_fields():
        takes = command in spec.flag.commands
        assert (spec.name in params) == takes, f"{command}: {spec.flag.long_name}"
        if takes:
            param = params[spec.name]
            assert isinstance(param, click.Option)
            assert set(param.opts) | set(param.secondary_opts) == {
                name for names in spec.flag.names for name in names.split("/")}
            assert param.help == spec.flag.help


def test_the_readme_options_table_is_the_records() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- options table -->\n(.*?)\n<!-- end of options table -->", readme,
                      re.S)

    assert match is not None, "README.md has lost its options table markers"
    assert match.group(1) == markdown_table(), (
        "README.md's options table differs from convertkit/options.py; paste the output of "
        "`python -c 'from convertkit.options import markdown_table; print(markdown_table())'`")
