"""Regenerate a toolchain's hashed requirements (its lock) from the pins a person edits.

``python -m convertkit.toolchain_lock NAME`` reads ``NAME.in`` beside the toolchain's
requirements file (the top-level pins and why), resolves every dependency in a scratch
virtual environment of the toolchain's own Python with the same pip and configuration
the install uses, and writes ``NAME.txt``: every package pinned ``==`` with the sha256
of each wheel pip may choose for it on this platform (every file of that version whose
tags this interpreter accepts, from every configured index). ``toolchains install``
installs that file with ``--require-hashes --only-binary :all: --no-deps``, so exactly
the locked files go in, and nothing is built from source.

A line ``# no-deps: NAME==VERSION`` in the ``.in`` locks a package without what it
declares (a wheel whose declared pins are wrong); what it needs is then pinned in the
``.in`` by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from convertkit.config import install_environment
from convertkit.errors import ConvertkitError, UsageError
from convertkit.toolchains import Toolchain, find_python, get_toolchain

NO_DEPS_LINE = re.compile(r"^#\s*no-deps:\s*(\S+)\s*$", re.MULTILINE)

# Run by the scratch environment's own Python (convertkit is not importable there): for
# each (name, version), the sha256 of every wheel of that version pip's finder accepts
# for this interpreter, read from the index (the link's #sha256=) or, where the index
# gives none (a find-links folder), from the file itself.
_HASHES_SCRIPT = r'''
import hashlib, json, sys
from pip._internal.commands import create_command
from pip._vendor.packaging.version import Version

wanted = json.load(sys.stdin)
command = create_command("download")
options, _ = command.parse_args(["--only-binary", ":all:"])
found = {}
with command.main_context():
    session = command.get_default_session(options)
    finder = command._build_package_finder(options=options, session=session)
    for name, version in wanted:
        digests = {}
        for candidate in finder.find_all_candidates(name):
            link = candidate.link
            if candidate.version != Version(version) or not link.is_wheel:
                continue
            if link.hash_name == "sha256" and link.hash:
                digests[link.filename] = link.hash
                continue
            digest = hashlib.sha256()
            if link.is_file:
                with open(link.file_path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
            else:
                response = session.get(link.url_without_fragment, stream=True)
                response.raise_for_status()
                for block in response.iter_content(1 << 20):
                    digest.update(block)
            digests[link.filename] = digest.hexdigest()
        found[name] = digests
print("CONVERTKIT-HASHES " + json.dumps(found))
'''


@dataclass(frozen=True)
class Locked:
    """One package of a lock: the version pip resolved and the sha256 of each wheel."""

    name: str
    version: str
    hashes: tuple[str, ...]
    no_deps: bool = False


class LockError(ConvertkitError):
    """Resolving or hashing a toolchain's requirements failed."""

    exit_code = 3
    default_code = "toolchain-lock-failed"


def input_file(toolchain: Toolchain) -> Path:
    return toolchain.requirements.with_suffix(".in")


def lock(toolchain: Toolchain, *, python: str | None = None,
         progress=print) -> list[Locked]:
    """Resolve ``toolchain``'s ``.in`` and write its hashed requirements file."""
    source = input_file(toolchain)
    if not source.is_file():
        raise UsageError(f"{source} does not exist",
                         hint="a toolchain's lock is made from NAME.in beside NAME.txt",
                         code="missing-lock-input")
    text = source.read_text()
    no_deps = NO_DEPS_LINE.findall(text)
    pins = [line for line in (raw.split("#", 1)[0].strip() for raw in text.splitlines())
            if line]
    interpreter = find_python(toolchain, python)
    with tempfile.TemporaryDirectory(prefix=f"convertkit-lock-{toolchain.name}-") as scratch:
        venv = Path(scratch, "venv")
        progress(f"resolving {source.name} with {interpreter}")
        _check([interpreter, "-m", "venv", str(venv)], "creating the scratch environment")
        env_python = str(venv / "bin" / "python")
        versions = _resolve(env_python, pins, Path(scratch), deps=True)
        if no_deps:
            versions.update(_resolve(env_python, no_deps, Path(scratch), deps=False))
        progress(f"hashing {len(versions)} packages")
        hashes = _hashes(env_python, versions)
        python_version = _check([env_python, "-c", "import platform; "
                                 "print(platform.python_version())"], "asking its version")
    no_deps_names = {_canonical(requirement.split("==")[0]) for requirement in no_deps}
    locked = [Locked(name, version, tuple(sorted(hashes[key])), key in no_deps_names)
              for key, (name, version) in sorted(versions.items())]
    toolchain.requirements.write_text(render(toolchain, locked, python_version.strip()))
    return locked


