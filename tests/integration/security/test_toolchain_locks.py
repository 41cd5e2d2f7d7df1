"""Toolchain environments install exactly the files their locks name: every pin carries
the sha256 of its wheels, nothing is built from source, and a file whose hash the lock
does not list is refused by pip, with an error that says which package and what to do."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from convertkit.errors import MissingDependencyError
from convertkit.toolchain_lock import NO_DEPS_LINE
from convertkit.toolchains import PIP_INSTALL_LOCK, _install_lock, get_toolchain

TOOLCHAINS = ("rknn", "qnn", "sophgo")
REQUIREMENT = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)", re.MULTILINE)


def _pins(text: str) -> dict[str, str]:
    return {name.lower().replace("_", "-"): version
            for name, version in REQUIREMENT.findall(text)}


@pytest.mark.parametrize("name", TOOLCHAINS)
def test_every_pin_of_a_lock_carries_hashes_and_matches_its_input(name: str) -> None:
    lock = get_toolchain(name).requirements
    text = lock.read_text()
    requirements = [line for line in text.replace("\\\n", " ").splitlines()
                    if REQUIREMENT.match(line)]

    assert requirements, f"{lock.name} pins nothing"
    unhashed = [e.split()[0] for e in requirements if "--hash=sha256:" not in e]
    assert unhashed == [], f"{lock.name}: pins without a hash: {unhashed}"
    # The lock was regenerated after the last edit of its input: every pin of the input
    # (no-deps ones included) is in the lock at the same version.
    source = lock.with_suffix(".in").read_text()
    wanted = _pins(source) | _pins("\n".join(NO_DEPS_LINE.findall(source)))
    locked = _pins(text)
    stale = {pin: version for pin, version in wanted.items() if locked.get(pin) != version}
    assert stale == {}, (f"{lock.name} is older than {lock.with_suffix('.in').name}: run "
                         f"`python -m convertkit.toolchain_lock {name}`")


def test_the_install_takes_wheels_only_and_exactly_the_locked_files() -> None:
    assert {"--require-hashes", "--no-deps"} <= set(PIP_INSTALL_LOCK)
    assert PIP_INSTALL_LOCK[PIP_INSTALL_LOCK.index("--only-binary") + 1] == ":all:"


def test_a_file_the_lock_does_not_name_is_refused(tmp_path: Path) -> None:
    """The index serves a tqdm wheel whose sha256 differs from the lock's (as a tampered
    mirror would): pip installs nothing, and the error names the package."""
    lock = tmp_path / "tampered.txt"
    lock.write_text("tqdm==4.67.1 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "env")], check=True)
    python = tmp_path / "env" / "bin" / "python"
    toolchain = replace(get_toolchain("rknn"), requirements=lock)

    with (tmp_path / "install.log").open("w") as log, \
            pytest.raises(MissingDependencyError) as refused:
        _install_lock(str(python), toolchain, log)

    assert refused.value.code == "toolchain-hash-mismatch"
    assert "pip refused tqdm==4.67.1" in refused.value.message
    assert "python -m convertkit.toolchain_lock rknn" in refused.value.hint
    installed = subprocess.run([str(python), "-m", "pip", "list"], capture_output=True,
                               text=True, check=True).stdout
    assert "tqdm" not in installed
