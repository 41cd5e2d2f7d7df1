"""convertkit/checker/budgets.py: budgets from a TOML file, under the command line's."""

from __future__ import annotations

from pathlib import Path

import pytest

from convertkit.checker.budgets import (
    DEFAULT_BUDGETS,
    Budget,
    budget_for,
    budget_table_dict,
    load_budget_file,
)
from convertkit.errors import UsageError
from convertkit.spec import Precision


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "budgets.toml"
    path.write_text(text)
    return path


def test_a_file_overrides_the_precisions_it_names(tmp_path):
    table = load_budget_file(_write(tmp_path, "[fp16]\natol = 0.02\nrtol = 0.03\n"
                                              "[int8]\nrtol = 0.5\n"))

    assert table[Precision.FP16] == Budget(0.02, 0.03, max_accuracy_drop=0.5)
    assert table[Precision.INT8] == Budget(DEFAULT_BUDGETS[Precision.INT8].atol, 0.5,
                                           max_accuracy_drop=1.0)
    assert table[Precision.FP32] == DEFAULT_BUDGETS[Precision.FP32]


def test_the_command_line_overrides_the_file(tmp_path):
    table = load_budget_file(_write(tmp_path, "[fp32]\natol = 1e-3\nrtol = 1e-2\n"))

    assert budget_for(Precision.FP32, table=table) == Budget(1e-3, 1e-2, max_accuracy_drop=0)
    assert budget_for(Precision.FP32, atol=0.5, table=table) == Budget(0.5, 1e-2,
                                                                       max_accuracy_drop=0)


def test_integers_are_accepted_and_the_table_is_report_data(tmp_path):
    table = load_budget_file(_write(tmp_path, "[FP16]\natol = 1\n"))

    assert budget_table_dict(table)["fp16"] == {"atol": 1.0, "rtol": 0.01,
                                                "max_accuracy_drop": 0.5}
    assert set(budget_table_dict()) == {"fp32", "fp16", "bf16", "int8", "int4"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[fp8]\natol = 1\n", "unknown precision"),
        ("[fp16]\natoll = 1\n", "unknown key"),
        ("[fp16]\natol = -1\n", "not a number >= 0"),
        ("[fp16]\natol = 'big'\n", "not a number >= 0"),
        ("[fp16]\natol = true\n", "not a number >= 0"),
        ("fp16 = 3\n", "must be a table"),
        ("[fp16\n", "cannot read"),
    ],
)
def test_bad_files_are_usage_errors(tmp_path, text, needle):
    with pytest.raises(UsageError, match=needle) as raised:
        load_budget_file(_write(tmp_path, text))

    assert raised.value.exit_code == 2
    assert raised.value.hint


def test_a_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_budget_file(tmp_path / "nope.toml")


def test_a_file_sets_the_accuracy_drop(tmp_path):
    table = load_budget_file(_write(tmp_path, "[int8]\nmax_accuracy_drop = 2.5\n"))

    assert table[Precision.INT8].max_accuracy_drop == 2.5
    assert table[Precision.INT8].min_cosine == DEFAULT_BUDGETS[Precision.INT8].min_cosine


def test_a_file_sets_the_int8_floors(tmp_path):
    table = load_budget_file(_write(tmp_path, "[int8]\nmin_cosine = 0.95\nmin_top5 = 0.6\n"))

    assert table[Precision.INT8].min_cosine == 0.95
    assert table[Precision.INT8].min_top5 == 0.6
    assert table[Precision.INT8].min_top1 == DEFAULT_BUDGETS[Precision.INT8].min_top1
    assert budget_table_dict(table)["int8"]["min_cosine"] == 0.95


def test_a_floor_above_one_is_refused(tmp_path):
    with pytest.raises(UsageError, match="between 0 and 1"):
        load_budget_file(_write(tmp_path, "[int8]\nmin_cosine = 1.5\n"))
