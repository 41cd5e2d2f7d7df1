"""Toolchain environments, on a small real toolchain (one pinned package from PyPI): the
install, the no-op second install, a broken environment, and a step run inside it that
sees the environment's packages and nothing of the main one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from convertkit import toolchain_lock, toolchains
from convertkit.errors import MissingDependencyError, UsageError
from convertkit.toolchains import Toolchain
from tests.conftest import run_cli

STEP_MODULE = '''
import importlib.util
import sys


def describe(payload):
    return {"prefix": sys.prefix, "six": importlib.util.find_spec("six") is not None,
            "click": importlib.util.find_spec("click") is not None,
            "echo": payload["echo"]}
'''


def _register(patch: pytest.MonkeyPatch, *registered: Toolchain) -> None:
    """Make ``registered`` the only toolchains convertkit knows."""
    by_name = {t.name: t for t in registered}

    def get(name: str) -> Toolchain:
        if name not in by_name:
            raise UsageError(f"unknown toolchain {name!r}")
        return by_name[name]

    patch.setattr(toolchains, "get_toolchain", get)
    patch.setattr(toolchains, "load_toolchains", lambda: dict(by_name))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Toolchain:
    """Pinned in tiny.in and locked, hashes and all, by the real lock command."""
    folder = tmp_path_factory.mktemp("tiny-toolchain")
    (folder / "tiny.in").write_text("six==1.16.0\n# no-deps: python-dateutil==2.9.0.post0\n")
    toolchain = Toolchain(name="tiny", description="six and dateutil, as a stand-in toolkit",
                          requirements=folder / "tiny.txt", probe=("six", "dateutil"),
                          packages=("six", "python-dateutil"),
                          fixes=lambda root: [f"nothing to fix in {root.name}"])
    locked = toolchain_lock.lock(toolchain, progress=lambda _: None)
    assert {(p.name.lower(), p.no_deps) for p in locked} == {
        ("six", False), ("python-dateutil", True)}  # dateutil's own need of six: not added
    return toolchain


@pytest.fixture(scope="module")
def installed(tiny: Toolchain, tmp_path_factory: pytest.TempPathFactory):
    """Install once for the module; each test gets the registry pointed at it."""
    base = tmp_path_factory.mktemp("toolchains")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVERTKIT_TOOLCHAINS_DIR", str(base))
        _register(patch, tiny)
        status, changed = toolchains.install("tiny", progress=lambda _: None)
        assert changed and status.state == "installed"
        yield base


@pytest.fixture
def registry(installed: Path, tiny: Toolchain, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONVERTKIT_TOOLCHAINS_DIR", str(installed))
    _register(monkeypatch, tiny)
    return installed


def test_install_records_versions_fixes_and_python(registry: Path) -> None:
    status = toolchains.toolchain_status("tiny")
    assert status.state == "installed"
    assert status.versions == {"six": "1.16.0", "python-dateutil": "2.9.0.post0"}
    assert status.python_version.startswith(f"{sys.version_info[0]}.{sys.version_info[1]}.")
    marker = json.loads((registry / "tiny" / toolchains.MARKER).read_text())
    assert marker["fixes"] == ["nothing to fix in tiny"]


def test_second_install_is_a_no_op(registry: Path) -> None:
    marker = registry / "tiny" / toolchains.MARKER
    before = marker.stat().st_mtime_ns
    status, changed = toolchains.install("tiny", progress=lambda _: None)
    assert not changed and status.state == "installed"
    assert marker.stat().st_mtime_ns == before


def test_step_sees_the_toolchain_packages_and_not_the_main_environment(
        registry: Path, tmp_path: Path) -> None:
    env = toolchains.require_toolchain("tiny", needed_for="a test")
    site = next((env.root / "lib").glob("python*/site-packages"))
    (site / "tiny_step.py").write_text(STEP_MODULE)
    result = toolchains.run_step(env, "tiny_step:describe", {"echo": [1, "a"]},
                                 what="the tiny step", log_path=tmp_path / "step.log")
    assert Path(result["prefix"]).resolve() == env.root.resolve()
    assert result["six"] is True
    assert result["click"] is False  # the main environment's packages stay outside
    assert result["echo"] == [1, "a"]


def test_missing_toolchain_is_exit_4_with_the_install_command(
        tiny: Toolchain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERTKIT_TOOLCHAINS_DIR", str(tmp_path))
    _register(monkeypatch, tiny)
    with pytest.raises(MissingDependencyError) as caught:
        toolchains.require_toolchain("tiny", needed_for="npu:tiny")
    assert caught.value.exit_code == 4
    assert "convertkit toolchains install tiny" in caught.value.hint


def test_broken_toolchain_is_exit_4_with_a_repair_hint_and_install_repairs_it(
        tiny: Toolchain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERTKIT_TOOLCHAINS_DIR", str(tmp_path))
    _register(monkeypatch, tiny)
    toolchains.install("tiny", progress=lambda _: None)
    site = next((tmp_path / "tiny" / "lib").glob("python*/site-packages"))
    (site / "six.py").unlink()
    status = toolchains.toolchain_status("tiny")
    assert status.state == "broken" and "six" in status.reason
    with pytest.raises(MissingDependencyError) as caught:
        toolchains.require_toolchain("tiny", needed_for="npu:tiny")
    assert caught.value.exit_code == 4
    assert "convertkit toolchains install tiny --force" in caught.value.hint
    status, changed = toolchains.install("tiny", progress=lambda _: None)
    assert changed and status.state == "installed"


def test_interrupted_install_reads_as_broken(
        tiny: Toolchain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERTKIT_TOOLCHAINS_DIR", str(tmp_path))
    _register(monkeypatch, tiny)
    (tmp_path / "tiny" / "bin").mkdir(parents=True)  # a venv without the final marker
    status = toolchains.toolchain_status("tiny")
    assert status.state == "broken" and "did not finish" in status.reason


def test_failed_install_leaves_nothing_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requirements = tmp_path / "bad.txt"
    requirements.write_text("convertkit-no-such-package-anywhere==0.0.1\n")
    bad = Toolchain(name="bad", description="cannot install", requirements=requirements,
                    probe=("nothing",), packages=())
    monkeypatch.setenv("CONVERTKIT_TOOLCHAINS_DIR", str(tmp_path / "envs"))
    _register(monkeypatch, bad)
    with pytest.raises(MissingDependencyError) as caught:
        toolchains.install("bad", progress=lambda _: None)
    assert "pip install failed" in caught.value.message
    assert "bad-install.log" in caught.value.hint
    assert not (tmp_path / "envs" / "bad").exists()


def test_a_python_of_the_wrong_version_is_refused(
        tiny: Toolchain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = Toolchain(name="old", description="needs Python 2.6", requirements=tiny.requirements,
                      probe=("six",), packages=("six",), python="2.6")
    monkeypatch.setenv("CONVERTKIT_TOOLCHAINS_DIR", str(tmp_path))
    _register(monkeypatch, other)
    with pytest.raises(UsageError, match=r"needs Python 2\.6"):
        toolchains.install("old", python=sys.executable, progress=lambda _: None)
    with pytest.raises(MissingDependencyError, match="none was found"):
        toolchains.install("old", progress=lambda _: None)


def test_cli_lists_every_registered_toolchain(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERTKIT_TOOLCHAINS_DIR", str(tmp_path))
    result = run_cli("toolchains", "list", "--json")
    assert result.exit_code == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed["path"] == str(tmp_path)
    names = {t["name"]: t for t in listed["toolchains"]}
    assert {"rknn", "qnn", "sophgo"} <= set(names)
    assert all(t["state"] == "missing" for t in names.values())


def test_cli_refuses_an_unknown_toolchain() -> None:
    result = run_cli("toolchains", "install", "rknnn")
    assert result.exit_code == 2
    assert "unknown toolchain 'rknnn'" in result.stderr
