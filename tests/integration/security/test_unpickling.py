"""Model files that would run code when loaded: a ``.pt2`` whose weights are pickled, a
``.pdparams`` (a pickle) passed as ``--weights``, and a ``.pdiparams`` whose headers lie.
Each hostile file is built here the way an attacker would, its payload a harmless marker
file in tmp_path, and run through the real CLI with the real frameworks. Without
``--trust-code`` the payload never runs (exit 2, one line, no OUT); with it, the file is
trusted and does run; ordinary files convert either way.

Paddle is never imported in this process (paddle and mindspore cannot share one): paddle
files are written by tests/models/paddle_models.py in a subprocess."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

# A refusal takes a few seconds; a loader that loops or unpickles without end runs into it.
TIMEOUT_S = 180
TORCH_MODELS = "tests/models/torch_models.py"
PADDLE_MODELS = "tests/models/paddle_models.py"


class _CreatesMarker:
    """Unpickled, creates the file at ``marker``: proof that loading ran the file's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def assert_refused(result, out: Path, *words: str) -> None:
    """Exit 2, one error line holding ``words``, a hint, no traceback, no OUT."""
    assert result.exit_code == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    assert any(line.startswith("hint:") for line in result.stderr.splitlines())
    assert not out.exists()


# --- PyTorch .pt2 ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ordinary torch.export.save archive of a small CNN with a dynamic batch axis."""
    import torch

    from tests.models.torch_models import small_cnn

    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(small_cnn().eval(), (torch.randn(2, 3, 16, 16),),
                                  dynamic_shapes={"x": {0: batch}})
    path = tmp_path_factory.mktemp("pt2") / "model.pt2"
    torch.export.save(program, str(path))
    return path


def _rewrite(source: Path, target: Path, change) -> None:
    """Copy the zip archive ``source`` to ``target``, each member's bytes through
    ``change(name, data)``, as an attacker edits an archive torch wrote."""
    with zipfile.ZipFile(source) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(target, "w") as archive:
        for info, data in members:
            archive.writestr(info, change(info.filename, data))


def pickled_weight_archive(source: Path, target: Path, marker: Path) -> Path:
    """``source`` with its first weight marked use_pickle, its record a pickle that
    creates ``marker``: torch.export.load would unpickle it with weights_only=False."""
    with zipfile.ZipFile(source) as archive:
        config_name = next(n for n in archive.namelist()
                           if n.endswith("model_weights_config.json"))
        config = json.loads(archive.read(config_name))
    entry = next(iter(config["config"].values()))
    entry["use_pickle"] = True
    record = config_name.rsplit("/", 1)[0] + "/" + entry["path_name"]
    payload = pickle.dumps(_CreatesMarker(marker))

    def change(name: str, data: bytes) -> bytes:
        if name == config_name:
            return json.dumps(config).encode()
        return payload if name == record else data

    _rewrite(source, target, change)
    return target


def test_a_pt2_with_pickled_weights_is_refused_and_its_code_never_runs(
        cli, tmp_path: Path, exported_program: Path) -> None:
    marker = tmp_path / "ran"
    model = pickled_weight_archive(exported_program, tmp_path / "crafted.pt2", marker)
    out = tmp_path / "out"

    result = cli("convert", str(model), out=out, timeout_s=TIMEOUT_S)

    assert not marker.exists()
    assert_refused(result, out, "crafted.pt2", "pickled object", "weight")
    assert "--trust-code" in result.stderr


def test_a_pt2_shape_expression_that_calls_python_is_refused(
        cli, tmp_path: Path, exported_program: Path) -> None:
    # sympy.sympify (which calls eval) reads each shape expression of the program.
    marker = tmp_path / "ran"
    injected = f"Symbol('s77') + Integer(len(open({str(marker)!r}, 'w').name))"

    def change(name: str, data: bytes) -> bytes:
        if not name.endswith("models/model.json"):
            return data
        text = data.decode()
        start = text.index('"expr_str": "') + len('"expr_str": "')
        end = text.index('"', start)
        return (text[:start] + json.dumps(injected)[1:-1] + text[end:]).encode()

    model = tmp_path / "crafted.pt2"
    _rewrite(exported_program, model, change)
    out = tmp_path / "out"

    result = cli("convert", str(model), out=out, timeout_s=TIMEOUT_S)

    assert not marker.exists()
    assert_refused(result, out, "crafted.pt2", "shape expression")


def test_an_ordinary_pt2_converts_with_and_without_trust_code(
        cli, tmp_path: Path, exported_program: Path) -> None:
    for args, out in (((), tmp_path / "out"), (("--trust-code",), tmp_path / "trusted")):
        result = cli("convert", str(exported_program), *args, out=out, timeout_s=TIMEOUT_S)

        assert result.exit_code == 0, result.stderr
        assert not isinstance(result.report["source"]["inputs"][0]["dims"][0], int)


