"""`convertkit batch --executor ray` on a local Ray instance: the same jobs, the same
summary, and per-target resources that Ray schedules by; and on a two-node cluster
started as the README says, with Ray's token authentication."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from convertkit.batch import run_batch
from tests.integration.batch.manifests import (
    EXPECTED,
    LIGHT_MODELS,
    ROOT,
    good_and_bad_manifest,
    statuses,
)

pytestmark = pytest.mark.slow  # starting Ray and running the jobs takes over 30 s


def test_the_same_manifest_on_a_local_ray_instance_gives_the_same_summary(
        cli, tmp_path: Path) -> None:
    manifest = good_and_bad_manifest(tmp_path)

    result = cli("batch", str(manifest), "--executor", "ray", "-j", "2", out=tmp_path / "out")

    assert result.exit_code == 3, result.stdout + result.stderr
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert statuses(summary) == EXPECTED, json.dumps(summary["jobs"], indent=1)
    assert summary["executor"] == "ray"
    assert summary["counts"] == {"jobs": 8, "pass": 3, "fail": 0, "error": 5, "cached": 0}


def test_jobs_ask_ray_for_the_resources_of_their_targets(tmp_path: Path) -> None:
    import ray

    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(f"""\
resources:
  cpu:ort: {{fake_npu: 1}}
  onnx: {{absent_accelerator: 1}}
models:
  - name: on-the-npu-node
    source: {LIGHT_MODELS}/light_squeezenet.onnx
    targets: [cpu:ort]
  - name: nowhere-to-run
    source: {LIGHT_MODELS}/light_squeezenet.onnx
    targets: [onnx]
