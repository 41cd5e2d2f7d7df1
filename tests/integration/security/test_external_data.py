"""ONNX external data from a hostile model: every location must stay inside the model's
folder, name a regular file and a byte range within it, checked before a byte is read or
copied. Each test writes the model's external_data entries by hand, as an attacker would,
and runs the real CLI (convert, check, inspect, batch)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

# A refusal takes a second or two; a hang on a device or FIFO would run into this.
TIMEOUT_S = 120
WEIGHTS = np.arange(4, dtype=np.float32)


def _graph(initializers: list[TensorProto]) -> onnx.ModelProto:
    nodes, previous = [], "x"
    for index, tensor in enumerate(initializers):
        nodes.append(helper.make_node("Add", [previous, tensor.name], [f"y{index}"]))
        previous = f"y{index}"
    nodes.append(helper.make_node("Identity", [previous], ["y"]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _external(name: str, **entries: str) -> TensorProto:
    """A float[4] initializer whose data is wherever ``entries`` (location, offset, ...)
    say, written as raw entries: nothing checks them on the way in."""
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[4],
                         data_location=TensorProto.EXTERNAL)
    for key, value in entries.items():
        tensor.external_data.add(key=key, value=value)
    return tensor


def hostile_model(folder: Path, location: str, *, two_files: bool = False,
                  **entries: str) -> Path:
    """``folder/model.onnx``: tensor W at ``location``. With ``two_files`` a second tensor
    is in a proper file beside it, so that copying the model keeps every location as
    written (a single data file is renamed on the way)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "good.bin").write_bytes(WEIGHTS.tobytes())
    path = folder / "model.onnx"
    tensors = [_external("W", location=location, **entries)]
    if two_files:
        tensors.append(_external("V", location="good.bin"))
    onnx.save_model(_graph(tensors), str(path))
    return path


def legit_model(folder: Path, location: str = "weights/w.bin") -> Path:
    """A model saved by onnx itself with its data in a subfolder."""
    (folder / location).parent.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    model = _graph([numpy_helper.from_array(WEIGHTS, "W")])
    onnx.save_model(model, str(path), save_as_external_data=True, location=location,
                    size_threshold=0)
    return path


