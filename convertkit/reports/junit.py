"""junit.xml: one test case per artifact, in the Ant/Jenkins JUnit layout that CI systems
(Jenkins, GitLab, GitHub actions reporters, Azure) read.

    <testsuites name tests failures errors skipped time>
      <testsuite name tests failures errors skipped time timestamp hostname>
        <properties><property name value/>...</properties>
        <testcase name classname time>
          <failure message type>the numbers</failure>   a check that failed
          <error message type>the hint</error>          an artifact that could not be built
          <skipped message/>                            built or prepared: not run here
        </testcase>

A pass has no child element. ``built`` and ``prepared`` are skipped, never passed.

Names in the texts come from the model, and XML 1.0 cannot carry most control characters
even as character references: every attribute and text is ``printable`` (safe_text)
before it is written, so the file parses whatever the names hold.
"""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

from convertkit.reports.record import artifact_label
from convertkit.safe_text import printable, printable_lines


def render_junit(report: dict[str, Any]) -> str:
    command = report.get("command", "convert")
    source = report.get("source", {}).get("text", "")
    suite_name = f"convertkit {command} {source}".strip()
    classname = f"convertkit.{command}"
    cases = []
    if report.get("error"):
        cases.append(_error_case("source", classname, report["error"], 0.0))
    for artifact in report.get("artifacts", []):
        cases.append(_artifact_case(artifact, classname))

    counts = {"tests": len(cases), "failures": 0, "errors": 0, "skipped": 0}
    for case in cases:
        for child, key in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
            if case.find(child) is not None:
                counts[key] += 1
    total_time = sum(float(c.get("time", "0")) for c in cases)

    root = ET.Element("testsuites", name="convertkit", time=_seconds(total_time),
                      **{k: str(v) for k, v in counts.items()})
    suite = ET.SubElement(
        root, "testsuite", name=suite_name, time=_seconds(total_time),
        timestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        hostname=socket.gethostname() or "localhost",
        **{k: str(v) for k, v in counts.items()})
    properties = ET.SubElement(suite, "properties")
    for name, value in (("status", report.get("status")), ("exit_code", report.get("exit_code")),
                        ("convertkit_version", report.get("convertkit_version")),
                        ("source", source),
                        ("inputs", report.get("check", {}).get("inputs"))):
        if value is not None:
            ET.SubElement(properties, "property", name=name, value=str(value))
    suite.extend(cases)
    _make_printable(root)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _make_printable(root: ET.Element) -> None:
    """Escape, in every attribute and text under ``root``, what XML 1.0 cannot hold and
    what a CI page should not show raw (ESC sequences, bidi overrides)."""
    for element in root.iter():
        for key, value in element.attrib.items():
            element.set(key, printable(value))
        if element.text:
            element.text = printable_lines(element.text)


def _artifact_case(artifact: dict[str, Any], classname: str) -> ET.Element:
    target = artifact_label(artifact.get("target", "?"), artifact.get("component"))
    name = target + (f" ({artifact['path']})" if artifact.get("path") else "")
    time = float(artifact.get("duration_s") or 0.0)
    status = artifact.get("status")
    if status == "error" and artifact.get("error"):
        return _error_case(name, classname, artifact["error"], time)
    case = ET.Element("testcase", name=name, classname=classname, time=_seconds(time))
    if status == "fail":
        failure = ET.SubElement(case, "failure", message=_failure_message(artifact),
                                type="numerical-mismatch")
        failure.text = _failure_details(artifact)
    elif status in ("built", "prepared"):
        notes = "; ".join(artifact.get("notes") or [])
        ET.SubElement(case, "skipped", message=f"{status}: not run here" +
                      (f" ({notes})" if notes else ""))
    elif status == "error":
        ET.SubElement(case, "error", message="the artifact failed", type="error")
    lines = [f"{name}: {_describe_metric(metric)}"
             for name, metric in (artifact.get("metrics") or {}).items()]
    lines += _evidence(artifact)
    if lines:
        ET.SubElement(case, "system-out").text = "\n".join(lines)
    return case


