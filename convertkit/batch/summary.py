"""The batch summary: counts by status and failure class, the exit code, and the files
CI reads: OUT/summary.json, OUT/summary.html (one self-contained page) and OUT/junit.xml
(one test suite per job, written by the convert report's JUnit writer).

Batch exit code, the first that applies of:
2 the manifest or the command is wrong (nothing ran); 4 a job lacks its framework or
toolchain; 3 a job failed to convert (any class but numeric mismatch); 1 a numerical
check failed; 0 every job passed.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from convertkit.batch.cache import write_atomically
from convertkit.batch.classify import FailureClass, JobOutcome, JobStatus
from convertkit.batch.jobs import JOBS_DIR, LOGS_DIR
from convertkit.errors import EXIT_CODE_PRECEDENCE

SUMMARY_SCHEMA = 1
SUMMARY_FILES = ("summary.json", "summary.html", "junit.xml")


@dataclass(frozen=True)
class BatchSummary:
    manifest: str
    out_dir: str
    executor: str
    outcomes: tuple[JobOutcome, ...]  # in manifest order
    sources: tuple[str, ...]  # each job's SOURCE, same order
    duration_s: float
    version: str

    @property
    def counts(self) -> dict[str, int]:
        counts = Counter(o.status.value for o in self.outcomes)
        return {"jobs": len(self.outcomes), **{s.value: counts.get(s.value, 0)
                                                for s in JobStatus},
                "cached": sum(o.cached for o in self.outcomes)}

    @property
    def classes(self) -> dict[str, int]:
        counts = Counter(o.failure for o in self.outcomes if o.failure is not None)
        return {c.value: counts[c] for c in FailureClass if counts.get(c)}

    @property
    def exit_code(self) -> int:
        codes = {o.exit_code for o in self.outcomes}
        return next((code for code in EXIT_CODE_PRECEDENCE if code in codes), 0)

    @property
    def status(self) -> str:
        return {0: "pass", 1: "fail"}.get(self.exit_code, "error")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SUMMARY_SCHEMA, "convertkit_version": self.version,
            "manifest": self.manifest, "executor": self.executor, "status": self.status,
            "exit_code": self.exit_code, "duration_s": round(self.duration_s, 3),
            "counts": self.counts,
            "classes": {name: {"count": count, "hint": FailureClass(name).hint}
                        for name, count in self.classes.items()},
            "jobs": [{**o.to_dict(), "source": source,
                      "folder": f"{JOBS_DIR}/{o.name}", "log": f"{LOGS_DIR}/{o.name}.log"}
                     for o, source in zip(self.outcomes, self.sources, strict=True)],
        }


def write_summary(summary: BatchSummary, out_dir: Path) -> list[Path]:
    """summary.json, summary.html and junit.xml, each written atomically."""
    data = summary.to_dict()
    texts = {"summary.json": json.dumps(data, indent=2) + "\n",
             "summary.html": render_summary_html(data),
             "junit.xml": render_batch_junit(data, out_dir)}
    paths = []
    for name, text in texts.items():
        write_atomically(out_dir / name, text)
        paths.append(out_dir / name)
    return paths


def format_summary(summary: BatchSummary) -> str:
    """The terminal view: one row per job, the classes seen with their hints, totals."""
    header = ("job", "status", "class", "time", "message")
    rows = []
    for outcome in summary.outcomes:
        time_text = "cached" if outcome.cached else f"{outcome.duration_s:.1f} s"
        message = outcome.message or _artifact_text(outcome)
        rows.append((outcome.name, outcome.status.value,
                     outcome.failure.value if outcome.failure else "-", time_text,
                     message[:90]))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if summary.classes:
        lines.append("")
        width = max(len(name) for name in summary.classes) + 4
        for name, count in summary.classes.items():
            lines.append(f"{f'{name} ({count})'.ljust(width)}  {FailureClass(name).hint}")
    counts = summary.counts
    lines.append("")
    lines.append(f"{counts['jobs']} jobs: {counts['pass']} pass, {counts['fail']} fail, "
                 f"{counts['error']} error ({counts['cached']} from cache) in "
                 f"{summary.duration_s:.1f} s   summary: {summary.out_dir}/summary.json   "
                 f"exit {summary.exit_code}")
    return "\n".join(lines)


def _artifact_text(outcome: JobOutcome) -> str:
    return ", ".join(f"{target} {status}" for target, status in outcome.artifacts)


# -- junit.xml -------------------------------------------------------------------------------


def render_batch_junit(data: dict[str, Any], out_dir: Path) -> str:
    """One <testsuite> per job with one <testcase> per artifact, made by the convert
    report's own JUnit writer from the job's report.json (or, for a job that ended without
    one, from its error)."""
    from convertkit.reports.junit import render_junit

    root = ET.Element("testsuites", name="convertkit batch")
    totals = Counter()
    for job in data["jobs"]:
        report = _job_report(job, out_dir)
        suite = ET.fromstring(render_junit(report).encode("utf-8")).find("testsuite")
        if suite is None:
            continue
        suite.set("name", f"{job['name']}: {job['source']}")
        for case in suite.iter("testcase"):
            case.set("classname", f"convertkit.batch.{job['name']}")
        properties = suite.find("properties")
        if properties is not None:
            for name, value in (("job", job["name"]), ("failure_class", job["failure"]),
                                ("cached", str(job["cached"]).lower()), ("log", job["log"])):
                if value is not None:
                    ET.SubElement(properties, "property", name=name, value=str(value))
        for key in ("tests", "failures", "errors", "skipped"):
            totals[key] += int(suite.get(key, "0"))
        totals["time"] += float(suite.get("time", "0"))
        root.append(suite)
    for key in ("tests", "failures", "errors", "skipped"):
        root.set(key, str(totals[key]))
    root.set("time", f"{totals['time']:.3f}")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _job_report(job: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    if job["has_report"]:
        try:
            report = json.loads((out_dir / job["folder"] / "report.json").read_text())
        except (OSError, ValueError):
            report = None
        if isinstance(report, dict):
            if report.get("artifacts") and not report.get("error"):
                for artifact in report["artifacts"]:
                    artifact.setdefault("duration_s", None)
                report["artifacts"][0]["duration_s"] = job["duration_s"]
            return report
    if job["failure"] is None:
        return {"command": "convert", "status": "pass", "source": {"text": job["source"]},
                "check": {}, "error": None, "artifacts": []}
    error = {"type": job["failure"], "message": job["message"],
             "hint": job["hint"], "code": job["code"] or job["failure"],
             "exit_code": job["exit_code"]}
    return {"command": "convert", "status": job["status"], "exit_code": job["exit_code"],
            "source": {"text": job["source"]}, "check": {}, "error": error, "artifacts": []}


# -- summary.html ----------------------------------------------------------------------------

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#1d2329;max-width:1300px} h1{font-size:22px;margin:0 0 8px}
h2{font-size:18px;margin:24px 0 8px;border-bottom:1px solid #d6dbe0;padding-bottom:4px}
table{border-collapse:collapse;margin:6px 0 12px} th,td{border:1px solid #d6dbe0;
padding:3px 8px;text-align:left;vertical-align:top} th{background:#f1f3f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#137333;font-weight:600} .fail,.error{color:#b3261e;font-weight:600}
.muted{color:#5f6b76} code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
"""


