"""The terminal view of a report: a table with one row per artifact output, then a few
lines per artifact that needs them (the `-t cpu` candidates, task accuracy, where a failed
one diverges first, the toolkit's worst layers), and what the check rested on.

Names in them come from the model: every cell and line is ``printable`` (safe_text), so
no newline, ESC sequence or bidi override in a name reaches the terminal."""

from __future__ import annotations

from convertkit.reports.record import ArtifactResult, Report
from convertkit.safe_text import printable
from convertkit.selection import NOT_EVIDENCE_HINT
from convertkit.spec import Status

# Marks a status that rests on a build calibrated on generated inputs (a smoke test).
GENERATED_MARK = "*"


def format_table(report: Report) -> str:
    """The terminal view: one row per artifact output."""
    header = ("target", "status", "precision", "output", "max abs", "max rel", "cosine")
    rows: list[tuple[str, ...]] = []
    for artifact in report.artifacts:
        status = artifact.status.value + (GENERATED_MARK if _marked(artifact) else "")
        base = (artifact.label, status, artifact.precision or "-")
        if not artifact.outputs:
            detail = artifact.error["message"] if artifact.error else _UNCHECKED.get(
                artifact.status, "")
            rows.append((*base, detail[:60] or "-", "-", "-", "-"))
        for index, metric in enumerate(artifact.outputs):
            lead = base if index == 0 else ("", "", "")
            rows.append((*lead, metric.name + ("" if metric.within_budget else "  <-- over budget"),
                         _number(metric.max_abs), _number(metric.max_rel),
                         _number(metric.cosine, ".6f")))
    rows = [tuple(printable(cell) for cell in row) for row in rows]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


_UNCHECKED = {Status.BUILT: "not run: nothing here runs it",
              Status.PREPARED: "not built: its toolchain is not here"}


def _marked(artifact: ArtifactResult) -> bool:
    return artifact.is_calibrated_on_generated and artifact.status == Status.PASS


def format_findings(report: Report) -> list[str]:
    """A few lines under the table: what the check rested on, the candidates of `-t cpu`,
    accuracy, and for each failed artifact where it diverges first and the command that
    reproduces it."""
    lines = _evidence_lines(report)
    for artifact in report.artifacts:
        lines.extend(_candidate_lines(artifact))
        if artifact.mixed_precision is not None:
            mixed = artifact.mixed_precision
            lines.append(f"{artifact.label}: {mixed.summary()}: "
                         + "; ".join(k.describe() for k in mixed.kept))
        if artifact.accuracy:
            lines.append(_accuracy_line(artifact))
        if artifact.decode is not None:
            verdict = "" if artifact.decode.within_budget else f" ({artifact.decode.note})"
            lines.append(f"{artifact.label}: decode: {artifact.decode.summary()}{verdict}")
        if artifact.checked_in and artifact.status in (Status.PASS, Status.FAIL):
            lines.append(f"{artifact.label}: checked in {artifact.checked_in}")
        lines.extend(_layer_lines(artifact))
        if artifact.status != Status.FAIL:
            continue
        localization = artifact.localization
        if localization is None:
            lines.extend(f"{artifact.label}: {note}" for note in artifact.notes
                         if note.startswith("not localised"))
            continue
        lines.append(f"{artifact.label}: {localization.summary()}")
        repro = localization.repro
        if repro is not None:
            label = "repro" if repro.reproduced else "repro (does not reproduce on its own)"
            lines.append(f"  {label}: {repro.command}")
    return [printable(line) for line in lines]


def _evidence_lines(report: Report) -> list[str]:
    samples = report.check.get("samples") or {}
    evaluation = samples.get("evaluation")
    if not evaluation:
        return []
    line = f"check: {evaluation['count']} sample(s), {evaluation['source']}"
    calibration = samples.get("calibration") or {}
    if calibration.get("count"):
        line += f"; calibration: {calibration['count']} other(s), {calibration['source']}"
    if samples.get("labels"):
        line += f"; labels: {samples['labels']}"
    lines = [line]
    if any(_marked(a) for a in report.artifacts):
        lines.append(f"{GENERATED_MARK} {NOT_EVIDENCE_HINT}")
    return lines


def _accuracy_line(artifact: ArtifactResult) -> str:
    accuracy = artifact.accuracy or {}
    verdict = "within" if accuracy.get("within_budget") else "OVER"
    allowed = accuracy.get("max_drop")
    return (f"{artifact.label}: top-1 accuracy {accuracy['artifact_top1']:.2f}% vs the "
            f"source's {accuracy['source_top1']:.2f}% on {accuracy['rows']} labelled rows "
            f"(drop {accuracy['drop']:.2f} points, {verdict} the "
            f"{allowed if allowed is not None else '-'} allowed)")


def _candidate_lines(artifact: ArtifactResult) -> list[str]:
    """`-t cpu`: one short line per candidate, the chosen one marked."""
    if not artifact.candidates:
        return []
    decoding = any(c.tokens_per_s is not None for c in artifact.candidates)
    what = ("decoding: tokens/s and time to first token" if decoding else "median latency")
    lines = [f"{artifact.label}: candidates ({what} on this machine, timed in turn, "
             "± the spread of the runs)"]
    for c in artifact.candidates:
        if c.tokens_per_s is not None and c.latency_ms is not None:
            timing = (f"{c.tokens_per_s:8.1f} tok/s (±{c.spread_ms or 0.0:.2f} ms/token), "
                      f"first {c.ttft_ms or 0.0:.1f} ms")
        elif c.latency_ms is not None:
            timing = f"{c.latency_ms:8.2f} ms ±{c.spread_ms or 0.0:<5.2f}"
        else:
            timing = "       - ms       "
        mark = "  <-- chosen" if c.chosen else ""
        detail = f"  {c.reason[:70]}" if c.reason else ""
        if c.accuracy_drop is not None:
            detail = f"  accuracy -{c.accuracy_drop:.2f} pts{detail}"
        if c.mixed:
            detail = f"  {c.mixed}{detail}"
        lines.append(f"  {c.target + ' ' + c.precision:<22} {c.status.value:<6} {timing}"
                     f"  max abs {_number(c.max_abs)}{mark}{detail}")
    lines += [f"  {note}" for note in artifact.notes[:1] if note.startswith("chose ")]
    return lines


def _layer_lines(artifact: ArtifactResult) -> list[str]:
    if not artifact.layer_analysis:
        return []
    lines = [f"{artifact.label}: layers that diverge most (the toolkit's own analysis)"]
    for row in artifact.layer_analysis[:5]:
        values = "  ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                           for key, value in row.items() if key not in ("layer", "op"))
        op = f" ({row['op']})" if row.get("op") else ""
        lines.append(f"  {row.get('layer', '?')}{op}  {values}")
    return lines


def _number(value: float | None, spec: str = ".2e") -> str:
    return "-" if value is None else format(value, spec)
