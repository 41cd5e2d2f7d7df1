"""The file format of a set of samples: one ``.npz`` whose arrays are named ``NNNNNN/NAME``
(six-digit sample index, slash, input or output name). A file can hold any number of
samples of any shapes, and a name like one of numpy's own keywords (``file``) cannot
clash. A file of plain names (written before samples existed, or by a user) is one sample.

Numpy only: toolchain steps (convertkit/toolchain_steps) read and write these files in
their own environments, on their own Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

Sample = dict[str, np.ndarray]


def save_samples(path: str | Path, samples: Sequence[Mapping[str, np.ndarray]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{index:06d}/{name}": np.asarray(value)
              for index, sample in enumerate(samples) for name, value in sample.items()}
    with path.open("wb") as handle:
        np.savez(handle, **arrays)


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
