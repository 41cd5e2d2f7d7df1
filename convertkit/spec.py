"""Plain data that describes a conversion: inputs, targets, the source. Parsed once, here."""

from __future__ import annotations

import enum
import glob
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from convertkit.errors import UsageError

# Dynamic (named) dimensions are fed with this size for export examples and the check.
# Not 1: torch.export specialises dimensions of size 0 and 1 to constants.
DYNAMIC_DIM_CHECK_SIZE = 2

# Element types an input may have, by numpy's name (spec.py imports no numpy: the CLI
# parses options before anything heavy is loaded).
DTYPES: tuple[str, ...] = ("float32", "float16", "float64", "int64", "int32", "int16", "int8",
                           "uint8", "bool")
_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "float": "float32",
                  "double": "float64", "long": "int64", "int": "int32"}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


class Status(enum.StrEnum):
    """Outcome of one artifact. Only PASS means a check ran and held."""

    PASS = "pass"
    FAIL = "fail"
    BUILT = "built"  # compiled, but nothing here can run it
    PREPARED = "prepared"  # inputs for a toolchain that is not installed here
    ERROR = "error"

    def __bool__(self) -> bool:  # a status is never a truth value
        raise TypeError("compare a Status with ==, it has no truth value")


class Family(enum.StrEnum):
    ONNX = "onnx"
    CPU = "cpu"
    GPU = "gpu"
    NPU = "npu"