def files_under(folder: Path) -> dict[str, bytes]:
    """Every regular file under ``folder`` and its bytes (symlinks and FIFOs skipped)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def assert_refused(result, tensor: str, location: str, *, code_words: str = "") -> None:
    """Exit 2 with one error line naming the tensor and the location, a hint, no traceback."""
    assert result.exit_code == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert f"tensor {tensor!r}" in errors[0] and repr(location) in errors[0], errors[0]
    assert code_words in errors[0], errors[0]
    assert any(line.startswith("hint:") for line in result.stderr.splitlines())


def assert_nothing_left(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    assert not [p for p in tmp_path.rglob("*") if "partial" in p.name], list(tmp_path.rglob("*"))


# --- convert ----------------------------------------------------------------------------

def test_a_location_that_climbs_out_writes_nothing_outside_out(cli, tmp_path: Path) -> None:
    # The user works in work/ (OUT is work/out) on a model repository cloned into it. The
    # location climbs two folders from the model (to the repository's payload) and, written
    # as is beside the export in OUT's staging folder, two folders from there: the user's
    # own notes.
    work = tmp_path / "work"
    notes = work / "notes.txt"
    notes.parent.mkdir()
    notes.write_bytes(b"the user's notes")
    (work / "repo").mkdir()
    (work / "repo" / "notes.txt").write_bytes(b"attacker payload")
    model = hostile_model(work / "repo" / "a" / "b", "../../notes.txt", two_files=True)
    before = files_under(tmp_path)
    out = work / "out"

    result = cli("convert", str(model), "-t", "onnx", out=out, cwd=work, timeout_s=TIMEOUT_S)

    assert notes.read_bytes() == b"the user's notes"
    assert files_under(tmp_path) == before  # nothing written, nothing changed
    assert_nothing_left(tmp_path, out)
    assert_refused(result, "W", "../../notes.txt", code_words="outside the model's folder")


def test_an_absolute_location_is_not_copied_into_out(cli, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"  # stands in for /etc/passwd or ~/.ssh/id_rsa
    secret.write_bytes(b"TOP SECRET 16 by")
    model = hostile_model(tmp_path / "models", str(secret))
    out = tmp_path / "out"

    result = cli("convert", str(model), "-t", "onnx", out=out, timeout_s=TIMEOUT_S)

    copies = [name for name, data in files_under(tmp_path).items() if b"TOP SECRET" in data]
    assert copies == ["secret.txt"]
    assert_nothing_left(tmp_path, out)
    assert_refused(result, "W", str(secret))


def test_dev_zero_is_refused_not_read_without_end(cli, tmp_path: Path) -> None:
    model = hostile_model(tmp_path / "models", "/dev/zero", length="16")
    out = tmp_path / "out"

    result = cli("convert", str(model), out=out, timeout_s=TIMEOUT_S)

    assert_refused(result, "W", "/dev/zero")
    assert_nothing_left(tmp_path, out)


def test_a_fifo_is_refused_without_opening_it(cli, tmp_path: Path) -> None:
    # Opening a FIFO for reading blocks until a writer comes, and none ever does: a run
    # that opened it would hang until TIMEOUT_S and fail this test.
    folder = tmp_path / "models"
    model = hostile_model(folder, "pipe.bin")
    os.mkfifo(folder / "pipe.bin")
    out = tmp_path / "out"

    result = cli("convert", str(model), out=out, timeout_s=TIMEOUT_S)

    assert_refused(result, "W", "pipe.bin", code_words="not a regular file (a FIFO)")
    assert_nothing_left(tmp_path, out)


def test_a_symlink_inside_the_folder_that_leads_out_is_refused(cli, tmp_path: Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"TOP SECRET 16 by")
    folder = tmp_path / "models"
    model = hostile_model(folder, "w.bin")
    (folder / "w.bin").symlink_to(secret)
    out = tmp_path / "out"

    result = cli("convert", str(model), out=out, timeout_s=TIMEOUT_S)

    assert_refused(result, "W", "w.bin", code_words="through a symlink")
    assert_nothing_left(tmp_path, out)


def test_a_symlink_to_a_device_is_refused(cli, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    model = hostile_model(folder, "zero.bin", length="16")
    (folder / "zero.bin").symlink_to("/dev/zero")

    result = cli("inspect", str(model), timeout_s=TIMEOUT_S)

    assert_refused(result, "W", "zero.bin")


def test_a_symlink_that_stays_inside_the_folder_converts(cli, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    model = legit_model(folder, location="link.bin")
    (folder / "weights").mkdir()
    (folder / "link.bin").rename(folder / "weights" / "w.bin")
    (folder / "link.bin").symlink_to(Path("weights") / "w.bin")
    out = tmp_path / "out"

    result = cli("convert", str(model), "-t", "onnx", out=out, timeout_s=TIMEOUT_S)

    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.report["artifacts"][0]["status"] == "pass"


def test_a_model_with_its_data_in_a_subfolder_converts(cli, tmp_path: Path) -> None:
    model = legit_model(tmp_path / "models", location="weights/w.bin")
    out = tmp_path / "out"

    result = cli("convert", str(model), "-t", "onnx", out=out, timeout_s=TIMEOUT_S)

    assert result.exit_code == 0, result.stdout + result.stderr
    artifact = result.report["artifacts"][0]
    assert artifact["status"] == "pass"
    # the weights travelled with the model into OUT
    assert WEIGHTS.tobytes() in b"".join(files_under(out / "onnx").values())


def test_a_byte_range_beyond_the_file_is_refused(cli, tmp_path: Path) -> None:
    model = hostile_model(tmp_path / "models", "good.bin", offset="8", length="16")

    result = cli("convert", str(model), out=tmp_path / "out", timeout_s=TIMEOUT_S)

    assert_refused(result, "W", "good.bin", code_words="bytes 8..24 but the file holds 16")
    assert_nothing_left(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("offset", ["-4", "0x10", "1e3", "four", "1_0", ""])
def test_an_offset_that_is_not_a_byte_count_is_refused(cli, tmp_path: Path,
                                                       offset: str) -> None:
    model = hostile_model(tmp_path / "models", "good.bin", offset=offset)

    result = cli("inspect", str(model), timeout_s=TIMEOUT_S)

    assert_refused(result, "W", "good.bin", code_words=f"offset {offset!r}, not a byte count")


def test_a_location_with_a_newline_stays_on_one_line(cli, tmp_path: Path) -> None:
    location = "../x.bin\nerror: forged"
    model = hostile_model(tmp_path / "models", location)

    result = cli("inspect", str(model), timeout_s=TIMEOUT_S)

    assert_refused(result, "W", location)
    assert "forged" not in result.stderr.replace(repr(location), "")


# --- check, inspect ----------------------------------------------------------------------

def test_check_refuses_a_hostile_candidate_before_running_anything(cli, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOP SECRET 16 by")
    good = legit_model(tmp_path / "good")
    bad = hostile_model(tmp_path / "bad", str(secret))
    out = tmp_path / "out"

    result = cli("check", str(good), str(bad), out=out, timeout_s=TIMEOUT_S)

    assert_refused(result, "W", str(secret))
    assert_nothing_left(tmp_path, out)


def test_check_refuses_a_hostile_reference(cli, tmp_path: Path) -> None:
    good = legit_model(tmp_path / "good")
    bad = hostile_model(tmp_path / "bad", "../../outside.bin")

    result = cli("check", str(bad), str(good), timeout_s=TIMEOUT_S)

    assert_refused(result, "W", "../../outside.bin")


def test_inspect_refuses_an_absolute_location(cli, tmp_path: Path) -> None:
    model = hostile_model(tmp_path / "models", "/dev/zero")

    result = cli("inspect", str(model), "-t", "cpu", timeout_s=TIMEOUT_S)

    assert_refused(result, "W", "/dev/zero")


# --- batch ------------------------------------------------------------------------------

def test_a_hostile_batch_job_fails_alone_and_copies_nothing(cli, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOP SECRET 16 by")
    hostile_model(tmp_path / "ci" / "bad", str(secret))
    legit_model(tmp_path / "ci" / "good")
    manifest = tmp_path / "ci" / "manifest.yaml"
    manifest.write_text("defaults:\n  targets: [onnx]\n  timeout_s: 300\nmodels:\n"
                        "  - {name: bad, source: bad/model.onnx}\n"
                        "  - {name: good, source: good/model.onnx}\n")
    out = tmp_path / "out"

    result = cli("batch", str(manifest), out=out, timeout_s=600)

    assert result.exit_code == 3, result.stdout + result.stderr
    jobs = {job["name"]: job for job in json.loads((out / "summary.json").read_text())["jobs"]}
    assert (jobs["good"]["status"], jobs["bad"]["status"]) == ("pass", "error")
    assert jobs["bad"]["failure"] == "environment"
    assert jobs["bad"]["code"] == "unsafe-external-data"
    assert "tensor 'W'" in jobs["bad"]["message"] and repr(str(secret)) in jobs["bad"]["message"]
    copies = [name for name, data in files_under(tmp_path).items() if b"TOP SECRET" in data]
    assert copies == ["secret.txt"]
