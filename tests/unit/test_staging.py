"""convertkit/staging.py: an output folder is written whole or not at all."""

from __future__ import annotations

import pytest

from convertkit.errors import UsageError
from convertkit.staging import check_output_folder, staged_folder


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_staged_folder_renames_into_place_on_success(tmp_path):
    out = tmp_path / "out"

    with staged_folder(out) as staging:
        (staging / "report.json").write_text("{}")
        (staging / "cpu").mkdir()
        (staging / "cpu" / "model.onnx").write_bytes(b"onnx")
        assert not out.exists()  # nothing appears at OUT before the end

    assert _tree(out) == ["cpu", "cpu/model.onnx", "report.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left behind


def test_staged_folder_replaces_an_existing_out_on_success(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")

    with staged_folder(out) as staging:
        (staging / "new.txt").write_text("new")

    assert _tree(out) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staged_folder_leaves_no_partial_folder_on_exception(tmp_path):
    out = tmp_path / "out"

    with pytest.raises(RuntimeError, match="boom"), staged_folder(out) as staging:
        (staging / "half.onnx").write_bytes(b"half")
        raise RuntimeError("boom")

    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_staged_folder_keeps_an_existing_out_untouched_on_exception(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text('{"old": true}')

    with pytest.raises(KeyboardInterrupt), staged_folder(out) as staging:
        (staging / "report.json").write_text('{"new": true}')
        raise KeyboardInterrupt

    assert _tree(out) == ["report.json"]
    assert (out / "report.json").read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_check_output_folder_accepts_a_new_out(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"x")

    check_output_folder(tmp_path / "out", force=False, inputs=[model, None])


def test_check_output_folder_refuses_an_existing_out_without_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(UsageError) as caught:
        check_output_folder(out, force=False, inputs=[])

    assert caught.value.exit_code == 2
    assert caught.value.code == "output-exists"
    assert "--force" in caught.value.hint


def test_check_output_folder_accepts_an_existing_out_with_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    model = tmp_path / "model.onnx"
    model.write_bytes(b"x")

    check_output_folder(out, force=True, inputs=[model])


def test_check_output_folder_refuses_a_file_as_out_even_with_force(tmp_path):
    out = tmp_path / "out"
    out.write_text("a file")

    with pytest.raises(UsageError) as caught:
        check_output_folder(out, force=True, inputs=[])

    assert caught.value.code == "output-exists"


@pytest.mark.parametrize("relative", ["model.onnx", "weights/deep/w.bin", "."])
def test_check_output_folder_refuses_an_out_holding_an_input_even_with_force(tmp_path,
                                                                             relative):
    out = tmp_path / "models"
    out.mkdir()
    held = out / relative  # "." : the input is OUT itself (a model folder)
    if relative != ".":
        held.parent.mkdir(parents=True, exist_ok=True)
        held.write_bytes(b"x")

    with pytest.raises(UsageError) as caught:
        check_output_folder(out, force=True, inputs=[None, held])

    assert caught.value.code == "output-holds-input"
    assert held.exists()


def test_check_output_folder_sees_through_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.onnx").write_bytes(b"x")

    with pytest.raises(UsageError) as caught:
        check_output_folder(tmp_path / "models", force=True, inputs=[
            (tmp_path / "models" / ".." / "models" / "m.onnx").relative_to(tmp_path)])

    assert caught.value.code == "output-holds-input"


def test_relocate_names_files_where_they_land(tmp_path):
    from dataclasses import dataclass

    from convertkit.staging import relocate

    @dataclass(frozen=True)
    class Record:
        path: str
        notes: tuple[str, ...]
        extra: dict

    staging, out = tmp_path / ".out.partial-7", tmp_path / "out"
    record = Record(str(staging / "cpu-ort/model.onnx"),
                    (f"the full output is in {staging}/logs/export.log", "untouched"),
                    {"files": [str(staging / "onnx/model.onnx"), str(tmp_path / "model.onnx")]})

    moved = relocate(record, staging, out)

    assert moved.path == "cpu-ort/model.onnx"  # a path inside OUT: relative to it
    assert moved.notes == (f"the full output is in {out}/logs/export.log", "untouched")
    assert moved.extra["files"] == ["onnx/model.onnx", str(tmp_path / "model.onnx")]
