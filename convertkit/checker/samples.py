"""The samples a verdict rests on, and the samples calibration may see: never the same.

A sample is one set of model inputs, one array per input. ``--data`` and ``--calib-data``
give samples by one rule, per input:

- an array with the input's own rank is one sample;
- an array with one more axis holds samples stacked along its first axis
  (input ``x:batchx1x32x32``, array 200x1x1x32x32: 200 samples of batch 1);
- a folder of ``.npz`` files gives each file's samples, by the same rule, in name order.

Every input must give the same number of samples. A model that records no input shapes
(a PyTorch module without ``-i``) reads each array as one sample.

Which samples go where (``plan_samples``): without ``--data`` both sets are generated,
from different seeds. With ``--data`` and no ``--calib-data``, the samples are split: the
odd positions calibrate, the even ones are evaluated, so an ordered dataset (sorted by
class) feeds both halves; a single sample is evaluated and calibration is generated.
Generated calibration is a smoke test, not evidence for reduced precision (README).

Labels (``--labels``, or a ``labels`` array in the data ``.npz``) hold one class per
sample, ``[N]``, or one per row of a batched sample, ``[N, batch]``.

Sample sets are saved in convertkit/sample_files.py's format (arrays named
``NNNNNN/INPUT``); a file of plain input names is read as one sample.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from convertkit.errors import UsageError, first_line
from convertkit.sample_files import Sample, load_samples, save_samples, split_samples
from convertkit.spec import InputSpec

EVALUATION_SEED = 0
CALIBRATION_SEED = 1  # generated calibration never repeats a generated check sample
GENERATED_SAMPLES = 4  # per set, when nothing real is given
LABELS_KEY = "labels"
SAMPLE_RULE = ("an array with the input's rank is one sample; one more axis stacks "
               "samples along the first axis; a folder of .npz files gives each file's "
               "samples")



@dataclass(frozen=True)
class SampleSet:
    """Samples and where they came from, for the report."""

    samples: tuple[Sample, ...]
    origin: str  # "--data inputs.npz", "generated (seed 0)"
    indices: tuple[int, ...] | None = None  # positions in the file(s) of ``origin``
    is_real: bool = True

    def record(self) -> dict[str, Any]:
        return {"source": self.origin, "count": len(self.samples), "real": self.is_real,
                "indices": list(self.indices) if self.indices is not None else None}


@dataclass(frozen=True)
class SamplePlan:
    """What the check is graded on, what calibration and tuning see, and the labels of
    the evaluation samples (one array per sample), if any."""

    evaluation: SampleSet
    calibration: SampleSet
    labels: tuple[np.ndarray, ...] | None = None
    labels_origin: str | None = None

    def record(self) -> dict[str, Any]:
        return {"evaluation": self.evaluation.record(),
                "calibration": self.calibration.record(),
                "labels": self.labels_origin, "disjoint": True}


# --- reading what the user gave --------------------------------------------------------

def read_arrays(path: Path, option: str = "--data") -> list[dict[str, np.ndarray]]:
    """The arrays of an ``.npz`` (one dict), or of each ``.npz`` in a folder (name order).
    A sample set convertkit saved (``check/inputs.npz``) gives one dict per sample."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".npz" and p.is_file())
        if not files:
            raise UsageError(f"{option} {path} is a folder without .npz files",
                             hint="pass an .npz, or a folder of .npz files (one or more "
                             "samples each)", code="bad-data")
        return [arrays for file in files for arrays in _read_npz(file, option)]
    return _read_npz(path, option)


def check_readable(path: Path | None, option: str) -> None:
    """Refuse (exit 2) a sample or label file that cannot be read, before any work: the
    archive's index is read, not its arrays."""
    if path is None:
        return
    path = Path(path)
    files = [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".npz" and p.is_file())
        if not files:
            raise UsageError(f"{option} {path} is a folder without .npz files",
                             hint="pass an .npz, or a folder of .npz files", code="bad-data")
    for file in files:
        try:
            loaded = np.load(file, allow_pickle=False, mmap_mode="r")
            if isinstance(loaded, np.lib.npyio.NpzFile):
                with loaded:
                    if not loaded.files:
                        raise ValueError("it holds no arrays")
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise UsageError(f"cannot read {option} {file}: {first_line(exc)}",
                             hint="pass an .npz (or an .npy for --labels) written by numpy",
                             code="bad-labels" if option == "--labels" else "bad-data",
                             ) from exc