def render_summary_html(data: dict[str, Any]) -> str:
    status = data["status"]
    counts = data["counts"]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>convertkit batch: {escape(status)}</title><style>{_STYLE}</style></head><body>",
        f'<h1>convertkit batch: <span class="{escape(status)}">{escape(status)}</span></h1>',
        "<table>" + "".join(
            f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in (
                ("manifest", data["manifest"]), ("executor", data["executor"]),
                ("exit code", data["exit_code"]),
                ("jobs", f"{counts['jobs']}: {counts['pass']} pass, {counts['fail']} fail, "
                         f"{counts['error']} error ({counts['cached']} from cache)"),
                ("time", f"{data['duration_s']:.1f} s"))) + "</table>",
    ]
    if data["classes"]:
        parts.append("<h2>Failures by class</h2><table><tr><th>class</th><th>jobs</th>"
                     "<th>hint</th></tr>" + "".join(
                         f"<tr><td>{escape(name)}</td><td class=\"num\">{info['count']}</td>"
                         f"<td>{escape(info['hint'])}</td></tr>"
                         for name, info in data["classes"].items()) + "</table>")
    rows = []
    for job in data["jobs"]:
        links = [f'<a href="{escape(job["log"])}">log</a>']
        if job["has_report"]:
            links.insert(0, f'<a href="{escape(job["folder"])}/report.html">report</a>')
        artifacts = ", ".join(f"{escape(t)} {escape(s)}" for t, s in job["artifacts"])
        detail = escape(job["message"]) if job["message"] else artifacts
        if job["message"] and job["hint"]:
            detail += f'<br><span class="muted">hint: {escape(job["hint"])}</span>'
        time_text = "cached" if job["cached"] else f"{job['duration_s']:.1f} s"
        rows.append(
            f"<tr><td>{escape(job['name'])}</td><td><code>{escape(job['source'])}</code></td>"
            f'<td class="{escape(job["status"])}">{escape(job["status"])}</td>'
            f"<td>{escape(job['failure'] or '-')}</td>"
            f'<td class="num">{time_text}</td><td>{detail}</td><td>{" ".join(links)}</td></tr>')
    parts.append("<h2>Jobs</h2><table id=\"jobs\"><tr><th>job</th><th>source</th>"
                 "<th>status</th><th>class</th><th>time</th><th>detail</th><th></th></tr>"
                 + "".join(rows) + "</table>")
    parts.append(f'<p class="muted">convertkit {escape(data["convertkit_version"])}, summary '
                 f"schema {data['schema']}. Exit code: the first of 4 (toolchain missing), "
                 "3 (conversion failed), 1 (numerical mismatch) that applies, else 0.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
