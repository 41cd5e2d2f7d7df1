"""Sealed virtual environments for NPU toolchains.

NPU toolkits pin old protobuf, numpy and onnx releases, or another Python altogether
(rknn-toolkit2: protobuf<=4.25.4; tpu-mlir: Python 3.10), so none of them can share the
main environment. Each gets a virtual environment of its own, created by
``convertkit toolchains install NAME`` from a pinned requirements file kept in the
package. A platform hands files to a ``*_step`` module that runs in that environment as
a child process (``run_step``): only the ``convertkit`` package is made importable there,
so the step sees the toolkit's packages and nothing of the main environment.

A platform module declares its toolchain as ``TOOLCHAIN = Toolchain(...)`` and registers
it under the ``convertkit.toolchains`` entry-point group, like platforms and adapters.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from convertkit.config import (
    install_environment,
    is_debug,
    step_environment,
    toolchains_dir,
)
from convertkit.errors import ConversionError, MissingDependencyError, UsageError

TOOLCHAIN_GROUP = "convertkit.toolchains"
MARKER = "convertkit-toolchain.json"  # written last: its presence means the install finished
_PACKAGE_DIR = Path(__file__).resolve().parent
# Only the files the lock names, only wheels, and only the packages it lists: the lock is
# complete (convertkit.toolchain_lock resolved it), so pip resolves nothing further.
PIP_INSTALL_LOCK = ("--require-hashes", "--only-binary", ":all:", "--no-deps")


@dataclass(frozen=True)
class Toolchain:
    """One toolkit and how to build its environment."""

    name: str
    description: str
    # The lock kept in the package: every package pinned with the sha256 of its wheels,
    # written by `python -m convertkit.toolchain_lock NAME` from NAME.in beside it.
    requirements: Path
    probe: tuple[str, ...]  # modules imported to prove the environment works
    packages: tuple[str, ...]  # distributions whose versions `toolchains list` shows
    python: str | None = None  # "3.10": the Python it needs; None: the running one's
    # Run after pip install with the environment's root; returns what it changed.
    fixes: Callable[[Path], list[str]] | None = None
    size_hint: str = ""  # "~6 GB", shown before a long install


@dataclass(frozen=True)
class ToolchainEnv:
    """An installed toolchain environment."""

    toolchain: Toolchain
    root: Path
    versions: dict[str, str] = field(default_factory=dict)
    python_version: str = ""

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"


@dataclass(frozen=True)
class ToolchainStatus:
    name: str
    state: str  # installed | missing | broken
    root: Path
    description: str
    versions: dict[str, str] = field(default_factory=dict)
    python_version: str = ""
    reason: str = ""  # why it is broken

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "path": str(self.root),
                "description": self.description, "versions": self.versions,
                "python": self.python_version, "reason": self.reason}


# --- the catalogue ------------------------------------------------------------------------

@functools.cache
def _entry_points() -> dict[str, EntryPoint]:
    return {point.name: point for point in entry_points(group=TOOLCHAIN_GROUP)}


def load_toolchains() -> dict[str, Toolchain]:
    """Every registered toolchain by name (imports the platform modules that declare them)."""
    return {name: get_toolchain(name) for name in sorted(_entry_points())}


def get_toolchain(name: str) -> Toolchain:
    """One toolchain, loading only its own entry point: a broken plug-in elsewhere does
    not stop this one."""
    points = _entry_points()
    if name not in points:
        raise UsageError(f"unknown toolchain {name!r}",
                         hint=f"known toolchains: {', '.join(sorted(points))}",
                         code="unknown-toolchain")
    return _load(points[name])


@functools.cache
def _load(point: EntryPoint) -> Toolchain:
    try:
        return point.load()
    except (ImportError, AttributeError) as exc:
        raise ConversionError(f"the {point.name} toolchain's entry point {point.value} "
                              f"cannot be loaded: {exc}",
                              hint="reinstall the package that provides it",
                              code="broken-plugin") from exc


def install_command(name: str, *, force: bool = False) -> str:
    return f"convertkit toolchains install {name}" + (" --force" if force else "")


# --- status -------------------------------------------------------------------------------

def toolchain_status(name: str) -> ToolchainStatus:
    """Whether ``name`` is installed and intact, judged cheaply: its marker, its
    interpreter, its probe packages present (found, not imported), its requirements
    unchanged since the install."""
    toolchain = get_toolchain(name)
    root = toolchains_dir() / name
    status = functools.partial(ToolchainStatus, name, root=root,
                               description=toolchain.description)
    if not root.exists():
        return status(state="missing")
    marker_path = root / MARKER
    if not marker_path.is_file():
        return status(state="broken", reason="its installation did not finish")
    try:
        marker = json.loads(marker_path.read_text())
    except (OSError, ValueError):
        return status(state="broken", reason=f"{MARKER} is unreadable")
    installed = functools.partial(status, versions=marker.get("versions", {}),
                                  python_version=marker.get("python", ""))
    python = root / "bin" / "python"
    if not os.access(python, os.X_OK):
        return installed(state="broken", reason=f"its interpreter {python} is missing")
    if marker.get("requirements_sha256") != _digest(toolchain.requirements):
        return installed(state="broken", reason="it was installed from other requirements "
                         "(convertkit was updated since)")
    missing = _missing_modules(python, toolchain.probe)
    if missing:
        return installed(state="broken", reason=f"{', '.join(missing)} cannot be found in it")
    return installed(state="installed")


def recorded_versions(name: str) -> dict[str, str] | None:
    """The package versions the install of toolchain ``name`` recorded, read from its
    marker without checking the environment (cheap); None when it is not registered or
    not installed."""
    if name not in _entry_points():
        return None
    try:
        marker = json.loads((toolchains_dir() / name / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return {**marker.get("versions", {}), "python": marker.get("python", "")}


def require_toolchain(name: str, *, needed_for: str) -> ToolchainEnv:
    """The installed environment of ``name``, or exit 4 with the command that installs or
    repairs it."""
    status = toolchain_status(name)
    if status.state == "missing":
        raise MissingDependencyError(
            f"the {name} toolchain is not installed ({needed_for} needs it)",
            hint=f"run `{install_command(name)}`", code=f"missing-toolchain-{name}")
    if status.state == "broken":
        raise MissingDependencyError(
            f"the {name} toolchain at {status.root} is broken: {status.reason}",
            hint=f"repair it with `{install_command(name, force=True)}`",
            code=f"broken-toolchain-{name}")
    return ToolchainEnv(get_toolchain(name), status.root, status.versions,
                        status.python_version)


def _missing_modules(python: Path, modules: tuple[str, ...]) -> list[str]:
    """Top-level packages of ``modules`` that ``python`` cannot find (nothing imported)."""
    tops = sorted({module.split(".")[0] for module in modules})
    script = ("import importlib.util, json, sys; "
              "print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]))")
    try:
        done = subprocess.run([str(python), "-I", "-c", script, *tops], capture_output=True,
                              text=True, timeout=60)
        return json.loads(done.stdout) if done.returncode == 0 else tops
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return tops


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- install ------------------------------------------------------------------------------

def install(name: str, *, python: str | None = None, force: bool = False,
            progress: Callable[[str], None] = print) -> tuple[ToolchainStatus, bool]:
    """Create ``name``'s environment. Returns its status and whether anything was done:
    an intact installation is left alone unless ``force``; a broken one is rebuilt."""
    toolchain = get_toolchain(name)
    base = toolchains_dir()
    base.mkdir(parents=True, exist_ok=True)
    with _locked(base / f".{name}.lock"):
        status = toolchain_status(name)
        if status.state == "installed" and not force:
            return status, False
        interpreter = find_python(toolchain, python)
        root = base / name
        log_path = base / f"{name}-install.log"
        if root.exists():
            progress(f"removing the existing environment at {root}")
            shutil.rmtree(root)
        size = f" ({toolchain.size_hint})" if toolchain.size_hint else ""
        progress(f"creating {root} with {interpreter}{size}; log: {log_path}")
        started = time.monotonic()
        try:
            with log_path.open("w", encoding="utf-8") as log:
                _run([interpreter, "-m", "venv", str(root)], log, "creating the environment")
                env_python = str(root / "bin" / "python")
                progress(f"installing {toolchain.requirements.name}")
                _install_lock(env_python, toolchain, log)
                changes = toolchain.fixes(root) if toolchain.fixes else []
                for change in changes:
                    progress(f"fix: {change}")
                    log.write(f"fix: {change}\n")
                progress("checking that it imports")
                marker = _probe(env_python, toolchain, log)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        marker.update(requirements_sha256=_digest(toolchain.requirements), fixes=changes,
                      installed_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      install_s=round(time.monotonic() - started, 1))
        (root / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        return toolchain_status(name), True


def remove(name: str) -> bool:
    """Delete ``name``'s environment; False when there was none."""
    get_toolchain(name)
    root = toolchains_dir() / name
    if not root.exists():
        return False
    with _locked(toolchains_dir() / f".{name}.lock"):
        shutil.rmtree(root)
    return True


