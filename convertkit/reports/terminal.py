"""The terminal view of a report: a table with one row per artifact output, then a few
lines per artifact that needs them (the `-t cpu` candidates, where a failed one diverges
first, the toolkit's worst layers)."""

from __future__ import annotations

from convertkit.reports.record import ArtifactResult, Report
from convertkit.spec import Status


def format_table(report: Report) -> str:
    """The terminal view: one row per artifact output."""
    header = ("target", "status", "precision", "output", "max abs", "max rel", "cosine")
    rows: list[tuple[str, ...]] = []
    for artifact in report.artifacts:
        base = (artifact.target, artifact.status.value, artifact.precision or "-")
        if not artifact.outputs:
            detail = artifact.error["message"] if artifact.error else _UNCHECKED.get(
                artifact.status, "")
            rows.append((*base, detail[:60] or "-", "-", "-", "-"))
        for index, metric in enumerate(artifact.outputs):
            lead = base if index == 0 else ("", "", "")
            rows.append((*lead, metric.name + ("" if metric.within_budget else "  <-- over budget"),
                         _number(metric.max_abs), _number(metric.max_rel),
                         _number(metric.cosine, ".6f")))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


_UNCHECKED = {Status.BUILT: "not run: nothing here runs it",
              Status.PREPARED: "not built: its toolchain is not here"}


def format_findings(report: Report) -> list[str]:
    """A few lines under the table for each failed artifact: where it diverges first and
    the command that reproduces it."""
    lines = []
    for artifact in report.artifacts:
        lines.extend(_candidate_lines(artifact))
        if artifact.checked_in and artifact.status in (Status.PASS, Status.FAIL):
            lines.append(f"{artifact.target}: checked in {artifact.checked_in}")
        lines.extend(_layer_lines(artifact))
        if artifact.status != Status.FAIL:
            continue
        localization = artifact.localization
        if localization is None:
            lines.extend(f"{artifact.target}: {note}" for note in artifact.notes
                         if note.startswith("not localised"))
            continue
        lines.append(f"{artifact.target}: {localization.summary()}")
        repro = localization.repro
        if repro is not None:
            label = "repro" if repro.reproduced else "repro (does not reproduce on its own)"
            lines.append(f"  {label}: {repro.command}")
    return lines


def _candidate_lines(artifact: ArtifactResult) -> list[str]:
    """`-t cpu`: one short line per candidate, the chosen one marked."""
    if not artifact.candidates:
        return []
    lines = [f"{artifact.target}: candidates (median latency on this machine)"]
    for c in artifact.candidates:
        timing = f"{c.latency_ms:8.2f} ms" if c.latency_ms is not None else "       - ms"
        mark = "  <-- chosen" if c.chosen else ""
        detail = f"  {c.reason[:70]}" if c.reason else ""
        lines.append(f"  {c.target + ' ' + c.precision:<22} {c.status.value:<6} {timing}"
                     f"  max abs {_number(c.max_abs)}{mark}{detail}")
    return lines


def _layer_lines(artifact: ArtifactResult) -> list[str]:
    if not artifact.layer_analysis:
        return []
    lines = [f"{artifact.target}: layers that diverge most (the toolkit's own analysis)"]
    for row in artifact.layer_analysis[:5]:
        values = "  ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                           for key, value in row.items() if key not in ("layer", "op"))
        op = f" ({row['op']})" if row.get("op") else ""
        lines.append(f"  {row.get('layer', '?')}{op}  {values}")
    return lines


def _number(value: float | None, spec: str = ".2e") -> str:
    return "-" if value is None else format(value, spec)
