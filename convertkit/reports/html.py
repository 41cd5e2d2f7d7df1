"""report.html: one self-contained page (inline CSS and SVG, no script, nothing fetched)
that opens offline: a summary table per artifact, error histograms, the error-by-depth
curve and the diverging node of a failed artifact.

It is rendered from the report's JSON form, so it always shows what report.json says.
"""

from __future__ import annotations

import html
import math
from typing import Any

from convertkit.reports.record import artifact_label
from convertkit.safe_text import printable

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#1d2329;max-width:1200px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid
#d6dbe0;padding-bottom:4px} h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px} th,td{border:1px solid #d6dbe0;padding:3px 8px;
text-align:left;vertical-align:top} th{background:#f1f3f5} td.num{text-align:right;
font-variant-numeric:tabular-nums;font-family:ui-monospace,Menlo,Consolas,monospace}
.pass{color:#137333;font-weight:600} .fail,.error{color:#b3261e;font-weight:600}
.built,.prepared{color:#8a5a00;font-weight:600} .over{background:#fde7e7}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px;background:#f6f8fa;
padding:1px 4px} pre{padding:8px;overflow-x:auto;white-space:pre-wrap}
.muted{color:#5f6b76} .charts{display:flex;flex-wrap:wrap;gap:16px}
.tokens{display:flex;flex-wrap:wrap;gap:3px;margin:4px 0} .tok{font-family:ui-monospace,
Menlo,Consolas,monospace;font-size:12px;border:1px solid #d6dbe0;border-radius:3px;padding:1px 4px;
text-align:center} .tok.same{background:#e6f4ea} .tok.tie{background:#fef7e0}
.tok.diff{background:#fde7e7} .tok small{display:block;color:#5f6b76;font-size:10px}
figure{margin:0} figcaption{font-size:12px;color:#5f6b76}
svg text{font:11px system-ui,Helvetica,Arial,sans-serif;fill:#3c4650}
"""


def escape(text: str) -> str:
    """``text`` for the page: HTML-escaped, with the control and bidi characters a name
    from the model may hold shown as escapes (safe_text.printable)."""
    return html.escape(printable(text))


def render_html(report: dict[str, Any]) -> str:
    command = report.get("command", "convert")
    status = report.get("status", "")
    source = report.get("source", {})
    title = f"convertkit {command}: {status}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>", f"<style>{_STYLE}</style></head><body>",
        f'<h1>convertkit {escape(command)}: <span class="{escape(status)}">'
        f"{escape(status)}</span></h1>",
        _header(report, source),
    ]
    if report.get("error"):
        error = report["error"]
        parts.append(f'<h2>Error</h2><p class="error">{escape(error.get("message", ""))}</p>'
                     f'<p>hint: {escape(error.get("hint", ""))}</p>')
    artifacts = report.get("artifacts", [])
    if artifacts:
        parts.append("<h2>Summary</h2>")
        parts.append(_summary_table(artifacts))
    budgets = report.get("check", {}).get("budgets")
    if budgets:
        parts.append(_budget_table(budgets, report.get("check", {}).get("budget_file")))
    for artifact in artifacts:
        parts.append(_artifact_section(artifact))
    parts.append(f'<p class="muted">convertkit {escape(str(report.get("convertkit_version", "")))}'
                 f', report schema {escape(str(report.get("schema", "")))}. Rule: '
                 f'{escape(str(report.get("check", {}).get("rule", "")))}</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _header(report: dict[str, Any], source: dict[str, Any]) -> str:
    rows = [("reference" if report.get("command") == "check" else "source",
             source.get("text", ""))]
    candidate = report.get("check", {}).get("candidate")
    if candidate:
        rows.append(("candidate", candidate.get("text", "")))
    for key, label in (("framework", "framework"), ("exporter", "exporter")):
        if source.get(key):
            rows.append((label, source[key]))
    check = report.get("check", {})
    if check.get("inputs"):
        rows.append(("check inputs", check["inputs"]))
    samples = check.get("samples") or {}
    if samples.get("labels"):
        rows.append(("labels", samples["labels"]))
    rows.append(("exit code", str(report.get("exit_code", ""))))
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    return f'<table class="meta">{body}</table>'


_SUMMARY_COLUMNS = ("target", "status", "precision", "samples", "budget", "output", "max abs",
                    "max rel", "mean abs", "min cosine", "SNR dB", "mismatch", "top-1",
                    "top-5")


def _summary_table(artifacts: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in _SUMMARY_COLUMNS)
    rows = []
    for artifact in artifacts:
        status = artifact.get("status", "")
        shown = status
        calibration = artifact.get("calibration")
        if calibration and not calibration.get("real") and status == "pass":
            shown = "pass (calibrated on generated inputs: a smoke test)"
        budget = artifact.get("budget")
        budget_text = f"atol {budget['atol']:g}, rtol {budget['rtol']:g}" if budget else "-"
        if budget and budget.get("min_cosine") is not None:
            budget_text += f", or cosine {budget['min_cosine']:g}"
        lead = (f"<td>{escape(_label(artifact))}</td>"
                f'<td class="{escape(status)}">{escape(shown)}</td>'
                f"<td>{escape(artifact.get('precision') or '-')}</td>"
                f"<td class=\"num\">{escape(str(artifact.get('samples') or '-'))}</td>"
                f"<td>{escape(budget_text)}</td>")
        metrics = artifact.get("metrics") or {}
        if not metrics:
            detail = (artifact.get("error") or {}).get("message") or "; ".join(
                artifact.get("notes") or []) or "-"
            rows.append(f"<tr>{lead}<td colspan=\"9\">{escape(detail)}</td></tr>")
            continue
        for index, (name, m) in enumerate(metrics.items()):
            cells = lead if index == 0 else '<td colspan="5"></td>'
            over = "" if m.get("within_budget") else ' class="over"'
            rows.append(
                f"<tr{over}>{cells}<td>{escape(name)}"
                + ("" if m.get("within_budget") else " &larr; over budget") + "</td>"
                + "".join(f'<td class="num">{v}</td>' for v in (
                    _num(m.get("max_abs")), _num(m.get("max_rel")), _num(m.get("mean_abs")),
                    _num(m.get("cosine"), ".6f"), _snr(m), _percent(m.get("mismatch_fraction")),
                    _num(m.get("top1_agreement"), ".3f"), _num(m.get("top5_agreement"), ".3f")))
                + "</tr>")
    return (f'<table id="summary"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _budget_table(budgets: dict[str, dict[str, float]], budget_file: str | None) -> str:
    keys = ("atol", "rtol", "min_cosine", "min_top1", "min_top5", "max_accuracy_drop")
    rows = "".join(
        f"<tr><td>{escape(p)}</td>"
        + "".join(f'<td class="num">{_num(b.get(key), "g")}</td>' for key in keys) + "</tr>"
        for p, b in budgets.items())
    origin = f" (defaults, with {escape(budget_file)} on top)" if budget_file else " (defaults)"
    head = "".join(f"<th>{escape(key)}</th>" for key in ("precision", *keys))
    return (f"<h3>Budgets per precision{origin}</h3><p class=\"muted\">An output passes "
            "elementwise (atol, rtol) or, where a precision has a cosine floor, as a whole "
            "(cosine, norm, top-k); with labels, accuracy may drop at most max_accuracy_drop "
            f"points.</p><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")


def _artifact_section(artifact: dict[str, Any]) -> str:
    target = _label(artifact)
    status = artifact.get("status", "")
    parts = [f'<h2>{escape(target)} <span class="{escape(status)}">{escape(status)}</span></h2>']
    if artifact.get("path"):
        parts.append(f"<p>artifact: <code>{escape(artifact['path'])}</code></p>")
    if artifact.get("checked_in"):
        parts.append(f"<p>checked in {escape(artifact['checked_in'])}</p>")
    accuracy = artifact.get("accuracy")
    if accuracy:
        verdict = "within" if accuracy.get("within_budget") else "over"
        parts.append(
            f"<p>top-1 accuracy on {accuracy['rows']} labelled rows ({escape(accuracy['output'])}):"
            f" artifact {accuracy['artifact_top1']:.2f}%, source {accuracy['source_top1']:.2f}%,"
            f' drop <span class="{"pass" if verdict == "within" else "fail"}">'
            f"{accuracy['drop']:.2f} points</span>, {verdict} the {accuracy.get('max_drop')} "
            "allowed</p>")
    calibration = artifact.get("calibration")
    if calibration:
        parts.append(f"<p>calibrated on {calibration['count']} sample(s), "
                     f"{escape(str(calibration['source']))}"
                     + ("" if calibration.get("real") else
                        ": generated inputs, a smoke test and not evidence") + "</p>")
    if artifact.get("mixed_precision"):
        parts.append(_mixed_precision_section(artifact["mixed_precision"]))
    if artifact.get("decode"):
        parts.append(_decode_section(artifact["decode"]))
    if artifact.get("error"):
        error = artifact["error"]
        parts.append(f'<p class="error">{escape(error.get("message", ""))}</p>'
                     f"<p>hint: {escape(error.get('hint', ''))}</p>")
    charts = []
    for name, metric in (artifact.get("metrics") or {}).items():
        histogram = metric.get("error_histogram")
        if histogram:
            charts.append(f"<figure>{_histogram_svg(histogram, artifact.get('budget'))}"
                          f"<figcaption>{escape(name)}: elements per absolute error"
                          f"</figcaption></figure>")
        if metric.get("note"):
            parts.append(f"<p>{escape(name)}: {escape(metric['note'])}</p>")
    if charts:
        parts.append(f'<h3>Error histograms</h3><div class="charts">{"".join(charts)}</div>')
    localization = artifact.get("localization")
    if localization:
        parts.append(_localization_section(localization))
    if artifact.get("layer_analysis"):
        parts.append(_layer_analysis_section(artifact["layer_analysis"]))
    notes = artifact.get("notes") or []
    if notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes)
                     + "</ul>")
    return "\n".join(parts)


def _mixed_precision_section(mixed: dict[str, Any]) -> str:
    """The nodes an int8 build keeps in fp32 (mixed_precision.py), one row each."""
    rows = "".join(
        f"<tr><td><code>{escape(node['name'])}</code></td><td>{escape(node['op'])}</td>"
        f"<td>{'-' if node.get('loss_db') is None else format(node['loss_db'], '.1f')}</td>"
        f"<td>{node.get('macs', 0):,}</td>"
        f"<td>{escape(_source(node.get('source')))}</td></tr>"
        for node in mixed.get("kept", []))
    pure = (f"<p>pure int8: {escape(mixed['pure_int8'])}</p>" if mixed.get("pure_int8")
            else "")
    return (f"<h3>Mixed precision</h3><p>{escape(mixed.get('summary', ''))}, found in "
            f"{mixed.get('builds')} build(s); the backend's own override in "
            f"<code>{escape(mixed.get('override_file', ''))}</code></p>{pure}"
            "<table><thead><tr><th>kept node</th><th>op</th><th>SQNR lost (dB)</th>"
            f"<th>MACs</th><th>source</th></tr></thead><tbody>{rows}</tbody></table>")


def _decode_section(decode: dict[str, Any]) -> str:
    """The token-by-token check (checker/decode.py): one cell per step, the artifact's
    token over the reference's, and the cosine of the step's logits."""
    reference = decode.get("reference_tokens", [])
    tokens = decode.get("tokens", [])
    cosines = decode.get("step_cosines", [])
    cells = []
    for step, want in enumerate(reference):
        got = tokens[step] if step < len(tokens) else None
        cosine = cosines[step] if step < len(cosines) else None
        kind = "same" if got == want else "diff"
        title = (f"step {step + 1}: artifact {got}, reference {want}, logits cosine "
                 f"{'-' if cosine is None else format(cosine, '.6f')}")
        shown = str(got) if got == want else f"{got}&#8800;{want}"
        cells.append(f'<span class="tok {kind}" title="{escape(title)}">{shown}'
                     f"<small>{'-' if cosine is None else format(cosine, '.4f')}</small>"
                     "</span>")
    verdict = ("within" if decode.get("within_budget") else
               f"over ({escape(str(decode.get('note', '')))})")
    return (f"<h3>Decode, token by token</h3><p>{escape(decode.get('summary', ''))}: "
            f"{verdict} the budget (at least {_percent(decode.get('min_token_match'))} of "
            f"tokens identical, logits within the precision's budget at every step). The "
            f"artifact decoded {decode.get('steps')} steps after a "
            f"{decode.get('prompt_tokens')}-token prompt with its own cache, fed the "
            "reference's tokens; each cell: its token (reference's after &#8800; where it "
            f"differs) over the step's logits cosine.</p>"
            f'<div class="tokens">{"".join(cells)}</div>')


def _label(artifact: dict[str, Any]) -> str:
    return artifact_label(artifact.get("target", ""), artifact.get("component"))


def _source(source: dict[str, Any] | None) -> str:
    return str((source or {}).get("text") or "")


def _layer_analysis_section(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))

    def cell(value: Any) -> str:
        return escape(_num(value) if isinstance(value, float) else str(value))

    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(row.get(c, ''))}</td>" for c in columns)
                   + "</tr>" for row in rows)
    return ("<h3>Layers that diverge most (the toolkit's own per-layer analysis)</h3>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def _localization_section(loc: dict[str, Any]) -> str:
    parts = ["<h3>Localisation</h3>",
             f"<p>Reference intermediates: <code>{escape(loc.get('reference', ''))}</code>; "
             f"candidate: <code>{escape(loc.get('candidate', ''))}</code>. Compared "
             f"{loc.get('compared', 0)} tensors present in both; "
             f"{loc.get('only_in_reference', 0)} only in the reference, "
             f"{loc.get('only_in_candidate', 0)} only in the candidate (not compared).</p>",
             f'<p id="diverging"><strong>{escape(loc.get("summary", ""))}</strong></p>']
    node = loc.get("node")
    if node:
        before, after = node.get("error_before") or {}, node.get("error_after") or {}
        source = node.get("source") or {}
        rows = [
            ("node", node.get("name")), ("op type", node.get("op_type")),
            ("step", f"{node.get('step', 0) + 1} of {loc.get('node_count')}"),
            ("output", node.get("output")), ("inputs", ", ".join(node.get("inputs") or [])),
            ("error before (max abs)", _num(before.get("max_abs")) +
             (f" on {before['tensor']}" if before.get("tensor") else "")),
            ("error after (max abs / max rel)",
             f"{_num(after.get('max_abs'))} / {_num(after.get('max_rel'))}"),
            ("error after / budget", _ratio(after.get("budget_ratio"))),
            ("source", source.get("text") or "not recorded by the exporter"),
        ]
        fused = node.get("fused_with") or []
        if fused:
            rows.append(("fused in the candidate with", ", ".join(
                f"{f['op_type']} '{f['name']}'" for f in fused)
                + " (their outputs exist in the reference only)"))
        for constant in node.get("differing_constants") or []:
            rows.append(("differing weight", f"{constant['name']} (max abs "
                                             f"{_num(constant.get('max_abs'))})"))
        parts.append("<table>" + "".join(
            f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
            + "</table>")
    curve = loc.get("curve") or []
    if curve:
        parts.append("<figure>" + _curve_svg(curve, loc.get("node_count") or 1,
                                             node.get("step") if node else None)
                     + "<figcaption>Error by depth: each compared tensor's worst error as a "
                       "multiple of its budget (log scale; above the red line is outside the "
                       "budget), in the reference's topological order.</figcaption></figure>")
    repro = loc.get("repro")
    if repro:
        verdict = ("reproduces the mismatch" if repro.get("reproduced") else
                   f"does not reproduce it alone: {repro.get('note', '')}")
        parts.append(f"<p>Minimal repro in <code>{escape(repro['folder'])}</code> "
                     f"({escape(verdict)}):</p><pre>{escape(repro['command'])}</pre>")
    notes = loc.get("notes") or []
    if notes:
        parts.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
    return "\n".join(parts)


def _histogram_svg(histogram: dict[str, Any], budget: dict[str, float] | None) -> str:
    edges = histogram.get("upper_edges") or []
    counts = histogram.get("counts") or []
    width, height, left, bottom, top = 360, 170, 34, 34, 10
    bar_area = width - left - 8
    bar_width = bar_area / max(len(counts), 1)
    peak = max(counts) if counts and max(counts) > 0 else 1
    elements = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                f'role="img" aria-label="error histogram">',
                f'<line x1="{left}" y1="{height - bottom}" x2="{width - 8}" '
                f'y2="{height - bottom}" stroke="#8a949e"/>']
    atol = budget.get("atol") if budget else None
    for index, count in enumerate(counts):
        upper = edges[index] if index < len(edges) else None
        scaled = (height - bottom - top) * (math.log10(count + 1) / math.log10(peak + 1))
        x = left + index * bar_width
        over = upper is None or (atol is not None and index > 0 and edges[index - 1] >= atol)
        colour = "#d93025" if over and count else "#1a73e8"
        elements.append(f'<rect x="{x + 1:.1f}" y="{height - bottom - scaled:.1f}" '
                        f'width="{bar_width - 2:.1f}" height="{scaled:.1f}" fill="{colour}">'
                        f"<title>{escape(_bin_label(edges, index))}: {count}</title></rect>")
        if index % 2 == 0 or index == len(counts) - 1:
            elements.append(f'<text x="{x + bar_width / 2:.1f}" y="{height - bottom + 13}" '
                            f'text-anchor="middle">{escape(_short_edge(upper, index))}</text>')
    elements.append(f'<text x="{left}" y="{height - 6}">|error| upper edge (count on a log '
                    f"scale; peak {peak})</text>")
    elements.append("</svg>")
    return "".join(elements)


def _curve_svg(curve: list[dict[str, Any]], node_count: int, diverging_step: int | None) -> str:
    width, height, left, right, top, bottom = 720, 240, 46, 12, 12, 30
    low, high = -8.0, 4.0  # log10 of error/budget shown

    def x_of(step: int) -> float:
        return left + (width - left - right) * (step / max(node_count - 1, 1))

    def y_of(ratio: float | None) -> float:
        value = high if ratio is None else (low if ratio <= 0 else
                                            min(max(math.log10(ratio), low), high))
        return top + (height - top - bottom) * (high - value) / (high - low)

    elements = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                f'role="img" aria-label="error by depth">']
    for exponent in range(int(low), int(high) + 1, 2):
        y = y_of(10.0 ** exponent)
        elements.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" '
                        f'stroke="#eceff1"/><text x="{left - 4}" y="{y + 4:.1f}" '
                        f'text-anchor="end">1e{exponent}</text>')
    budget_y = y_of(1.0)
    elements.append(f'<line x1="{left}" y1="{budget_y:.1f}" x2="{width - right}" '
                    f'y2="{budget_y:.1f}" stroke="#d93025" stroke-dasharray="4 3"/>')
    if diverging_step is not None:
        x = x_of(diverging_step)
        elements.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" '
                        f'stroke="#d93025" stroke-width="1.5"/>')
    points = " ".join(f"{x_of(p['step']):.1f},{y_of(p.get('budget_ratio')):.1f}" for p in curve)
    elements.append(f'<polyline points="{points}" fill="none" stroke="#1a73e8" '
                    f'stroke-width="1.2"/>')
    for point in curve:
        colour = "#1a73e8" if point.get("within_budget") else "#d93025"
        elements.append(
            f'<circle cx="{x_of(point["step"]):.1f}" cy="{y_of(point.get("budget_ratio")):.1f}" '
            f'r="2.2" fill="{colour}"><title>{escape(point.get("node", ""))} '
            f'({escape(point.get("op_type", ""))}) {escape(point.get("tensor", ""))}: max abs '
            f'{_num(point.get("max_abs"))}, {_ratio(point.get("budget_ratio"))} of budget'
            f"</title></circle>")
    elements.append(f'<text x="{left}" y="{height - 8}">node step 1 .. {node_count}</text>')
    elements.append("</svg>")
    return "".join(elements)


def _bin_label(edges: list[float | None], index: int) -> str:
    upper = edges[index] if index < len(edges) else None
    if index == 0:
        return "exactly 0"
    lower = edges[index - 1]
    return f"({lower:g}, {upper:g}]" if upper is not None else f"> {lower:g} (or NaN/Inf)"


def _short_edge(upper: float | None, index: int) -> str:
    if index == 0:
        return "0"
    if upper is None:
        return "inf"
    return f"1e{round(math.log10(upper))}"


def _num(value: Any, spec: str = ".2e") -> str:
    return "-" if value is None else format(value, spec)


def _snr(metric: dict[str, Any]) -> str:
    if metric.get("snr_db") is None:
        return "inf" if metric.get("max_abs") == 0 else "-"
    return f"{metric['snr_db']:.1f}"


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _ratio(value: Any) -> str:
    return "inf" if value is None else f"{value:.3g}x"
