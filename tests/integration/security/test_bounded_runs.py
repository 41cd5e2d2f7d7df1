"""Every run ends, and one artifact's crash is that artifact's failure: a source that never
returns meets --timeout, one that allocates without end meets --memory-mb, and a runtime
that aborts inside a build (ONNX Runtime's int8 quantiser on a Keras bidirectional LSTM)
costs that target only; the report is written and nothing is left beside OUT."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.security.fuzzing import build_seed
from tests.models.onnx_models import conv_relu_model
from tests.plugins import install_plugin

# Blocks on a FIFO nobody writes to: the run can only end by its time limit.
BLOCKING_SOURCE = """\
import os, torch


def build():
    with open({fifo!r}) as never_written:
        never_written.read()
    return torch.nn.Linear(4, 3)
"""

# Asks for 6 GB at once: more than the test's --memory-mb allows.
GREEDY_SOURCE = """\
import numpy, torch


def build():
    hoard = numpy.ones(6 << 30, dtype=numpy.uint8)
    return torch.nn.Linear(4, int(hoard[0]) + 2)
"""


def leftovers(folder: Path) -> list[str]:
    """Staging folders a run left beside OUT."""
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


def one_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if not line.startswith("... ")]
    assert lines and lines[0].startswith("error: "), stderr
    assert len(lines) <= 2 and all(line.startswith(("error: ", "hint: ")) for line in lines), \
        stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_a_source_that_never_returns_meets_the_timeout(cli, tmp_path: Path) -> None:
    fifo = tmp_path / "never.fifo"
    os.mkfifo(fifo)
    (tmp_path / "blocking.py").write_text(BLOCKING_SOURCE.format(fifo=str(fifo)))

    result = cli("convert", f"{tmp_path / 'blocking.py'}:build", "-i", "x:1x4",
                 "--timeout", "5", out=tmp_path / "out")

    assert result.exit_code == 3, result.stderr
    assert "--timeout 5 s" in one_error(result.stderr)
    assert result.report["error"]["code"] == "timeout"
    assert leftovers(tmp_path) == []


def test_inspect_meets_the_timeout_too(cli, tmp_path: Path) -> None:
    fifo = tmp_path / "never.fifo"
    os.mkfifo(fifo)
    (tmp_path / "blocking.py").write_text(BLOCKING_SOURCE.format(fifo=str(fifo)))

    result = cli("inspect", f"{tmp_path / 'blocking.py'}:build", "-i", "x:1x4",
                 "--timeout", "5")

    assert result.exit_code == 3, result.stderr
    assert "--timeout 5 s" in one_error(result.stderr)
    # Found by the fuzzer: the hint named a log in the scratch folder inspect had removed.
    assert not re.findall(r"/\S+\.log", result.stderr), result.stderr
    assert "rerun with --debug" in result.stderr


def test_a_source_that_allocates_without_end_meets_the_memory_limit(cli, tmp_path: Path) -> None:
    (tmp_path / "greedy.py").write_text(GREEDY_SOURCE)

    result = cli("convert", f"{tmp_path / 'greedy.py'}:build", "-i", "x:1x4",
                 "--memory-mb", "3072", out=tmp_path / "out")

    assert result.exit_code == 3, result.stderr
    assert "ran out of memory at the limit of 3072 MB (--memory-mb)" in one_error(
        result.stderr)
    assert result.report["error"]["code"] == "out-of-memory"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_a_limit_that_is_not_a_number_is_exit_2(cli, tmp_path: Path, value: str) -> None:
    result = cli("convert", "examples/tiny_cnn.py:build", "-i", "x:1x3x32x32",
                 "--timeout", value, out=tmp_path / "out")

    assert result.exit_code == 2, result.stderr
    assert "--timeout" in one_error(result.stderr)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def bidirectional_lstm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Keras text classifier whose int8 quantisation aborts ONNX Runtime (SIGABRT, an
    assertion in its graph code): the masked embedding feeding a bidirectional LSTM."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        # Named: Keras numbers unnamed inputs per process (input_layer, input_layer_1...),
        # so the name would depend on which tests ran before in this worker.
        keras.Input((20,), dtype="int32", name="tokens"),
        keras.layers.Embedding(5000, 32, mask_zero=True),
        keras.layers.Bidirectional(keras.layers.LSTM(32)),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    path = tmp_path_factory.mktemp("keras") / "classifier.keras"
    model.save(path)
    return path


def test_a_runtime_that_aborts_costs_its_candidate_only(cli, tmp_path: Path,
                                                       bidirectional_lstm: Path) -> None:
    """The issue's run: `-t cpu` on this model lost every candidate to one abort."""
    result = cli("convert", str(bidirectional_lstm), "-i", "tokens:1x20", "-t", "cpu",
                 out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    cpu = next(a for a in result.report["artifacts"] if a["target"] == "cpu")
    assert cpu["status"] == "pass"
    candidates = {(c["target"], c["precision"]): c for c in cpu["candidates"]}
    crashed = candidates["cpu:ort", "int8"]
    assert crashed["status"] == "error"
    assert crashed["reason"].startswith("cpu:ort int8 crashed (SIGABRT)")
    assert "Assertion" in crashed["reason"]  # the log's last line says why
    # Built before the abort, timed after it (in a new worker), and chosen.
    chosen = candidates["cpu:ort", "fp32"]
    assert chosen["chosen"] and chosen["latency_ms"] is not None
    assert not (tmp_path / "out" / "cpu" / "ort-int8").exists()  # its half-built folder
    assert (tmp_path / "out" / "logs" / "build.log").is_file()
    assert leftovers(tmp_path) == []


# A vendor runtime that aborts the process running the model, in `check` only (the
# variable is the test's switch): convert builds and checks it normally.
ABORTING_RUNTIME = """
import os
from convertkit.platforms.cpu import OrtCpuPlatform


class AbortingOrt(OrtCpuPlatform):
    is_family_default = False

    def open(self, artifact):
        runner = super().open(artifact)
        if os.environ.get("ABORT_IN_CHECK"):
            runner.run_samples = lambda samples: os.abort()
        return runner
"""


def test_a_runtime_that_aborts_in_check_costs_its_candidate_only(tmp_path: Path) -> None:
    plugin = install_plugin(tmp_path / "plugin", "aborting_ort", ABORTING_RUNTIME,
                            {"convertkit.platforms": "aborting = aborting_ort:AbortingOrt"})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin), str(ROOT)]))
    model = conv_relu_model(tmp_path / "model.onnx")

    def convertkit(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "convertkit", *args], cwd=tmp_path,
                              env={**env, **extra}, capture_output=True, text=True,
                              timeout=600)

    built = convertkit("convert", str(model), "-t", "cpu:aborting", "-t", "cpu:ort",
                       "-o", "built")
    checked = convertkit("check", "built", "built", "-o", "checked", ABORT_IN_CHECK="1")

    assert built.returncode == 0, built.stderr
    assert checked.returncode == 3, checked.stderr
    report = json.loads((tmp_path / "checked/report.json").read_text())
    statuses = {a["target"]: a["status"] for a in report["artifacts"]}
    assert statuses == {"onnx": "pass", "cpu:aborting": "error", "cpu:ort": "pass"}
    aborted = next(a for a in report["artifacts"] if a["target"] == "cpu:aborting")
    assert "crashed (SIGABRT)" in aborted["error"]["message"]
    assert (tmp_path / "checked/logs/build.log").is_file()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(("kind", "member"), [("savedmodel", "fingerprint.pb"),
                                              ("paddle", "inference.pdiparams")])
def test_a_fifo_inside_a_model_is_refused_before_anything_reads_it(
        cli, tmp_path: Path, kind: str, member: str) -> None:
    """Found by the fuzzer: a framework blocked on the FIFO until --timeout."""
    seed = build_seed(kind, tmp_path / kind)
    folder = seed.path if seed.path.is_dir() else seed.path.parent
    (folder / member).unlink()
    os.mkfifo(folder / member)

    result = cli("convert", str(seed.path), *seed.args, "-t", "onnx", "--timeout", "600",
                 out=tmp_path / "out")

    assert result.exit_code == 2, result.stderr
    assert f"{member} is a FIFO, not a regular file" in one_error(result.stderr)
    assert not (tmp_path / "out").exists()
