"""convertkit/checker/samples.py: samples by one rule, evaluation and calibration apart,
labels, and the files that hold them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convertkit.checker.samples import (
    GENERATED_SAMPLES,
    load_samples,
    plan_samples,
    read_arrays,
    samples_from,
    save_samples,
    specs_from_data,
)
from convertkit.errors import UsageError
from convertkit.spec import InputSpec

X = InputSpec.parse("x:batchx1x4x4")


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_an_array_of_the_inputs_rank_is_one_sample_one_more_axis_stacks_them() -> None:
    one = samples_from([{"x": np.zeros((2, 1, 4, 4), np.float64)}], [X])
    stacked = samples_from([{"x": np.arange(200 * 16, dtype=np.float32).reshape(
        200, 1, 1, 4, 4)}], [X])

    assert len(one) == 1 and one[0]["x"].shape == (2, 1, 4, 4)
    assert one[0]["x"].dtype == np.float32  # cast to the input's dtype
    assert len(stacked) == 200 and stacked[7]["x"].shape == (1, 1, 4, 4)
    assert stacked[7]["x"][0, 0, 0, 0] == 7 * 16


@pytest.mark.parametrize("shape", [(1, 4, 4), (3, 1, 5, 4), (2, 3, 1, 1, 4, 4)])
def test_any_other_shape_names_the_input_the_shapes_and_the_rule(shape) -> None:
    with pytest.raises(UsageError) as caught:
        samples_from([{"x": np.zeros(shape, np.float32)}], [X])

    message = caught.value.message
    assert caught.value.exit_code == 2
    assert "input x" in message and str(list(shape)) in message and "batch" in message
    assert "stacks samples along the first axis" in caught.value.hint


def test_a_fixed_dimension_that_disagrees_is_refused() -> None:
    """-i x:1x1x32x32 with an array 2x1x32x32: one sample the declared input does not take
    (it used to export batch 2 while the report said 1)."""
    spec = InputSpec.parse("x:1x1x32x32")

    with pytest.raises(UsageError, match=r"\[2, 1, 32, 32\]"):
        samples_from([{"x": np.zeros((2, 1, 32, 32), np.float32)}], [spec])


def test_inputs_must_give_as_many_samples() -> None:
    ids = InputSpec.parse("ids:batchx3:int64")

    with pytest.raises(UsageError, match="different numbers of samples"):
        samples_from([{"x": np.zeros((5, 1, 1, 4, 4)), "ids": np.zeros((4, 1, 3))}], [X, ids])


def test_a_folder_gives_each_files_samples_in_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    _npz(folder / "b.npz", x=np.full((1, 1, 4, 4), 2.0))
    _npz(folder / "a.npz", x=np.full((3, 1, 1, 4, 4), 1.0))

    samples = samples_from(read_arrays(folder), [X])

    assert [float(s["x"].flat[0]) for s in samples] == [1.0, 1.0, 1.0, 2.0]


@pytest.mark.parametrize("content", [b"not a zip archive", b""])
def test_an_unreadable_file_is_a_usage_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "data.npz"
    path.write_bytes(content)

    with pytest.raises(UsageError) as caught:
        read_arrays(path)

    assert caught.value.code == "bad-data" and caught.value.exit_code == 2


def test_specs_from_data_skip_the_labels() -> None:
    data = {"x": np.ones((1, 3), np.float32), "labels": np.zeros(1, np.int64)}

    assert specs_from_data(data) == [InputSpec("x", (1, 3), "float32")]


def test_without_data_both_sets_are_generated_from_different_seeds() -> None:
    plan = plan_samples([X], None, data=None, calib_data=None, labels=None)

    assert len(plan.evaluation.samples) == len(plan.calibration.samples) == GENERATED_SAMPLES
    assert not plan.evaluation.is_real and not plan.calibration.is_real
    evaluation = {s["x"].tobytes() for s in plan.evaluation.samples}
    assert not evaluation & {s["x"].tobytes() for s in plan.calibration.samples}
    assert len(evaluation) == GENERATED_SAMPLES  # not one sample repeated


def test_data_alone_is_split_odd_calibrates_even_is_checked(tmp_path: Path) -> None:
    values = np.arange(9, dtype=np.float32).reshape(9, 1, 1, 1, 1) * np.ones((1, 1, 1, 4, 4))
    labels = np.arange(9) % 3
    data = _npz(tmp_path / "d.npz", x=values, labels=labels)

    plan = plan_samples([X], None, data=data, calib_data=None, labels=None)

    assert plan.evaluation.indices == (0, 2, 4, 6, 8)
    assert plan.calibration.indices == (1, 3, 5, 7)
    assert plan.calibration.is_real
    assert [int(s["x"].flat[0]) for s in plan.evaluation.samples] == [0, 2, 4, 6, 8]
    assert [int(label) for label in plan.labels] == [0, 2, 1, 0, 2]
    record = plan.record()
    assert record["evaluation"]["count"] == 5 and record["calibration"]["indices"] == [1, 3, 5, 7]
    assert not set(record["evaluation"]["indices"]) & set(record["calibration"]["indices"])


def test_calib_data_leaves_all_of_data_to_the_check(tmp_path: Path) -> None:
    data = _npz(tmp_path / "d.npz", x=np.zeros((4, 1, 1, 4, 4)))
    calib = _npz(tmp_path / "c.npz", x=np.ones((6, 1, 1, 4, 4)))

    plan = plan_samples([X], None, data=data, calib_data=calib, labels=None)

    assert len(plan.evaluation.samples) == 4 and len(plan.calibration.samples) == 6
    assert plan.calibration.origin == f"--calib-data {calib}"


def test_one_sample_is_checked_and_calibration_is_generated(tmp_path: Path) -> None:
    data = _npz(tmp_path / "d.npz", x=np.zeros((2, 1, 4, 4)))

    plan = plan_samples([X], None, data=data, calib_data=None, labels=None)

    assert len(plan.evaluation.samples) == 1
    assert not plan.calibration.is_real


@pytest.mark.parametrize(("labels", "needle"), [
    (np.zeros(3, np.int64), "for 3 samples, the data holds 4"),
    (np.zeros(4, np.float32), "float32"),
])
def test_labels_that_do_not_fit_are_usage_errors(tmp_path: Path, labels, needle) -> None:
    data = _npz(tmp_path / "d.npz", x=np.zeros((4, 1, 1, 4, 4)))
    np.save(tmp_path / "labels.npy", labels)

    with pytest.raises(UsageError, match=needle) as caught:
        plan_samples([X], None, data=data, calib_data=None, labels=tmp_path / "labels.npy")

    assert caught.value.code == "bad-labels"


def test_labels_need_data() -> None:
    with pytest.raises(UsageError, match="--labels needs --data"):
        plan_samples([X], None, data=None, calib_data=None, labels=Path("l.npy"))


def test_saved_samples_round_trip_and_an_input_named_file_does_not_clash(tmp_path) -> None:
    samples = [{"file": np.arange(3), "x": np.zeros((1, 2))}, {"file": np.arange(5),
                                                               "x": np.ones((2, 2))}]
    save_samples(tmp_path / "s.npz", samples)

    loaded = load_samples(tmp_path / "s.npz")

    assert len(loaded) == 2 and loaded[1]["file"].shape == (5,)
    np.testing.assert_array_equal(loaded[1]["x"], np.ones((2, 2)))
    assert len(read_arrays(tmp_path / "s.npz")) == 2  # a saved set reads back as samples


def test_a_file_of_plain_names_loads_as_one_sample(tmp_path: Path) -> None:
    _npz(tmp_path / "old.npz", x=np.zeros(3))

    assert [list(s) for s in load_samples(tmp_path / "old.npz")] == [["x"]]
