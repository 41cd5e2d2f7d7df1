"""convertkit/staging.py: an output folder is written whole or not at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from convertkit.errors import UsageError
from convertkit.options import ConvertOptions
from convertkit.spec import SourceRef
from convertkit.staging import (
    STAGING_MARKER,
    check_output_folder,
    process_start,
    protected_inputs,
    remove_stale_staging,
    rename_no_replace,
    staged_folder,
)


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_staged_folder_renames_into_place_on_success(tmp_path):
    out = tmp_path / "out"

    with staged_folder(out, replace=False) as staging:
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

    with staged_folder(out, replace=True) as staging:
        (staging / "new.txt").write_text("new")

    assert _tree(out) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staged_folder_leaves_no_partial_folder_on_exception(tmp_path):
    out = tmp_path / "out"

    with pytest.raises(RuntimeError, match="boom"), staged_folder(out, replace=False) as staging:
        (staging / "half.onnx").write_bytes(b"half")
        raise RuntimeError("boom")

    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_staged_folder_keeps_an_existing_out_untouched_on_exception(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text('{"old": true}')

    with pytest.raises(KeyboardInterrupt), staged_folder(out, replace=True) as staging:
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


# -- a folder that appears at OUT while the run works is never replaced ---------------------


@pytest.mark.parametrize("replace", [False, True])
def test_a_folder_that_appears_at_out_during_the_run_is_left_untouched(tmp_path, replace):
    out = tmp_path / "out"

    with pytest.raises(UsageError) as caught, staged_folder(out, replace=replace) as staging:
        (staging / "report.json").write_text("{}")
        out.mkdir()  # another program (or a second run) creates OUT meanwhile
        (out / "mine.txt").write_text("the user's")

    assert caught.value.code == "output-appeared" and caught.value.exit_code == 2
    assert _tree(out) == ["mine.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # staging removed


def test_force_replaces_only_the_folder_that_was_there_when_the_run_started(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")

    with pytest.raises(UsageError) as caught, staged_folder(out, replace=True) as staging:
        (staging / "report.json").write_text("{}")
        out.rename(tmp_path / "moved")  # the user moves the old OUT away ...
        out.mkdir()  # ... and something else takes its place
        (out / "newcomer.txt").write_text("keep")

    assert caught.value.code == "output-appeared"
    assert _tree(out) == ["newcomer.txt"]
    assert _tree(tmp_path / "moved") == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moved", "out"]


def test_the_marker_stays_out_of_the_landed_folder(tmp_path):
    out = tmp_path / "out"

    with staged_folder(out, replace=False) as staging:
        marker = json.loads((staging / STAGING_MARKER).read_text())

    assert marker == {"pid": os.getpid(), "start": process_start(os.getpid())}
    assert not (out / STAGING_MARKER).exists()


def test_rename_no_replace_refuses_even_an_empty_folder(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()  # os.rename would replace an empty folder silently

    with pytest.raises(FileExistsError):
        rename_no_replace(tmp_path / "a", tmp_path / "b")

    rename_no_replace(tmp_path / "a", tmp_path / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c"]


# -- staging folders of killed runs -----------------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _staging(parent: Path, name: str, marker: dict | None = None) -> Path:
    folder = parent / name
    folder.mkdir()
    (folder / "half.onnx").write_bytes(b"half")
    if marker is not None:
        (folder / STAGING_MARKER).write_text(json.dumps(marker))
    return folder


def test_stale_staging_of_dead_processes_is_removed_and_live_ones_kept(tmp_path):
    dead, me = _dead_pid(), os.getpid()
    started = process_start(me)
    dead_partial = _staging(tmp_path, f".out.partial-{dead}", {"pid": dead, "start": "1"})
    dead_old = _staging(tmp_path, f".out.old-{dead}")  # killed before writing a marker
    live = _staging(tmp_path, f".out.partial-{me}", {"pid": me, "start": started})
    live_unmarked = _staging(tmp_path, f".out.old-{me}")
    reused = _staging(tmp_path, f".out.partial-{os.getppid()}",  # alive, but not its owner
                      {"pid": os.getppid(), "start": "0"})
    other_out = _staging(tmp_path, f".other.partial-{dead}")
    not_the_pattern = _staging(tmp_path, f".out.partial-{dead}x")

    removed = remove_stale_staging(tmp_path / "out")

    assert sorted(removed) == sorted([dead_partial, dead_old, reused])
    for kept in (live, live_unmarked, other_out, not_the_pattern):
        assert (kept / "half.onnx").exists()


def test_stale_staging_removal_never_follows_a_link(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")
    (tmp_path / f".out.partial-{_dead_pid()}").symlink_to(precious)

    remove_stale_staging(tmp_path / "out")

    assert (precious / "notes.txt").read_text() == "keep"


def test_the_next_run_into_the_same_out_removes_a_dead_runs_staging(tmp_path):
    leftover = _staging(tmp_path, f".out.partial-{_dead_pid()}")

    with staged_folder(tmp_path / "out", replace=False) as staging:
        (staging / "report.json").write_text("{}")

    assert not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# -- what OUT may never be ------------------------------------------------------------------


@pytest.mark.parametrize("which", ["cwd", "home", "root", "parent of cwd"])
def test_out_is_never_the_working_folder_home_or_root(tmp_path, monkeypatch, which):
    work = tmp_path / "home" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = {"cwd": work, "home": tmp_path / "home", "root": Path("/"),
           "parent of cwd": tmp_path}[which]

    with pytest.raises(UsageError) as caught:
        check_output_folder(out, force=True, inputs=[])

    assert caught.value.code == "output-protected"


def _options(**values) -> ConvertOptions:
    return ConvertOptions.parse({"inputs": ["x:1x4:float32"], **values})


def test_every_option_file_and_folder_is_protected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder in ("data", "calib", "notes", "labels", "weights"):
        (tmp_path / folder).mkdir()
    (tmp_path / "data" / "a.npz").write_bytes(b"x")
    (tmp_path / "calib" / "b.npz").write_bytes(b"x")
    (tmp_path / "notes" / "budgets.yaml").write_text("x")
    (tmp_path / "labels" / "l.npy").write_bytes(b"x")
    (tmp_path / "weights" / "w.ckpt").write_bytes(b"x")
    (tmp_path / "model.py").write_text("")
    inputs = protected_inputs(SourceRef.parse("model.py:build"), _options(
        data="data", calib_data="calib", budget_file="notes/budgets.yaml",
        labels="labels/l.npy", weights="weights/w.ckpt"))

    for held in ("data", "calib", "notes", "labels", "weights"):
        with pytest.raises(UsageError) as caught:
            check_output_folder(tmp_path / held, force=True, inputs=inputs)
        assert caught.value.code == "output-holds-input", held


def test_the_package_a_module_source_imports_is_protected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mypkg" / "nets").mkdir(parents=True)
    (tmp_path / "mypkg" / "__init__.py").write_text("raise SystemExit('never imported')\n")
    (tmp_path / "mypkg" / "nets" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "nets" / "cnn.py").write_text("")
    inputs = protected_inputs(SourceRef.parse("mypkg.nets.cnn:build"), _options())

    for held in ("mypkg", "mypkg/nets"):  # the package, and a subpackage of it
        with pytest.raises(UsageError) as caught:
            check_output_folder(tmp_path / held, force=True, inputs=inputs)
        assert caught.value.code == "output-holds-input"
    check_output_folder(tmp_path / "out", force=True, inputs=inputs)


def test_a_python_file_sources_code_beside_it_is_protected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.py").write_text("from utils.blocks import Block\n")
    (tmp_path / "utils").mkdir()
    (tmp_path / "utils" / "__init__.py").write_text("")
    (tmp_path / "utils" / "blocks.py").write_text("")
    (tmp_path / "out").mkdir()  # a previous run's output beside the model: replaceable
    inputs = protected_inputs(SourceRef.parse("model.py:build"), _options())

    with pytest.raises(UsageError):
        check_output_folder(tmp_path / "utils", force=True, inputs=inputs)
    check_output_folder(tmp_path / "out", force=True, inputs=inputs)


def test_the_parameters_beside_a_paddle_program_are_protected(tmp_path):
    (tmp_path / "program").mkdir()
    (tmp_path / "program" / "model.pdmodel").write_bytes(b"program")
    (tmp_path / "program" / "model.pdiparams").write_bytes(b"weights")
    inputs = protected_inputs(SourceRef.parse(str(tmp_path / "program" / "model.pdmodel")),
                              _options())

    assert [item.role for item in inputs] == ["source", "parameters"]
