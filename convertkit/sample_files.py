"""The file format of a set of samples: one ``.npz`` whose arrays are named ``NNNNNN/NAME``
(six-digit sample index, slash, input or output name). A file can hold any number of
samples of any shapes. A file of plain names (written before samples existed, or by a
user) is one sample.

Arrays are written by ``save_npz``, one ``NAME.npy`` member per array as ``np.savez``
writes them (``np.load`` reads them back), but taking the names as a dict: with
``np.savez(path, **arrays)`` a name that is one of its own parameters (``file``, and
``allow_pickle`` in numpy 2) is a keyword, not an array. Names are archive member names,
never paths: nothing is extracted, so ``../x`` is just a name.

Numpy and convertkit.errors only: toolchain steps (convertkit/toolchain_steps) read and
write these files in their own environments, on their own Python.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from convertkit.errors import UsageError

Sample = dict[str, np.ndarray]
# A zip member name is at most 65535 bytes; ".npy" is appended.
MAX_NAME_BYTES = 65535 - len(".npy")


def save_samples(path: str | Path, samples: Sequence[Mapping[str, np.ndarray]]) -> None:
    path = Path(path)
    for name in {name for sample in samples for name in sample}:
        _check_member_name(name)  # before the prefix: the error names the model's name
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{index:06d}/{name}": np.asarray(value)
              for index, sample in enumerate(samples) for name, value in sample.items()}
    with path.open("wb") as handle:
        save_npz(handle, arrays)


def save_npz(file: str | Path | BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as an uncompressed ``.npz`` (as ``np.savez`` does) under exactly
    their names, whatever the names are."""
    for name in arrays:
        _check_member_name(name)
    with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED,
                         allowZip64=True) as archive:
        for name, value in arrays.items():
            with archive.open(name + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def _check_member_name(name: str) -> None:
    """A UsageError (a plain one: it keeps its class across a child process) for a name
    that no .npz member can carry."""
    hint = "rename that input or output in the model"
    # zipfile cuts a member name at its first NUL: two names could become one.
    if "\0" in name:
        raise UsageError(f"the tensor name {name[:60]!r} holds a NUL character, which "
                         "no .npz file can store", hint=hint, code="unstorable-name")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise UsageError(f"the tensor name {name[:60]!r}... is longer than the "
                         f"{MAX_NAME_BYTES} bytes an .npz file can store",
                         hint=hint, code="unstorable-name")


def load_samples(path: str | Path) -> list[Sample]:
    with np.load(path, allow_pickle=False) as archive:
        return split_samples({name: archive[name] for name in archive.files})


def split_samples(arrays: Mapping[str, np.ndarray]) -> list[Sample]:
    """Arrays named NNNNNN/NAME as one dict per sample, in order; other arrays as one."""
    if not arrays or not all(_is_sample_key(key) for key in arrays):
        return [dict(arrays)]
    samples: dict[int, Sample] = {}
    for key, value in arrays.items():
        index, _, name = key.partition("/")
        samples.setdefault(int(index), {})[name] = value
    return [samples[index] for index in sorted(samples)]


def _is_sample_key(key: str) -> bool:
    index, slash, name = key.partition("/")
    return bool(slash and name and index.isdigit() and len(index) == 6)