def find_python(toolchain: Toolchain, given: str | None) -> str:
    """The interpreter to build the environment with: ``given``, else one of the version
    the toolchain needs found on PATH or under pyenv, else the running one."""
    wanted = toolchain.python
    if given:
        path = shutil.which(given) or given
        if not os.access(path, os.X_OK):
            raise UsageError(f"--python {given} is not an executable",
                             hint="pass the path of a Python interpreter", code="bad-python")
        if wanted and _python_version(path) != wanted:
            raise UsageError(
                f"the {toolchain.name} toolchain needs Python {wanted}; {given} is Python "
                f"{_python_version(path) or 'unknown'}",
                hint=f"pass --python /path/to/python{wanted}", code="wrong-python")
        return path
    if wanted is None:
        return sys.executable
    candidates = [shutil.which(f"python{wanted}"),
                  *sorted(glob.glob(str(Path.home() / f".pyenv/versions/{wanted}.*/bin/python"
                                        f"{wanted}")), reverse=True)]
    for candidate in candidates:
        if candidate and _python_version(candidate) == wanted:
            return candidate
    raise MissingDependencyError(
        f"the {toolchain.name} toolchain needs Python {wanted} and none was found "
        f"(looked for python{wanted} on PATH and under ~/.pyenv/versions)",
        hint=f"install Python {wanted} (e.g. `pyenv install {wanted}`) or pass "
        f"--python /path/to/python{wanted}", code="missing-python")


