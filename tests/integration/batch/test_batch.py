"""`convertkit batch` as a user and CI run it: bad models never stop the good ones, each
failure gets its class, the cache and --resume redo only what is missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.integration.batch.manifests import (
    EXPECTED,
    LIGHT_MODELS,
    ROOT,
    good_and_bad_manifest,
    statuses,
)
from tests.models.batch_models import gate, release, wait_until_started


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _processes_in(folder: Path) -> list[int]:
    """Processes whose working folder is ``folder`` (every job process and its export run
    in the manifest's folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == folder:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _no_process_left_in(folder: Path, limit_s: float = 60) -> bool:
    """Whether every process working in ``folder`` ends (a killed job's process group is
    gone once the kernel has delivered its signals), waiting at most ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while _processes_in(folder):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _assert_whole_job_folders(out: Path) -> None:
    jobs = out / "jobs"
    assert not [p.name for p in jobs.iterdir() if p.name.startswith(".")]
    for folder in jobs.iterdir():
        record = json.loads((folder / "job.json").read_text())
        if record["has_report"]:
            report = json.loads((folder / "report.json").read_text())
            assert report["artifacts"] or report["error"], folder


def test_bad_models_are_classified_and_the_good_ones_pass(cli, tmp_path: Path) -> None:
    manifest = good_and_bad_manifest(tmp_path)

    result = cli("batch", str(manifest), "-j", "2", out=tmp_path / "out")

    assert result.exit_code == 3, result.stdout + result.stderr
    summary = _summary(tmp_path / "out")
    assert statuses(summary) == EXPECTED, json.dumps(summary["jobs"], indent=1)
    jobs = {job["name"]: job for job in summary["jobs"]}
    assert "SIGSEGV" in jobs["segfault"]["message"]
    assert "sys.exit(3)" in jobs["exits"]["message"]
    assert "6 s limit" in jobs["hangs"]["message"]
    assert jobs["hangs"]["duration_s"] < 30
    assert "source not found" in jobs["bad-path"]["message"]
    assert all(job["hint"] and "\n" not in job["hint"] for job in jobs.values()
               if job["failure"])
    assert summary["counts"] == {"jobs": 8, "pass": 3, "fail": 0, "error": 5, "cached": 0}
    assert summary["classes"].keys() == {"crash", "timeout", "out-of-memory", "environment"}
    # the table, the class hints and the files CI publishes
    assert "segfault    error   crash" in result.stdout
    assert result.stdout.splitlines()[-1].endswith("exit 3")
    assert "[8/8]" in result.stderr  # plain progress lines when stderr is not a terminal
    junit = ET.parse(tmp_path / "out/junit.xml").getroot()
    assert len(junit.findall("testsuite")) == 8
    assert int(junit.get("errors")) == 5
    assert "squeezenet" in (tmp_path / "out/summary.html").read_text()
    for name in ("tiny_cnn", "small_cnn", "squeezenet"):
        assert (tmp_path / "out/jobs" / name / "report.json").is_file()
        assert (tmp_path / "out/jobs" / name / "report.html").is_file()
    _assert_whole_job_folders(tmp_path / "out")
    assert _processes_in(tmp_path) == []  # the hung export was stopped with its job


def test_numeric_failures_exit_1_and_unchanged_jobs_come_from_the_cache(
        cli, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    text = f"""\
models:
  - name: squeezenet
    source: {LIGHT_MODELS}/light_squeezenet.onnx
  - name: noisy
    source: {ROOT}/tests/models/torch_models.py:NoisyModel
    inputs: [x:2x3]
"""
    manifest.write_text(text)

    first = cli("batch", str(manifest), out=tmp_path / "out")
    second = cli("batch", str(manifest), out=tmp_path / "out")
    manifest.write_text(text.replace("[x:2x3]", "[x:2x5]"))
    third = cli("batch", str(manifest), out=tmp_path / "out")

    assert first.exit_code == 1, first.stdout + first.stderr
    assert statuses(_summary(tmp_path / "out")) == {"squeezenet": ("pass", None),
                                                     "noisy": ("fail", "numeric-mismatch")}
    assert second.exit_code == 1
    assert "2 from cache" in second.stdout
    assert third.exit_code == 1
    cached = {job["name"]: job["cached"] for job in _summary(tmp_path / "out")["jobs"]}
    assert cached == {"squeezenet": True, "noisy": False}  # only the changed job is redone


def test_kill_9_then_resume_finishes_only_what_is_missing(cli, tmp_path: Path) -> None:
    gated = gate(tmp_path)  # slow1 and slow2 wait until the test releases them
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(f"""\
defaults:
  inputs: [x:2x4]
models:
  - {{name: first, source: {LIGHT_MODELS}/light_squeezenet.onnx, inputs: []}}
  - {{name: second, source: {LIGHT_MODELS}/light_shufflenet.onnx, inputs: []}}
  - {{name: slow1, source: "{gated}"}}
  - {{name: slow2, source: "{gated}"}}
""")
    out = tmp_path / "out"
    batch = subprocess.Popen(
        [sys.executable, "-m", "convertkit", "batch", str(manifest), "-j", "1", "-o", str(out)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    wait_until_started(tmp_path, lambda: batch.poll() is None)  # slow1 is converting now
    batch.send_signal(signal.SIGKILL)
    batch.wait()
    complete = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("jobs/*/job.json")}

    assert _no_process_left_in(tmp_path)  # the running job died with the batch
    assert {"first", "second"} <= complete.keys() and "slow2" not in complete
    refused = cli("batch", str(manifest), "-j", "1", out=out)
    assert refused.exit_code == 2
    assert "interrupted" in refused.stderr and "--resume" in refused.stderr
    release(tmp_path)

    resumed = cli("batch", str(manifest), "-j", "1", "--resume", out=out)

    assert resumed.exit_code == 0, resumed.stdout + resumed.stderr
    summary = _summary(out)
    assert statuses(summary) == dict.fromkeys(["first", "second", "slow1", "slow2"],
                                              ("pass", None))
    cached = {job["name"] for job in summary["jobs"] if job["cached"]}
    assert cached == set(complete)  # nothing complete was redone, everything else was
    for name, mtime in complete.items():
        assert (out / "jobs" / name / "job.json").stat().st_mtime_ns == mtime
    _assert_whole_job_folders(out)
    assert json.loads((out / "batch.json").read_text())["state"] == "complete"


def test_a_bad_manifest_exits_2_naming_the_line(cli, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("models:\n  - source: a.onnx\n    inputs: [x:1x3:complex]\n")

    result = cli("batch", str(manifest), out=tmp_path / "out")

    assert result.exit_code == 2
    assert f"error: {manifest}:3: models[0].inputs: unknown dtype 'complex'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_output_folder_that_is_not_a_batchs_is_refused(cli, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(f"models: [{LIGHT_MODELS}/light_squeezenet.onnx]\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")

    result = cli("batch", str(manifest), out=tmp_path / "out")

    assert result.exit_code == 2
    assert "does not hold a batch's output" in result.stderr
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep me"


def test_ctrl_c_stops_the_running_job_without_recording_it(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(f"models:\n  - {{name: slow, source: '{gate(tmp_path)}', "
                        "inputs: [x:2x4]}\n")
    out = tmp_path / "out"
    batch = subprocess.Popen(
        [sys.executable, "-m", "convertkit", "batch", str(manifest), "-o", str(out)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    wait_until_started(tmp_path, lambda: batch.poll() is None)  # never released: it waits

    batch.send_signal(signal.SIGINT)
    _, stderr = batch.communicate(timeout=60)

    assert batch.returncode == 130, stderr
    assert not (out / "jobs/slow").exists()  # no outcome, no record: --resume redoes it
    assert json.loads((out / "batch.json").read_text())["state"] == "running"
    assert _no_process_left_in(tmp_path)


def test_a_manifest_takes_every_convert_option(cli, tmp_path: Path) -> None:
    """Options a manifest used to refuse (precision, report_formats, budget_file, ...)
    reach the job's conversion as they would from the command line."""
    (tmp_path / "budgets.toml").write_text("[fp32]\natol = 0.5\nrtol = 0.5\n")
    (tmp_path / "m.yaml").write_text(f"""\
models:
  - source: {LIGHT_MODELS}/light_squeezenet.onnx
    name: squeezenet
    targets: [cpu]
    precision: fp32
    budget_file: budgets.toml
    report_formats: json
    localize: false
""")

    result = cli("batch", str(tmp_path / "m.yaml"), out=tmp_path / "out")

    assert result.exit_code == 0, result.stdout + result.stderr
    job = tmp_path / "out/jobs/squeezenet"
    report = json.loads((job / "report.json").read_text())
    chosen = next(a for a in report["artifacts"] if a["target"] == "cpu")
    assert {c["precision"] for c in chosen["candidates"]} == {"fp32"}
    assert report["check"]["budgets"]["fp32"]["atol"] == 0.5
    assert not (job / "report.html").exists() and not (job / "junit.xml").exists()
    assert report["source"]["options"] == {
        "targets": ["cpu"], "precision": "fp32", "budget_file": "budgets.toml",
        "localize": False, "report_formats": ["json"]}
