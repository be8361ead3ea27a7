"""A drift report as one self-contained HTML page: no scripts, no external files."""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from mlshift.monitoring._drift import DriftReport, FeatureDrift

if TYPE_CHECKING:
    from mlshift.monitoring._quality import ModelQuality

__all__ = ["render_html"]

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:960px;color:#222}
table{border-collapse:collapse;width:100%;margin:1rem 0}
th,td{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.drift{color:#b00020;font-weight:600}.ok{color:#1b5e20}
figure{margin:1.5rem 0}figcaption{font-weight:600;margin-bottom:.25rem}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 1rem;vertical-align:middle}
"""
_BASE, _WINDOW = "#90a4ae", "#e65100"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _chart(feature: FeatureDrift) -> str:
    """Baseline and window shares per bin, side by side, as inline SVG."""
    n = len(feature.bins)
    if not n:
        return ""
    top = max((*feature.baseline_shares, *feature.window_shares, 1e-9))
    width, height, pad = 900, 220, 30
    slot = (width - 2 * pad) / n
    bar = slot * 0.38
    parts = [f'<svg viewBox="0 0 {width} {height + 70}" width="100%" role="img">']
    for i, (label, base, window) in enumerate(
        zip(feature.bins, feature.baseline_shares, feature.window_shares, strict=True)
    ):
        x = pad + i * slot + slot * 0.1
        for offset, share, colour, who in ((0.0, base, _BASE, "baseline"), (bar, window, _WINDOW, "window")):
            h = height * share / top
            parts.append(
                f'<rect x="{x + offset:.1f}" y="{height - h + 10:.1f}" width="{bar:.1f}" height="{h:.1f}"'
                f' fill="{colour}"><title>{html.escape(label)} — {who} {share:.1%}</title></rect>'
            )
        parts.append(
            f'<text x="{x + bar:.1f}" y="{height + 28}" font-size="11" text-anchor="end"'
            f' transform="rotate(-30 {x + bar:.1f} {height + 28})">{html.escape(label[:24])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _quality_section(quality: ModelQuality | None) -> str:
    if quality is None:
        return ""
    if not quality.judged:
        verdict = f"<p>Model quality ({quality.metric}): {html.escape(quality.note or 'not judged')}.</p>"
    else:
        css = "drift" if quality.degraded else "ok"
        state = "degraded" if quality.degraded else "ok"
        verdict = (
            f'<p class="{css}">Model quality ({quality.metric}) {state}: {_number(quality.value)} on '
            f"{quality.labelled_rows} labelled rows ({quality.labelled_requests} requests)"
            + (f" — {html.escape(quality.note)}" if quality.note else "")
            + ".</p>"
        )
    return (
        "<h2>Model quality</h2>" + verdict + "<table><thead><tr><th>metric</th><th>value</th>"
        "<th>threshold</th><th>reference</th><th>max drop</th><th>labelled rows</th></tr></thead><tbody>"
        f'<tr><td>{quality.metric}</td><td class="num">{_number(quality.value)}</td>'
        f'<td class="num">{_number(quality.threshold)}</td><td class="num">{_number(quality.reference)}</td>'
        f'<td class="num">{_number(quality.max_drop)}</td><td class="num">{quality.labelled_rows}</td></tr>'
        "</tbody></table>"
    )


def render_html(
    report: DriftReport,
    *,
    title: str = "Drift report",
    generated: datetime | None = None,
    model_quality: ModelQuality | None = None,
) -> str:
    """The report as a self-contained HTML page: a table of every feature, then a chart of the
    baseline's and the window's distribution for each drifted feature (every feature when none
    drifted).

    Args:
        report: What :func:`drift_report` returned.
        title: The page's heading (e.g. the endpoint and the window).
        generated: The time to print (default: now, UTC).
        model_quality: A monitor run's model quality, shown above the features when given.
    """
    when = (generated or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M:%S %Z")
    drifted = report.drifted
    verdict = (
        f'<p class="drift">{len(drifted)} of {len(report.features)} features drifted: '
        f"{html.escape(', '.join(drifted))}</p>"
        if drifted
        else f'<p class="ok">No drift in {len(report.features)} features.</p>'
    )
    rows = []
    for f in report.features:
        state = "drifted" if f.drifted else ("not judged" if f.value is None else "ok")
        css = "drift" if f.drifted else "ok"
        rows.append(
            "<tr>"
            f"<td>{html.escape(f.feature)}</td><td>{f.kind}</td><td>{f.statistic}</td>"
            f'<td class="num">{_number(f.value)}</td><td class="num">{_number(f.threshold)}</td>'
            f'<td class="{css}">{state}</td>'
            f'<td class="num">{f.missing_rate:.1%}'
            f" <small>(baseline {f.baseline_missing_rate:.1%})</small></td>"
            f'<td class="num">{f.out_of_range:.1%}</td><td class="num">{f.wrong_type}</td>'
            f"<td>{html.escape(f.note or '')}</td>"
            "</tr>"
        )
    shown = [f for f in report.features if f.drifted] or list(report.features)
    charts = [
        f"<figure><figcaption>{html.escape(f.feature)} — {f.statistic} {_number(f.value)}"
        f" (threshold {_number(f.threshold)})</figcaption>{_chart(f)}</figure>"
        for f in shown
        if f.bins
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{report.rows} rows in the window · generated {when}</p>"
        f"{verdict}{_quality_section(model_quality)}"
        "<table><thead><tr><th>feature</th><th>kind</th><th>statistic</th><th>value</th>"
        "<th>threshold</th><th>verdict</th><th>missing</th><th>out of range</th><th>wrong type</th>"
        "<th>note</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        f'<p class="legend"><span style="background:{_BASE}"></span>baseline'
        f'<span style="background:{_WINDOW}"></span>window</p>' + "".join(charts) + "</body></html>\n"
    )
