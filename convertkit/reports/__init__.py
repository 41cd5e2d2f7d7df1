"""The files a run leaves for people and CI systems: report.json (always, complete),
report.html (one self-contained page) and junit.xml (one test case per artifact)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from convertkit.errors import UsageError

if TYPE_CHECKING:
    from convertkit.report import Report

REPORT_FILES: dict[str, str] = {"json": "report.json", "html": "report.html",
                                "junit": "junit.xml"}
REPORT_FORMATS: tuple[str, ...] = tuple(REPORT_FILES)
DEFAULT_REPORT_FORMATS: tuple[str, ...] = REPORT_FORMATS


def parse_report_formats(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """'json,html' (or a list of names) -> ('json', 'html'). json is always written."""
    if value is None:
        return DEFAULT_REPORT_FORMATS
    items = value.split(",") if isinstance(value, str) else list(value)
    chosen = {"json"}
    for item in items:
        for name in str(item).split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name == "all":
                chosen.update(REPORT_FORMATS)
            elif name in REPORT_FILES:
                chosen.add(name)
            else:
                raise UsageError(f"unknown report format {name!r}",
                                 hint=f"use a comma-separated list of: "
                                 f"{', '.join(REPORT_FORMATS)}", code="bad-report-format")
    return tuple(f for f in REPORT_FORMATS if f in chosen)


def write_reports(report: Report, folder: Path,
                  formats: Sequence[str] = DEFAULT_REPORT_FORMATS) -> list[Path]:
    """Write ``report`` into ``folder`` in each of ``formats`` (json always)."""
    data = report.to_dict()
    written = []
    path = folder / REPORT_FILES["json"]
    report.write(path)
    written.append(path)
    if "html" in formats:
        from convertkit.reports.html import render_html

        path = folder / REPORT_FILES["html"]
        path.write_text(render_html(data), encoding="utf-8")
        written.append(path)
    if "junit" in formats:
        from convertkit.reports.junit import render_junit

        path = folder / REPORT_FILES["junit"]
        path.write_text(render_junit(data), encoding="utf-8")
        written.append(path)
    return written