def test_trust_code_means_the_pt2_is_trusted(cli, tmp_path: Path,
                                             exported_program: Path) -> None:
    marker = tmp_path / "ran"
    model = pickled_weight_archive(exported_program, tmp_path / "crafted.pt2", marker)

    cli("convert", str(model), "--trust-code", out=tmp_path / "out", timeout_s=TIMEOUT_S)

    assert marker.exists()  # the payload ran: --trust-code hands the file to torch as is


def test_pytorch_weights_holding_objects_are_refused(cli, tmp_path: Path) -> None:
    import torch

    marker = tmp_path / "ran"
    weights = tmp_path / "weights.pth"
    torch.save({"conv.weight": _CreatesMarker(marker)}, weights)
    out = tmp_path / "out"

    result = cli("convert", f"{TORCH_MODELS}:small_cnn", "-i", "x:1x3x16x16",
                 "--weights", str(weights), out=out, timeout_s=TIMEOUT_S)

    assert not marker.exists()
    assert_refused(result, out, "weights.pth")


# --- Paddle --weights .pdparams ----------------------------------------------------------

def _paddle_script(*args: str) -> None:
    done = subprocess.run([sys.executable, str(ROOT / PADDLE_MODELS), *args],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def paddle_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``mlp.pdparams`` (paddle.save of a state_dict) and ``inference.json``
    with ``inference.pdiparams`` (paddle.jit.save of the same Layer)."""
    folder = tmp_path_factory.mktemp("paddle")
    _paddle_script("weights", "mlp", "7", str(folder / "mlp.pdparams"))
    _paddle_script("save", "mlp", str(folder / "inference"), "x:batchx8")
    return folder


def test_a_pdparams_that_runs_code_is_refused(cli, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    weights = tmp_path / "crafted.pdparams"
    weights.write_bytes(pickle.dumps({"body.0.weight": _CreatesMarker(marker)}, protocol=4))
    out = tmp_path / "out"

    result = cli("convert", f"{PADDLE_MODELS}:mlp", "-i", "x:batchx8", "--weights",
                 str(weights), out=out, timeout_s=TIMEOUT_S)

    assert not marker.exists()
    assert_refused(result, out, "crafted.pdparams", "a pickle that calls")
    assert "--trust-code" in result.stderr


def test_a_saved_pdparams_converts_with_and_without_trust_code(
        cli, tmp_path: Path, paddle_files: Path) -> None:
    for args, out in (((), tmp_path / "out"), (("--trust-code",), tmp_path / "trusted")):
        result = cli("convert", f"{PADDLE_MODELS}:mlp", "-i", "x:batchx8", "--weights",
                     str(paddle_files / "mlp.pdparams"), *args, out=out, timeout_s=TIMEOUT_S)

        assert result.exit_code == 0, result.stderr


def test_trust_code_means_the_pdparams_is_trusted(cli, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    weights = tmp_path / "crafted.pdparams"
    weights.write_bytes(pickle.dumps({"body.0.weight": _CreatesMarker(marker)}, protocol=4))

    cli("convert", f"{PADDLE_MODELS}:mlp", "-i", "x:batchx8", "--weights", str(weights),
        "--trust-code", out=tmp_path / "out", timeout_s=TIMEOUT_S)

    assert marker.exists()  # paddle.load unpickled it: --trust-code means trust


# --- Paddle .pdiparams headers -----------------------------------------------------------

def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _tensor(dims: list[int], *, levels: int = 0, data: bytes = bytes(8)) -> bytes:
    """One tensor as save_combine writes it: version, LoD levels, tensor version, the
    TensorDesc (float32, ``dims``) and its data."""
    desc = b"\x08\x05" + b"".join(b"\x10" + _varint(d) for d in dims)
    return struct.pack("<IQIi", 0, levels, 0, len(desc)) + desc + data


HOSTILE_PARAMS = {
    # 41 bytes: a dim of -1 once sent the reader back to the header, for ever.
    "a negative dim": (lambda good: _tensor([-1]), "dims [-1]"),
    "a truncated file": (lambda good: good[:-5], "needs more bytes than the file"),
    "a huge LoD level count": (lambda good: _tensor([2], levels=1 << 62),
                               "LoD levels, more than the file holds"),
    "dims whose product overflows int64": (lambda good: _tensor([1 << 40, 1 << 40]),
                                           "needs more bytes than the file"),
    "a negative header length": (lambda good: struct.pack("<IQIi", 0, 0, 0, -7) + bytes(32),
                                 "description of -7 bytes"),
}


@pytest.mark.parametrize("case", HOSTILE_PARAMS)
def test_a_pdiparams_whose_headers_lie_is_refused_quickly(
        cli, tmp_path: Path, paddle_files: Path, case: str) -> None:
    build, words = HOSTILE_PARAMS[case]
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(paddle_files / "inference.json", folder / "inference.json")
    data = build((paddle_files / "inference.pdiparams").read_bytes())
    (folder / "inference.pdiparams").write_bytes(data)
    if case == "a negative dim":
        assert len(data) == 41
    out = tmp_path / "out"

    started = time.monotonic()
    result = cli("convert", str(folder / "inference.json"), out=out, timeout_s=TIMEOUT_S)

    assert time.monotonic() - started < 60
    assert_refused(result, out, "inference.pdiparams", words)