def _read_npz(path: Path, option: str) -> list[dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("it holds one array, not named arrays (.npy)")
            arrays = {name: archive[name] for name in archive.files}
        return split_samples(arrays)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UsageError(f"cannot read {option} {path}: {first_line(exc)}",
                         hint="pass an .npz written by numpy.savez, with one array per model "
                         "input named after it", code="bad-data") from exc


def specs_from_data(data: Mapping[str, np.ndarray]) -> list[InputSpec]:
    """Input specs from arrays, for a model that records none: each array one sample."""
    return [InputSpec(name, tuple(int(d) for d in array.shape), array.dtype.name)
            for name, array in data.items() if name != LABELS_KEY]


def samples_from(files: Sequence[Mapping[str, np.ndarray]], specs: Sequence[InputSpec],
                 option: str = "--data") -> list[Sample]:
    """The samples of ``files`` for ``specs``, by the rule (module docstring), in the specs'
    dtypes. A usage error names the input, the shapes and the rule."""
    samples: list[Sample] = []
    for data in files:
        missing = [s.name for s in specs if s.name not in data]
        if missing:
            inputs = [name for name in data if name != LABELS_KEY]
            raise UsageError(
                f"{option} has no array for input(s) {', '.join(missing)} "
                f"(it holds {', '.join(inputs) or 'nothing'})",
                hint="name each array in the .npz after the model input it feeds",
                code="bad-data")
        stacks = {spec.name: _stack(data[spec.name], spec, option) for spec in specs}
        counts = {len(stack) for stack in stacks.values()}
        if len(counts) > 1:
            sizes = ", ".join(f"{name}: {len(stack)}" for name, stack in stacks.items())
            raise UsageError(f"{option}: the inputs hold different numbers of samples "
                             f"({sizes})", hint=f"give every input as many samples; "
                             f"{SAMPLE_RULE}", code="bad-data")
        count = counts.pop() if counts else 0
        samples += [{spec.name: np.ascontiguousarray(stacks[spec.name][i]).astype(
            spec.dtype, copy=False) for spec in specs} for i in range(count)]
    if not samples:
        raise UsageError(f"{option} holds no samples", hint=SAMPLE_RULE, code="bad-data")
    return samples


def _stack(array: np.ndarray, spec: InputSpec, option: str) -> list[np.ndarray]:
    """``array`` as a list of samples of ``spec``: itself, or its first axis unstacked."""
    rank = len(spec.dims)
    if array.ndim == rank and _fits(array.shape, spec):
        return [array]
    if array.ndim == rank + 1 and _fits(array.shape[1:], spec):
        return list(array)
    raise UsageError(
        f"{option}: input {spec.name} holds an array of shape {list(array.shape)}, which "
        f"is neither one sample nor a stack of samples of {spec} (shape "
        f"{_dims_text(spec)})", hint=SAMPLE_RULE, code="bad-data")


def _fits(shape: Sequence[int], spec: InputSpec) -> bool:
    return len(shape) == len(spec.dims) and all(
        isinstance(dim, str) or dim == size for dim, size in zip(spec.dims, shape, strict=True))


def _dims_text(spec: InputSpec) -> str:
    return "[" + ", ".join(str(d) for d in spec.dims) + "]"


def labels_from(path: Path | None, files: Sequence[Mapping[str, np.ndarray]] | None,
                count: int) -> tuple[list[np.ndarray] | None, str | None]:
    """The labels of ``count`` samples, one array per sample: from ``--labels`` (an .npy,
    or an .npz with one array), else from ``labels`` arrays in the data files, else None.
    Returns (labels, where they came from)."""
    if path is not None:
        labels, origin = _read_labels(path), f"--labels {path}"
    elif files and all(LABELS_KEY in data for data in files):
        parts = [np.atleast_1d(np.asarray(data[LABELS_KEY])) for data in files]
        labels, origin = np.concatenate(parts) if len(parts) > 1 else parts[0], "--data"
    else:
        return None, None
    if not np.issubdtype(labels.dtype, np.integer) or labels.ndim not in (1, 2):
        raise UsageError(
            f"the labels ({origin}) are {labels.dtype} of shape {list(labels.shape)}",
            hint="give one integer class per sample, shape [N], or per row of a batched "
            "sample, shape [N, batch]", code="bad-labels")
    if len(labels) != count:
        raise UsageError(f"the labels ({origin}) are for {len(labels)} samples, the data "
                         f"holds {count}", hint="give one label (or one row of labels) per "
                         "sample, in the samples' order", code="bad-labels")
    return [np.asarray(label) for label in labels], origin


def _read_labels(path: Path) -> np.ndarray:
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                if len(loaded.files) != 1 and LABELS_KEY not in loaded.files:
                    raise ValueError(f"it holds {len(loaded.files)} arrays; name the one "
                                     f"to use {LABELS_KEY!r}")
                return loaded[LABELS_KEY if LABELS_KEY in loaded.files else loaded.files[0]]
        return loaded
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UsageError(f"cannot read --labels {path}: {first_line(exc)}",
                         hint="pass an .npy (or an .npz with one array) of integer classes",
                         code="bad-labels") from exc


# --- deciding what goes where ----------------------------------------------------------

def plan_samples(specs: Sequence[InputSpec], model: onnx.ModelProto | None, *,
                 data: Path | None, calib_data: Path | None, labels: Path | None,
                 seed: int = EVALUATION_SEED, calibrate: bool = True) -> SamplePlan:
    """The evaluation and calibration samples of one run (module docstring), disjoint.
    Without ``calibrate`` (a check that builds nothing) every sample is evaluated and the
    calibration set is empty."""
    if not calibrate:
        evaluation, sample_labels, origin = evaluation_samples(specs, model, data, labels,
                                                               seed)
        return SamplePlan(evaluation, SampleSet((), "none: nothing is built", (), False),
                          sample_labels, origin)
    if data is None:
        evaluation = SampleSet(tuple(generate_samples(specs, model, seed, GENERATED_SAMPLES)),
                               f"generated (seed {seed})", is_real=False)
        if labels is not None:
            raise UsageError("--labels needs --data: the labels belong to real samples",
                             hint="pass the samples the labels describe with --data",
                             code="bad-labels")
        return SamplePlan(evaluation, _calibration(specs, model, calib_data))
    files = read_arrays(data, "--data")
    samples = samples_from(files, specs, "--data")
    sample_labels, labels_origin = labels_from(labels, files, len(samples))
    if calib_data is not None or len(samples) == 1:
        chosen = tuple(range(len(samples)))
        calibration = _calibration(specs, model, calib_data)
    else:
        chosen = tuple(range(0, len(samples), 2))
        odd = tuple(range(1, len(samples), 2))
        calibration = SampleSet(tuple(samples[i] for i in odd), f"--data {data}", odd)
    evaluation = SampleSet(tuple(samples[i] for i in chosen), f"--data {data}", chosen)
    kept_labels = (tuple(sample_labels[i] for i in chosen) if sample_labels is not None
                   else None)
    return SamplePlan(evaluation, calibration, kept_labels, labels_origin)


def evaluation_samples(specs: Sequence[InputSpec], model: onnx.ModelProto | None,
                       data: Path | None, labels: Path | None, seed: int = EVALUATION_SEED,
                       ) -> tuple[SampleSet, tuple[np.ndarray, ...] | None, str | None]:
    """Every sample of ``data`` (or a generated set) with their labels: what a check that
    builds nothing runs on."""
    if data is None:
        if labels is not None:
            raise UsageError("--labels needs --data: the labels belong to real samples",
                             hint="pass the samples the labels describe with --data",
                             code="bad-labels")
        return (SampleSet(tuple(generate_samples(specs, model, seed, GENERATED_SAMPLES)),
                          f"generated (seed {seed})", is_real=False), None, None)
    files = read_arrays(data, "--data")
    samples = samples_from(files, specs, "--data")
    sample_labels, origin = labels_from(labels, files, len(samples))
    return (SampleSet(tuple(samples), f"--data {data}", tuple(range(len(samples)))),
            tuple(sample_labels) if sample_labels is not None else None, origin)


def _calibration(specs: Sequence[InputSpec], model: onnx.ModelProto | None,
                 calib_data: Path | None) -> SampleSet:
    if calib_data is not None:
        samples = samples_from(read_arrays(calib_data, "--calib-data"), specs, "--calib-data")
        return SampleSet(tuple(samples), f"--calib-data {calib_data}",
                         tuple(range(len(samples))))
    return SampleSet(tuple(generate_samples(specs, model, CALIBRATION_SEED, GENERATED_SAMPLES)),
                     f"generated (seed {CALIBRATION_SEED})", is_real=False)


def generate_samples(specs: Sequence[InputSpec], model: onnx.ModelProto | None, seed: int,
                     count: int) -> list[Sample]:
    """``count`` samples of seeded random values (checker/inputs.py: generate_feeds), each
    from its own stream of ``seed``."""
    from convertkit.checker.inputs import generate_feeds

    return [generate_feeds(specs, model, seed=np.random.SeedSequence([seed, index]))
            for index in range(count)]


# --- files -------------------------------------------------------------------------------

def save_labels(path: Path, labels: Sequence[np.ndarray]) -> None:
    save_samples(path, [{LABELS_KEY: np.asarray(label)} for label in labels])


def load_labels(path: Path) -> list[np.ndarray]:
    return [sample[LABELS_KEY] for sample in load_samples(path)]
