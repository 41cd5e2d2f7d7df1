"""convertkit/dependencies.py: missing is exit 4 with the install command; broken is 3."""

from __future__ import annotations

import sys

import pytest

from convertkit.dependencies import require
from convertkit.errors import ConversionError, MissingDependencyError


def test_an_installed_module_is_returned() -> None:
    assert require("json", name="json") is sys.modules["json"]


def test_a_missing_module_names_the_extra_to_install() -> None:
    with pytest.raises(MissingDependencyError) as caught:
        require("no_such_module_here", name="Thing", extra="things", needed_for="for tests")

    assert caught.value.exit_code == 4
    assert caught.value.message == "Thing is not installed (for tests)"
    assert caught.value.hint == "pip install 'convertkit[things]'"
    assert caught.value.code == "missing-no-such-module-here"


def test_a_module_that_fails_to_import_is_not_reported_as_missing(tmp_path, monkeypatch) -> None:
    (tmp_path / "broken_module_for_test.py").write_text("raise ImportError('bad wheel')\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(ConversionError) as caught:
        require("broken_module_for_test", name="Broken")

    assert caught.value.exit_code == 3
    assert caught.value.code == "environment"
    assert "installed but failed to import: bad wheel" in caught.value.message
