"""Hugging Face model folders (what ``save_pretrained`` writes: ``config.json`` plus
safetensors weights) as PyTorch sources, judged without importing torch or transformers.

A folder is read as data only: ``config.json`` must be a JSON object naming a
``model_type``; the weights must be safetensors (a header and raw tensors, nothing that
runs). A folder whose config asks for the model's own Python code (``auto_map``, i.e.
``trust_remote_code``) or whose weights are pickled (``pytorch_model.bin``) is refused
unless ``--trust-code``. Nothing is ever fetched: transformers runs offline.

The task (what the model is exported as) follows Optimum's task names: given with
``--task``, else read from the config's ``architectures``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convertkit.errors import UsageError
from convertkit.safe_text import printable

CONFIG_FILE = "config.json"
MAX_CONFIG_BYTES = 4 * 1024 * 1024  # real configs are a few KB
SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# Set before transformers is imported, in the child that loads the folder.
OFFLINE_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                       "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


@dataclass(frozen=True)
class Task:
    """One of Optimum's task names, and the transformers Auto class that loads it."""

    name: str
    auto_class: str
    with_past: bool = False  # a decoder exported with its KV cache as inputs and outputs
    encoder_decoder: bool = False  # exported as an encoder and a decoder with its cache


TASKS = {task.name: task for task in (
    Task("text-generation-with-past", "AutoModelForCausalLM", with_past=True),
    Task("text-generation", "AutoModelForCausalLM"),
    Task("feature-extraction", "AutoModel"),
    Task("text-classification", "AutoModelForSequenceClassification"),
    Task("token-classification", "AutoModelForTokenClassification"),
    Task("fill-mask", "AutoModelForMaskedLM"),
    Task("image-classification", "AutoModelForImageClassification"),
    Task("text2text-generation-with-past", "AutoModelForSeq2SeqLM", with_past=True,
         encoder_decoder=True),
    Task("automatic-speech-recognition", "AutoModelForSpeechSeq2Seq", with_past=True,
         encoder_decoder=True),
)}

# The class name's ending -> the task it implies (the first match wins).
_ARCHITECTURE_TASKS = (
    ("ForCausalLM", "text-generation-with-past"),
    ("LMHeadModel", "text-generation-with-past"),
    ("ForSpeechSeq2Seq", "automatic-speech-recognition"),
    ("ForConditionalGeneration", "text2text-generation-with-past"),
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForMaskedLM", "fill-mask"),
    ("ForImageClassification", "image-classification"),
    ("Model", "feature-extraction"),
)
_SPEECH_MODEL_TYPES = {"whisper", "speech_to_text", "speecht5"}


def is_hf_folder(path: Path | None) -> bool:
    """Whether ``path`` is a folder holding a transformers ``config.json``."""
    if path is None or not path.is_dir():
        return False
    config = path / CONFIG_FILE
    try:
        if not config.is_file() or config.stat().st_size > MAX_CONFIG_BYTES:
            return False
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("model_type"), str)


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's config.json, checked to be what transformers writes."""
    config = folder / CONFIG_FILE
    name = _name(str(config))
    if not config.is_file():
        raise UsageError(f"{name} is missing",
                         hint="pass the folder save_pretrained wrote", code="bad-hf-folder")
    if config.stat().st_size > MAX_CONFIG_BYTES:
        raise UsageError(f"{name} is over {MAX_CONFIG_BYTES // (1024 * 1024)} MB: not a "
                         "transformers config", hint="pass the folder save_pretrained wrote",
                         code="bad-hf-folder")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise UsageError(f"{name} is not valid JSON: {error}",
                         hint="pass the folder save_pretrained wrote",
                         code="bad-hf-folder") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise UsageError(f"{name} names no model_type",
                         hint="pass the folder save_pretrained wrote", code="bad-hf-folder")
    architectures = data.get("architectures") or []
    if not isinstance(architectures, list) or not all(isinstance(a, str)
                                                      for a in architectures):
        raise UsageError(f"{name}: architectures must be a list of class names",
                         hint="pass the folder save_pretrained wrote", code="bad-hf-folder")
    return data


def check_folder(folder: Path, config: dict[str, Any], trust_code: bool) -> list[str]:
    """Refuse what would run code unless ``trust_code``; the notes on what was allowed."""
    notes = []
    if "auto_map" in config:
        if not trust_code:
            raise UsageError(
                f"{_name(folder.name)} needs its own Python code (config.json auto_map: "
                "trust_remote_code), which convertkit does not run by default",
                hint="pass --trust-code if you trust the folder's code",
                code="untrusted-code")
        notes.append("--trust-code: the folder's own Python code (auto_map) was run")
    has_safetensors = any((folder / name).is_file() for name in SAFETENSORS)
    has_pickle = any((folder / name).is_file() for name in PICKLED)
    for entry in folder.iterdir():  # the weights must be plain files in the folder
        if entry.name.endswith((".safetensors", ".bin")) and (
                entry.is_symlink() or not entry.is_file()):
            raise UsageError(f"{_name(entry.name)} in {_name(folder.name)} is not a "
                             "regular file", hint="copy the weights into the folder",
                             code="bad-hf-folder")
    if not has_safetensors:
        if not has_pickle:
            raise UsageError(f"{_name(folder.name)} holds no weights (model.safetensors)",
                             hint="save the model with save_pretrained (safetensors)",
                             code="bad-hf-folder")
        if not trust_code:
            raise UsageError(
                f"{_name(folder.name)} holds pickled weights (pytorch_model.bin), which "
                "can run code when loaded",
                hint="re-save it with save_pretrained(safe_serialization=True), or pass "
                     "--trust-code if you trust the file", code="untrusted-code")
        notes.append("--trust-code: pickled weights (pytorch_model.bin) were loaded")
    return notes


def resolve_task(config: dict[str, Any], given: str | None) -> Task:
    """The task ``--task`` names, else the one the config's architectures imply."""
    if given is not None:
        task = TASKS.get(given)
        if task is None:
            raise UsageError(f"unknown task {given!r}",
                             hint=f"use one of: {', '.join(TASKS)}", code="bad-task")
    else:
        architectures = config.get("architectures") or []
        name = next((task for architecture in architectures
                     for ending, task in _ARCHITECTURE_TASKS
                     if architecture.endswith(ending)), None)
        if name is None:
            raise UsageError("config.json names no architectures, so the task is unknown",
                             hint=f"pass --task (one of: {', '.join(TASKS)})",
                             code="bad-task")
        if (name == "text2text-generation-with-past"
                and config.get("model_type") in _SPEECH_MODEL_TYPES):
            name = "automatic-speech-recognition"
        task = TASKS[name]
    return task


def offline_environment() -> None:
    """Make transformers and huggingface_hub work offline in this process."""
    os.environ.update(OFFLINE_ENVIRONMENT)


def _name(text: str) -> str:
    return repr(printable(text))
