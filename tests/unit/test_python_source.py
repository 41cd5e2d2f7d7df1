"""convertkit/adapters/python_source.py: which packages a model's Python file imports, read
without running it."""

from __future__ import annotations

from pathlib import Path

import pytest

from convertkit.adapters.python_source import imported_packages, source_mentions
from convertkit.spec import SourceRef


@pytest.mark.parametrize(("text", "expected"), [
    ("import os, torch\n", {"os", "torch"}),
    ("import numpy as np, paddle.nn as nn\n", {"numpy", "paddle"}),
    ("from keras.layers import Dense\n", {"keras"}),
    ("def build():\n    import mindspore\n", {"mindspore"}),
    ("from . import sibling\nfrom .models import net\n", set()),
    ("import os, torch as t\nthis is not ( python\nfrom tf_keras import x\n",
     {"os", "torch", "tf_keras"}),
])
def test_imported_packages(text: str, expected: set[str]) -> None:
    assert imported_packages(text) == expected


def test_a_comment_or_string_is_not_an_import(tmp_path: Path) -> None:
    path = tmp_path / "model.py"
    path.write_text('"""Ported from a torch model."""\n# import torch\nimport numpy\n')

    assert not source_mentions(SourceRef.parse(f"{path}:build"), ("torch",))
    assert source_mentions(SourceRef.parse(f"{path}:build"), ("numpy",))