def _python_version(python: str) -> str:
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _install_lock(python: str, toolchain: Toolchain, log) -> None:
    """pip install the toolchain's lock; a downloaded file whose sha256 the lock does not
    name is refused, and the error says which package, from where."""
    lock = toolchain.requirements
    command = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
               *PIP_INSTALL_LOCK, "-r", str(lock)]
    try:
        _run(command, log, "pip install")
    except MissingDependencyError:
        mismatch = _hash_mismatch(Path(log.name).read_text(errors="replace"))
        if mismatch is None:
            raise
        requirement, url, got = mismatch
        raise MissingDependencyError(
            f"pip refused {requirement}: the file it downloaded ({url}) has sha256 {got}, "
            f"which {lock.name} does not list",
            hint="the index pip used (see `pip config list`) serves another file than the "
            "one the lock was made from; once that file is trusted, regenerate the lock "
            f"with `python -m convertkit.toolchain_lock {toolchain.name}`. The full output "
            f"is in {log.name}", code="toolchain-hash-mismatch") from None


_MISMATCH_FILE = re.compile(r"^\s+(\S+==\S+) from (\S+)")
_MISMATCH_GOT = re.compile(r"^\s+Got\s+([0-9a-f]{64})")


def _hash_mismatch(output: str) -> tuple[str, str, str] | None:
    """(requirement, url, sha256 found) of the first file pip refused for its hash."""
    _, marker, after = output.partition("DO NOT MATCH THE HASHES")
    if not marker:
        return None
    requirement = url = ""
    for line in after.splitlines():
        if (match := _MISMATCH_FILE.match(line)) and not requirement:
            requirement, url = match.group(1), match.group(2).split("#", 1)[0]
        elif (match := _MISMATCH_GOT.match(line)) and requirement:
            return requirement, url, match.group(1)
    return None


