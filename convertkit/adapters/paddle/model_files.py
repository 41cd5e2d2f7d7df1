"""Which files form a Paddle inference model: a program file (a Paddle 3 PIR ``*.json`` or
a legacy ``*.pdmodel``) and its ``*.pdiparams``, found from a folder, the program file or
the parameters file. Judged from names and a PIR file's first bytes only."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from convertkit.errors import UsageError

PIR_SUFFIX = ".json"
LEGACY_SUFFIX = ".pdmodel"
PARAMS_SUFFIX = ".pdiparams"
_PIR_MAGIC = re.compile(rb'"magic"\s*:\s*"pir"')
_PIR_HEAD_BYTES = 512


@dataclass(frozen=True)
class InferenceModel:
    """An inference model on disk: its program file and its parameters file, if any."""

    model_path: Path
    params_path: Path | None

    @property
    def is_legacy(self) -> bool:
        return self.model_path.suffix.lower() == LEGACY_SUFFIX

    @property
    def format(self) -> str:
        return "legacy .pdmodel" if self.is_legacy else "PIR .json"


def is_pir_json(path: Path) -> bool:
    """Whether ``path`` is a program written by Paddle 3 (PIR), judged from its first bytes:
    any other JSON (a config, a tokenizer) is not claimed."""
    try:
        with path.open("rb") as handle:
            head = handle.read(_PIR_HEAD_BYTES)
    except OSError:
        return False
    return _PIR_MAGIC.search(head) is not None


def model_files_in(folder: Path) -> list[Path]:
    """The Paddle program files in ``folder``: ``*.pdmodel`` and PIR ``*.json``."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [p for p in entries if p.is_file() and (
        p.suffix.lower() == LEGACY_SUFFIX or (p.suffix.lower() == PIR_SUFFIX and is_pir_json(p)))]


def models_beside(params: Path) -> list[Path]:
    """The program files with the stem of the parameters file ``params``."""
    return [p for p in (params.with_suffix(PIR_SUFFIX), params.with_suffix(LEGACY_SUFFIX))
            if p.is_file() and (p.suffix == LEGACY_SUFFIX or is_pir_json(p))]


def find_inference_model(path: Path) -> InferenceModel:
    """The program and parameters files that ``path`` (a folder, a program file or a
    ``.pdiparams`` file) names. The parameters file has the program's stem, or is the only
    ``.pdiparams`` beside it."""
    if path.is_dir():
        models = model_files_in(path)
        if not models:
            raise UsageError(
                f"{path} holds no Paddle inference model (*.json or *.pdmodel)",
                hint="pass the folder written by paddle.jit.save or "
                "paddle.static.save_inference_model, or the model file itself",
                code="source-not-found")
        if len(models) > 1:
            raise UsageError(
                f"{path} holds {len(models)} Paddle models: {', '.join(p.name for p in models)}",
                hint=f"pass one of them as SOURCE, e.g. {models[0]}",
                code="ambiguous-source")
        model = models[0]
    elif path.suffix.lower() == PARAMS_SUFFIX:
        models = models_beside(path)
        if len(models) != 1:
            raise UsageError(
                f"{path.name} is a parameters file; "
                + ("no model file with its name is beside it" if not models else
                   f"both {' and '.join(p.name for p in models)} are beside it"),
                hint="pass the model file (.json or .pdmodel) or its folder as SOURCE",
                code="source-not-found")
        model = models[0]
    else:
        model = path
    params = model.with_suffix(PARAMS_SUFFIX)
    if not params.is_file():
        others = sorted(model.parent.glob("*" + PARAMS_SUFFIX))
        params = others[0] if len(others) == 1 and len(model_files_in(model.parent)) == 1 \
            else None
    return InferenceModel(model, params)