def render(toolchain: Toolchain, locked: list[Locked], python_version: str) -> str:
    name = toolchain.name
    lines = [
        f"# The {name} toolchain's lock, written by `python -m convertkit.toolchain_lock "
        f"{name}`",
        f"# from {name}.in (the pins and why: edit that file, then run the command again).",
        f"# Resolved with Python {python_version} on Linux x86-64; each --hash is a wheel "
        "pip may choose",
        f"# there. `convertkit toolchains install {name}` installs exactly these files:",
        "# pip install --require-hashes --only-binary :all: --no-deps -r "
        f"{toolchain.requirements.name}",
    ]
    for package in locked:
        if package.no_deps:
            lines.append(f"# {package.name}: what it declares is not installed "
                         f"(no-deps in {name}.in)")
        lines.append(f"{package.name}=={package.version} \\")
        lines += [f"    --hash=sha256:{digest} \\" for digest in package.hashes]
        lines[-1] = lines[-1].removesuffix(" \\")
    return "\n".join(lines) + "\n"


def _resolve(python: str, requirements: list[str], scratch: Path, *,
             deps: bool) -> dict[str, tuple[str, str]]:
    """What pip would install for ``requirements`` (wheels only), by canonical name:
    (name, version)."""
    listing = scratch / ("pins.txt" if deps else "no-deps.txt")
    listing.write_text("\n".join(requirements) + "\n")
    report = scratch / ("report.json" if deps else "no-deps-report.json")
    _check([python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
            "--only-binary", ":all:", *([] if deps else ["--no-deps"]),
            "--report", str(report), "-r", str(listing)],
           f"resolving {', '.join(requirements)}" if not deps else "resolving the pins")
    resolved = {}
    for item in json.loads(report.read_text())["install"]:
        metadata = item["metadata"]
        resolved[_canonical(metadata["name"])] = (metadata["name"], metadata["version"])
    return resolved


def _hashes(python: str, versions: dict[str, tuple[str, str]]) -> dict[str, list[str]]:
    wanted = [[name, version] for name, version in versions.values()]
    output = _check([python, "-c", _HASHES_SCRIPT], "hashing the wheels",
                    stdin=json.dumps(wanted))
    line = next(line for line in output.splitlines() if line.startswith("CONVERTKIT-HASHES "))
    found = json.loads(line.removeprefix("CONVERTKIT-HASHES "))
    by_key = {_canonical(name): sorted(set(digests.values())) for name, digests in found.items()}
    empty = sorted(versions[key][0] for key, digests in by_key.items() if not digests)
    if empty:
        raise LockError(f"no wheel was found to hash for {', '.join(empty)}",
                        hint="every toolchain package must be a wheel: pin a version "
                        "that has one for this Python")
    return by_key


def _check(command: list[str], what: str, stdin: str | None = None) -> str:
    done = subprocess.run(command, capture_output=True, text=True, input=stdin,
                          env=install_environment())
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines()
                 if line.strip() and not line.startswith("WARNING:")]
        raise LockError(f"{what} failed: {(lines or ['(no output)'])[-1].strip()[:300]}")
    return done.stdout


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convertkit.toolchain_lock",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", metavar="NAME", help="toolchain to lock")
    parser.add_argument("--python", metavar="PATH",
                        help="interpreter to resolve with (default: as for install)")
    args = parser.parse_args(argv)
    try:
        for name in args.names:
            toolchain = get_toolchain(name)
            locked = lock(toolchain, python=args.python,
                          progress=lambda message: print(f"... {message}", file=sys.stderr))
            print(f"{name}: {toolchain.requirements} locks {len(locked)} packages")
    except ConvertkitError as error:
        print(f"error: {error.message}", file=sys.stderr)
        if error.hint:
            print(f"hint: {error.hint}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
