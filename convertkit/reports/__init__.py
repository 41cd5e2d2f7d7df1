"""The files a run leaves for people and CI systems: report.json (always, complete),
report.html (one self-contained page) and junit.xml (one test case per artifact)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from convertkit.reports.record import Report

REPORT_FILES: dict[str, str] = {"json": "report.json", "html": "report.html",
                                "junit": "junit.xml"}
REPORT_FORMATS: tuple[str, ...] = tuple(REPORT_FILES)


def write_reports(report: Report, folder: Path,
                  formats: Sequence[str] = REPORT_FORMATS) -> list[Path]:
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
