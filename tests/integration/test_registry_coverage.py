"""Every registered adapter and platform has its own integration test file."""

from __future__ import annotations

from pathlib import Path

from convertkit.registry import adapter_names, load_platforms

HERE = Path(__file__).parent


def test_every_adapter_has_an_integration_test() -> None:
    missing = [n for n in adapter_names() if not (HERE / f"adapters/test_{n}.py").is_file()]

    assert not missing, f"add tests/integration/adapters/test_NAME.py for {missing}"


def test_every_platform_has_an_integration_test() -> None:
    missing = [n for n in load_platforms() if not (HERE / f"platforms/test_{n}.py").is_file()]

    assert not missing, f"add tests/integration/platforms/test_NAME.py for {missing}"


def test_every_module_imports_with_core_dependencies_only() -> None:
    import importlib
    import subprocess
    import sys

    package = Path(importlib.import_module("convertkit").__file__).parent
    modules = sorted(
        "convertkit." + ".".join(p.relative_to(package).with_suffix("").parts)
        for p in package.rglob("*.py") if p.name not in ("__main__.py", "__init__.py")
    )
    probe = ("import sys\n"
             f"for m in {modules!r}: __import__(m)\n"
             "print(' '.join(m for m in ('torch','tensorflow','paddle','mindspore','openvino')"
             " if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)

    assert done.stdout.strip() == ""