def _run(command: list[str], log, what: str) -> None:
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, env=install_environment())
    if done.returncode != 0:
        raise MissingDependencyError(
            f"{what} failed (exit status {done.returncode}): {_last_error(Path(log.name))}",
            hint=f"the full output is in {log.name}", code="toolchain-install-failed")


def _probe(python: str, toolchain: Toolchain, log) -> dict[str, Any]:
    script = (
        "import importlib, importlib.metadata as md, json, sys\n"
        "for module in sys.argv[2].split(','):\n"
        "    importlib.import_module(module)\n"
        "versions = {}\n"
        "for name in sys.argv[1].split(','):\n"
        "    versions[name] = md.version(name)\n"
        "print('CONVERTKIT-PROBE ' + json.dumps({'versions': versions, "
        "'python': '%d.%d.%d' % sys.version_info[:3]}))\n")
    done = subprocess.run(
        [python, "-c", script, ",".join(toolchain.packages), ",".join(toolchain.probe)],
        capture_output=True, text=True, env=install_environment(), timeout=600)
    log.write(done.stdout + done.stderr)
    for line in done.stdout.splitlines():
        if line.startswith("CONVERTKIT-PROBE "):
            return json.loads(line.removeprefix("CONVERTKIT-PROBE "))
    raise MissingDependencyError(
        f"the {toolchain.name} toolchain was installed but does not import: "
        f"{_last_error_text(done.stderr)}",
        hint=f"the full output is in {log.name}", code="toolchain-install-failed")


def _last_error(log_path: Path) -> str:
    try:
        return _last_error_text(log_path.read_text(errors="replace"))
    except OSError:
        return ""


def _last_error_text(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(no output)"])[-1][:300]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``: concurrent installs (pytest-xdist workers, two
    terminals) wait for each other instead of building one environment twice."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- steps --------------------------------------------------------------------------------

def run_step(env: ToolchainEnv, function: str, payload: dict[str, Any], *, what: str,
             log_path: Path, timeout_s: float | None = None,
             echo: bool | None = None) -> dict[str, Any]:
    """Call ``function`` ("convertkit.toolchain_steps.rknn:build") with ``payload`` in the
    toolchain's environment (see convertkit.isolation). The child sees the environment's
    own packages and, through a link in a scratch folder that leads its sys.path, the
    convertkit package: not the main environment, not the working folder."""
    from convertkit.isolation import run_in_child

    with tempfile.TemporaryDirectory(prefix="convertkit-step-") as shim:
        os.symlink(_PACKAGE_DIR, Path(shim, "convertkit"))
        launcher = Path(shim, "convertkit_step.py")
        launcher.write_text("from convertkit.isolation import main\n\nmain()\n")
        environment = step_environment(env.root)
        try:
            return run_in_child(function, payload, what=what, log_path=log_path,
                                echo=is_debug() if echo is None else echo,
                                timeout_s=timeout_s, python=str(env.python),
                                environment=environment, launcher=launcher)
        except ConversionError as error:
            if error.message.startswith(("ModuleNotFoundError", "ImportError")):
                raise MissingDependencyError(
                    f"the {env.toolchain.name} toolchain at {env.root} is broken: "
                    f"{error.message}",
                    hint=f"repair it with `{install_command(env.toolchain.name, force=True)}`",
                    code=f"broken-toolchain-{env.toolchain.name}") from error
            raise