class Precision(enum.StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"
    # Weight-only int4 (block-wise int4 weights, activations not quantised): cpu:ort and
    # cpu:openvino, for decoders with a KV cache, whose decode speed is bound by reading
    # the weights.
    INT4 = "int4"


def parse_dtype(text: str) -> str:
    """numpy's name of the dtype ``text`` names (float32, fp16, long, ...)."""
    name = _DTYPE_ALIASES.get(text.lower(), text.lower())
    if name not in DTYPES:
        raise UsageError(
            f"unknown dtype {text!r}",
            hint=f"use one of: {', '.join(DTYPES)}",
            code="bad-input-spec",
        )
    return name


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, its dims (an int, or a name for a dynamic axis) and dtype."""

    name: str
    dims: tuple[int | str, ...]
    dtype: str = "float32"

    @staticmethod
    def parse(text: str) -> InputSpec:
        """Parse NAME:DIMS[:DTYPE], DIMS as 1x3x224x224 or 1,3,224,224 (use commas when a
        dynamic axis name contains an 'x'); an empty DIMS is a scalar."""
        parts = text.split(":")
        usage = ("write -i NAME:DIMS[:DTYPE], e.g. -i x:1x3x224x224:float32 "
                 "or -i ids:batchx128:int64")
        if len(parts) not in (2, 3) or not parts[0]:
            raise UsageError(f"cannot read input spec {text!r}", hint=usage, code="bad-input-spec")
        name, dims_text = parts[0], parts[1]
        dtype = parse_dtype(parts[2]) if len(parts) == 3 else "float32"
        if dims_text in ("", "scalar"):
            tokens = []
        elif "," in dims_text:
            tokens = dims_text.removesuffix(",").split(",")  # "m:maxlen," is one dynamic dim
        else:
            tokens = dims_text.split("x")
        dims: list[int | str] = []
        for token in tokens:
            token = token.strip()
            if token.isdigit():
                dims.append(int(token))
            elif _IDENTIFIER.match(token):
                dims.append(token)
            else:
                raise UsageError(
                    f"cannot read dimension {token!r} in input spec {text!r}",
                    hint=usage + "; a dimension is a number or a name (dynamic axis)",
                    code="bad-input-spec",
                )
        return InputSpec(name, tuple(dims), dtype)

    @property
    def is_dynamic(self) -> bool:
        return any(isinstance(d, str) for d in self.dims)

    def check_shape(self) -> tuple[int, ...]:
        """The concrete shape used for export examples and generated check inputs."""
        return tuple(d if isinstance(d, int) else DYNAMIC_DIM_CHECK_SIZE for d in self.dims)

    def __str__(self) -> str:
        """The -i form, which parses back to this spec."""
        if any(isinstance(d, str) and "x" in d for d in self.dims):
            dims = ",".join(str(d) for d in self.dims) + ("," if len(self.dims) == 1 else "")
        else:
            dims = "x".join(str(d) for d in self.dims)
        return f"{self.name}:{dims}:{self.dtype}"

    def to_dict(self) -> dict:
        return {"name": self.name, "dims": list(self.dims), "dtype": self.dtype}

    @staticmethod
    def from_dict(data: dict) -> InputSpec:
        return InputSpec(data["name"], tuple(data["dims"]), data["dtype"])


@dataclass(frozen=True)
class TargetSpec:
    """FAMILY[:TOOLCHAIN][@DEVICE], e.g. cpu, cpu:ort, npu:rknn@rk3588."""

    family: str
    toolchain: str | None = None
    device: str | None = None

    @staticmethod
    def parse(text: str) -> TargetSpec:
        match = re.fullmatch(r"([a-z0-9_]+)(?::([a-z0-9_\-]+))?(?:@([A-Za-z0-9_.\-]+))?",
                             text.strip().lower())
        if not match:
            raise UsageError(
                f"cannot read target {text!r}",
                hint="write FAMILY[:TOOLCHAIN][@DEVICE], e.g. cpu, cpu:ort, gpu:fp16, "
                "npu:rknn@rk3588; `convertkit targets` lists them all",
                code="bad-target",
            )
        return TargetSpec(*match.groups())

    def __str__(self) -> str:
        text = self.family
        if self.toolchain:
            text += f":{self.toolchain}"
        if self.device:
            text += f"@{self.device}"
        return text


@dataclass(frozen=True)
class SourceRef:
    """What the user named as SOURCE: a path, or FILE.py:NAME / package.module:NAME."""

    text: str
    path: Path | None  # the file or folder (the .py file for FILE.py:NAME)
    module: str | None  # package.module for package.module:NAME
    attribute: str | None  # NAME

    @staticmethod
    def parse(text: str) -> SourceRef:
        head, sep, tail = text.rpartition(":")
        if sep and tail and _IDENTIFIER.match(tail) and not Path(text).exists():
            if head.endswith(".py"):
                return SourceRef(text, Path(head), None, tail)
            if _IDENTIFIER.match(head) and not Path(head).exists():
                return SourceRef(text, None, head, tail)
        return SourceRef(text, Path(text), None, None)

    @property
    def is_python_object(self) -> bool:
        return self.attribute is not None

    def validate(self) -> None:
        """Raise a UsageError when a named file or folder is missing or unreadable."""
        if self.path is None:
            return
        if not self.path.exists():
            raise UsageError(
                f"source not found: {self.path}",
                hint="pass an existing model file or folder, or FILE.py:NAME / module:NAME",
                code="source-not-found",
            )
        special = _special_files(self.path)
        if special:
            raise UsageError(
                f"source {self.path}: {special[0]} is a {special[1]}, not a regular file; "
                "nothing was read",
                hint="a model's files must be regular files (a FIFO or device would block "
                "or never end the read): copy the real file in its place",
                code="source-not-regular")
        if self.path.is_file():
            try:
                with self.path.open("rb") as handle:
                    handle.read(1)
            except OSError as exc:
                raise UsageError(
                    f"cannot read source {self.path}: {exc.strerror}",
                    hint="check the file's permissions",
                    code="source-unreadable",
                ) from exc
            if self.path.suffix.lower() == ".onnx":
                from convertkit.ir.external_data import checked_external_files

                checked_external_files(self.path)  # before anything follows a location

    def to_dict(self) -> dict:
        return {"text": self.text, "path": str(self.path) if self.path else None,
                "module": self.module, "attribute": self.attribute}

    @staticmethod
    def from_dict(data: dict) -> SourceRef:
        return SourceRef(data["text"], Path(data["path"]) if data["path"] else None,
                         data["module"], data["attribute"])


def existing_file(path: str | Path | None, option: str, *,
                  folder_too: bool = False) -> Path | None:
    """The file (or, with ``folder_too``, folder) an option names, or a UsageError when it
    does not exist."""
    if path is None:
        return None
    path = Path(path)
    if not (path.is_file() or (folder_too and path.is_dir())):
        raise UsageError(f"{option} file not found: {path}", hint=f"pass an existing {option} file",
                         code="file-not-found")
    return path


_SPECIAL_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                  (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))
_MAX_SCANNED = 20_000


def _special_files(path: Path) -> tuple[Path, str] | None:
    """The first file of a model source that is not a regular file or folder (followed
    through symbolic links), and what it is: the source itself, the files beside a file
    source that share its name (model.json + model.pdiparams), or anything inside a
    folder source (a SavedModel's fingerprint.pb). A framework would block on a FIFO, or
    read a device without end."""
    if path.is_dir():
        candidates = _walk(path)
    else:
        candidates = [path, *(p for p in path.parent.glob(f"{glob.escape(path.stem)}.*")
                              if p != path)]
    for candidate in candidates:
        try:
            mode = candidate.stat().st_mode
        except OSError:
            continue  # missing or dangling: reported where it is read
        for is_kind, kind in _SPECIAL_KINDS:
            if is_kind(mode):
                return candidate, kind
    return None


def _walk(folder: Path) -> list[Path]:
    """The entries below ``folder``, without following links to folders (bounded)."""
    found, pending = [], [folder]
    while pending and len(found) < _MAX_SCANNED:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            found.append(Path(entry.path))
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
    return found