def _evidence(artifact: dict[str, Any]) -> list[str]:
    """What the verdict rests on: samples, accuracy, calibration, nodes kept out of int8."""
    lines = []
    if artifact.get("samples"):
        lines.append(f"samples: {artifact['samples']}")
    accuracy = artifact.get("accuracy")
    if accuracy:
        lines.append(_accuracy(accuracy))
    calibration = artifact.get("calibration")
    if calibration:
        lines.append(f"calibrated on {calibration['count']} sample(s), {calibration['source']}"
                     + ("" if calibration.get("real") else
                        " (generated inputs: a smoke test, not evidence)"))
    decode = artifact.get("decode")
    if decode:
        lines.append(f"decode: {decode.get('summary', '')}"
                     + ("" if decode.get("within_budget") else f" ({decode.get('note', '')})"))
    mixed = artifact.get("mixed_precision")
    if mixed:
        lines.append(f"mixed precision: {mixed.get('summary', '')}; kept in "
                     f"{mixed.get('kept_in', 'fp32')}: "
                     + ", ".join(f"{node['name']} ({node['op']})"
                                 for node in mixed.get("kept", []))
                     + f"; override in {mixed.get('override_file', '')}")
    return lines


def _accuracy(accuracy: dict[str, Any]) -> str:
    return (f"top-1 accuracy {accuracy['artifact_top1']:.2f}% vs source "
            f"{accuracy['source_top1']:.2f}% on {accuracy['rows']} rows: drop "
            f"{accuracy['drop']:.2f} points, max {accuracy.get('max_drop')}")


def _error_case(name: str, classname: str, error: dict[str, Any], time: float) -> ET.Element:
    case = ET.Element("testcase", name=name, classname=classname, time=_seconds(time))
    element = ET.SubElement(case, "error", message=str(error.get("message", "")),
                            type=str(error.get("type", "error")))
    element.text = "\n".join(
        part for part in (f"code: {error.get('code', '')}", f"exit code: "
                          f"{error.get('exit_code', '')}", f"hint: {error.get('hint', '')}")
        if part)
    return case


def _failure_message(artifact: dict[str, Any]) -> str:
    failing = [(name, m) for name, m in (artifact.get("metrics") or {}).items()
               if not m.get("within_budget")]
    budget = artifact.get("budget") or {}
    parts = [f"{name}: max abs {_num(m.get('max_abs'))}, max rel {_num(m.get('max_rel'))}, "
             f"{_percent(m.get('mismatch_fraction'))} outside atol={budget.get('atol')} "
             f"rtol={budget.get('rtol')}" + (f" ({m['note']})" if m.get("note") else "")
             for name, m in failing]
    accuracy = artifact.get("accuracy")
    if accuracy and not accuracy.get("within_budget"):
        parts.append(_accuracy(accuracy))
    return "; ".join(parts) or "outside the budget"


def _failure_details(artifact: dict[str, Any]) -> str:
    lines = [f"budget: {artifact.get('budget')} ({artifact.get('precision')})"]
    for name, metric in (artifact.get("metrics") or {}).items():
        lines.append(f"{name}: {_describe_metric(metric)}")
    localization = artifact.get("localization")
    if localization:
        lines.append(localization.get("summary", ""))
        repro = localization.get("repro")
        if repro:
            lines.append(f"repro: {repro['command']}")
    return "\n".join(lines)


def _describe_metric(metric: dict[str, Any]) -> str:
    verdict = "within budget" if metric.get("within_budget") else "OVER BUDGET"
    fields = [verdict, f"max_abs={_num(metric.get('max_abs'))}",
              f"max_rel={_num(metric.get('max_rel'))}", f"mean_abs={_num(metric.get('mean_abs'))}",
              f"cosine={_num(metric.get('cosine'), '.6f')}",
              f"snr_db={_snr(metric)}",
              f"mismatch={_percent(metric.get('mismatch_fraction'))}"]
    for key in ("top1_agreement", "top5_agreement"):
        if metric.get(key) is not None:
            fields.append(f"{key}={metric[key]:.3f}")
    if metric.get("note"):
        fields.append(f"note: {metric['note']}")
    return ", ".join(fields)


def _snr(metric: dict[str, Any]) -> str:
    if metric.get("snr_db") is None:
        return "inf" if metric.get("max_abs") == 0 else "-"
    return f"{metric['snr_db']:.1f}"


def _num(value: Any, spec: str = ".3e") -> str:
    return "-" if value is None else format(value, spec)


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _seconds(value: float) -> str:
    return f"{value:.3f}"