""")
    ray.init(num_cpus=2, resources={"fake_npu": 1}, include_dashboard=False,
             log_to_driver=False)
    try:
        summary = run_batch(manifest, tmp_path / "out", executor="ray")
    finally:
        ray.shutdown()

    assert statuses(summary.to_dict()) == {"on-the-npu-node": ("pass", None),
                                           "nowhere-to-run": ("error", "toolchain-missing")}
    assert "absent_accelerator=1" in summary.outcomes[1].message
    assert summary.exit_code == 4


# The README's cluster recipe (### Ray), which the test below runs as written, with HEAD,
# the port, the manifest and OUT filled in.
README_RECIPE = (
    "ray get-auth-token --generate",
    "ray start --head --port 6379",
    "RAY_AUTH_MODE=token ray start --address HEAD:6379 --resources '{\"rknn\": 1}'",
    "convertkit batch models.yaml --executor ray --address HEAD:6379 -o /shared/convert-out",
)
RAY = Path(sys.executable).parent / "ray"
READY_S = 180  # generous: a node starts in about 5 s when the machine is idle


@pytest.fixture
def ray_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A home folder of the test's own (Ray keeps its token in ~/.ray/auth_token), and
    none of the caller's Ray variables (a local ray.init() in this process sets
    RAY_AUTH_MODE)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """Ray's session folders hold unix sockets, whose paths must stay under 108 bytes:
    too long under pytest's tmp_path."""
    folder = Path(tempfile.mkdtemp(prefix="ck-ray-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class RayNode:
    process: subprocess.Popen
    log: Path


@contextmanager
def ray_node(command: str, temp_dir: Path, env: Mapping[str, str],
             *isolation: str) -> Iterator[RayNode]:
    """Run a `ray start` line of the recipe (its variables over ``env``) with its own
    --temp-dir, ``isolation``'s options, and --block so that the node lives as long as that
    process: SIGTERM stops the node with everything it started (`ray stop` would stop
    every Ray node on this machine, other tests' too)."""
    args = shlex.split(command)
    env = dict(env)
    while "=" in args[0]:  # the line's own variables, as a shell reads them
        name, value = args.pop(0).split("=", 1)
        env[name] = value
    assert args[:2] == ["ray", "start"], command
    log = temp_dir.with_suffix(".log")
    with log.open("w") as sink:
        process = subprocess.Popen(
            [str(RAY), *args[1:], "--temp-dir", str(temp_dir), *isolation, "--block"],
            stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield RayNode(process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:  # the node's processes share its process group
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for_cluster(address: str, env: dict[str, str], has: str, nodes: list[RayNode]) -> None:
    """Poll `ray status` until it names ``has``, while every node runs."""
    deadline = time.monotonic() + READY_S
    while True:
        for node in nodes:
            assert node.process.poll() is None, node.log.read_text()[-5000:]
        done = subprocess.run([str(RAY), "status", "--address", address], capture_output=True,
                              text=True, env=env, timeout=READY_S)
        if done.returncode == 0 and has in done.stdout:
            return
        assert time.monotonic() < deadline, (
            f"the cluster had no {has} after {READY_S} s:\n{done.stdout}{done.stderr}")
        time.sleep(1)


def worker_logs(temp_dir: Path) -> str:
    """What the Ray workers of the node with ``temp_dir`` printed (each task's name)."""
    return "".join(log.read_text(errors="replace")
                   for log in temp_dir.glob("session_*/logs/worker-*.out"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.usefixtures("ray_home")
def test_the_readme_cluster_recipe_places_jobs_by_resource_and_names_a_wrong_token(
        cli, short_tmp: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    section = (ROOT / "README.md").read_text().split("\n### Ray\n")[1].split("\n### ")[0]
    for line in README_RECIPE:
        assert line in section, line
    port = free_port()
    head = f"127.0.0.1:{port}"
    manifest = tmp_path / "models.yaml"
    manifest.write_text(f"""\
resources:
  cpu:ort: {{rknn: 1}}
  onnx: {{qnn: 1}}
models:
  - name: on-the-rknn-node
    source: {LIGHT_MODELS}/light_squeezenet.onnx
    targets: [cpu:ort]
  - name: no-qnn-node
    source: {LIGHT_MODELS}/light_squeezenet.onnx
    targets: [onnx]
""")
    subprocess.run([str(RAY), "get-auth-token", "--generate"], check=True,
                   capture_output=True)
    head_line = README_RECIPE[1].replace("6379", str(port))
    worker_line = README_RECIPE[2].replace("HEAD:6379", head)
    convert = shlex.split(README_RECIPE[3].replace("HEAD:6379", head)
                          .replace("models.yaml", str(manifest)))
    status_env = dict(os.environ, RAY_AUTH_MODE="token")  # for `ray status` only
    # The head's own servers take fixed ports by default: free ones, beside another cluster.
    head_ports = ("--ray-client-server-port", str(free_port()), "--dashboard-port",
                  str(free_port()))

    with ExitStack() as cluster:
        nodes = [cluster.enter_context(
            ray_node(head_line, short_tmp / "head", os.environ, *head_ports))]
        wait_for_cluster(head, status_env, "CPU", nodes)
        nodes.append(cluster.enter_context(ray_node(worker_line, short_tmp / "rknn", os.environ)))
        wait_for_cluster(head, status_env, "rknn", nodes)

        result = cli(*convert[1:-1], str(tmp_path / "out"))
        monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-cluster-token")
        # Two tries to connect, not Ray's twenty, a second apart.
        monkeypatch.setenv("RAY_gcs_server_port_wait_time_s", "2")
        refused = cli(*convert[1:-1], str(tmp_path / "refused"))

    assert result.exit_code == 4, result.stdout + result.stderr
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert statuses(summary) == {"on-the-rknn-node": ("pass", None),
                                 "no-qnn-node": ("error", "toolchain-missing")}
    assert "no node of the Ray cluster offers qnn=1" in summary["jobs"][1]["message"]
    assert ":task_name:_run_job_task" in worker_logs(short_tmp / "rknn")
    assert ":task_name:_run_job_task" not in worker_logs(short_tmp / "head")
    assert refused.exit_code == 2, refused.stdout + refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: the Ray cluster at {head} refused the authentication token "
                      "from $RAY_AUTH_TOKEN"], refused.stderr
    assert "hint: put the cluster's token" in refused.stderr
    assert not (tmp_path / "refused/summary.json").exists()


def test_an_auth_refusal_names_the_cluster_or_the_local_instance(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The text of Ray's refusal (a ConnectionError whose cause carries the gRPC status)
    becomes the `ray-auth` error, naming the address, or the local instance without one."""
    import ray

    from convertkit.batch.executors import _auth_error, _is_auth_refusal

    monkeypatch.setenv("RAY_AUTH_TOKEN", "some-token")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    try:
        try:
            raise RuntimeError("status = StatusCode.UNAUTHENTICATED, InvalidAuthToken")
        except RuntimeError as cause:
            raise ConnectionError("GCS did not answer") from cause
    except ConnectionError as refusal:
        assert _is_auth_refusal(ray, refusal)
        local, remote = _auth_error(ray, None, refusal), _auth_error(ray, "10.0.0.1:6379", refusal)
    assert not _is_auth_refusal(ray, ConnectionError("connection refused"))
    assert local.code == remote.code == "ray-auth"
    assert str(local) == "the local Ray instance refused the authentication token from " \
        "$RAY_AUTH_TOKEN"
    assert str(remote).startswith("the Ray cluster at 10.0.0.1:6379 refused")
