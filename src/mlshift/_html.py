"""HTML for notebooks: the ``_repr_html_`` of model versions, endpoints, plans and apply results.

Every value from a spec, a target or a user goes through :func:`html.escape` (names, tags,
descriptions and error details are text, never markup), and what may hold a secret is not
shown: tag values named like credentials, and the user and password of a URL. Only the
standard library is used, and only when a notebook asks for the HTML.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from mlshift.adapter import EndpointState, RolloutRecord, VariantState
    from mlshift.plan import ApplyResult, Plan
    from mlshift.specs.model import ModelVersion

__all__ = ["apply_result_html", "endpoint_html", "model_version_html", "plan_html", "rollout_record_html"]

#: Same rule as the plan's redaction: a value under such a name is not shown.
_SECRET_NAME = re.compile(r"token|secret|password|passwd|credential|api_?key", re.IGNORECASE)

_STATUS_COLOURS = {
    "healthy": "#1a7f37",
    "succeeded": "#1a7f37",
    "creating": "#9a6700",
    "running": "#9a6700",
    "promoting": "#9a6700",
    "unhealthy": "#bc4c00",
    "rolled_back": "#bc4c00",
    "interrupted": "#bc4c00",
    "failed": "#cf222e",
}

_STYLE = (
    "font-family:var(--jp-ui-font-family,system-ui,sans-serif);font-size:13px;"
    "border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;margin:4px 0;"
)
_CELL = "text-align:left;padding:2px 10px 2px 0;vertical-align:top"


def esc(value: Any) -> str:
    """``value`` as text safe inside HTML elements and attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def safe_url(url: str | None) -> str | None:
    """``url`` without a user or password in it."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(hidden)"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def safe_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with those under credential-like names shown as ``(hidden)``."""
    return {k: "(hidden)" if _SECRET_NAME.search(k) else v for k, v in values.items()}


def status(value: str | None) -> str:
    """A coloured status word."""
    colour = _STATUS_COLOURS.get(value or "", "#57606a")
    return f'<span style="color:{colour};font-weight:600">{esc(value or "unknown")}</span>'


def table(headers: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """A table; cells are HTML already (escape what goes in them)."""
    head = "".join(f'<th style="{_CELL}">{esc(h)}</th>' for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{cell}</td>' for cell in row) + "</tr>" for row in rows
    )
    return (
        f'<table style="border-collapse:collapse"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def fields(items: Iterable[tuple[str, str]]) -> str:
    """Label/value lines; values are HTML already. Empty values are left out."""
    rows = "".join(
        f'<tr><th style="{_CELL};color:#57606a;font-weight:normal">{esc(k)}</th>'
        f'<td style="{_CELL}">{v}</td></tr>'
        for k, v in items
        if v
    )
    return f'<table style="border-collapse:collapse">{rows}</table>' if rows else ""


def card(kind: str, title: str, *parts: str) -> str:
    """A bordered box: a kind label, a title (HTML), and the parts below it."""
    head = f'<div><span style="color:#57606a">{esc(kind)}</span> <b>{title}</b></div>'
    return f'<div style="{_STYLE}">{head}{"".join(parts)}</div>'


def _pairs(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{esc(k)}={esc(v)}" for k, v in safe_mapping(values).items())


def _weight(weight: int) -> str:
    bar = (
        f'<span style="display:inline-block;width:{max(0, min(weight, 100)) * 0.6:.0f}px;height:8px;'
        'background:#0969da;margin-right:6px"></span>'
    )
    return f"{bar}{weight}%"


def model_version_html(v: ModelVersion) -> str:
    """A model version: framework, digest, aliases, metrics, tags, signature."""
    signature = ""
    if v.signature is not None:
        signature = ", ".join(f"{esc(c.name or '?')}: {esc(c.dtype)}" for c in v.signature.inputs)
    return card(
        "model version",
        esc(f"{v.name}:{v.version}"),
        fields(
            [
                ("framework", esc(v.framework)),
                ("aliases", esc(", ".join(v.aliases))),
                ("metrics", ", ".join(f"{esc(k)}={val:g}" for k, val in v.metrics.items())),
                ("inputs", signature),
                ("tags", _pairs(v.tags)),
                ("description", esc(v.description)),
                ("digest", f"<code>{esc(v.digest[:19])}…</code>"),
                ("artifact", f"<code>{esc(safe_url(v.artifact_uri))}</code>"),
                ("created", esc(v.created_at.strftime("%Y-%m-%d %H:%M:%S %Z").strip())),
            ]
        ),
    )


def _variant_rows(variants: Iterable[VariantState], with_status: bool = True) -> list[list[str]]:
    rows = []
    for v in variants:
        row = [esc(v.name), esc(v.model), _weight(v.weight), esc(f"{v.compute.size} x{v.compute.replicas}")]
        if with_status:
            row += [status(v.status), esc(v.detail)]
        rows.append(row)
    return rows


def endpoint_html(state: EndpointState) -> str:
    """An endpoint: status, URL, and each variant's model, weight and health."""
    title = f"{esc(state.name)} {status(state.status)}"
    variants = (
        table(["variant", "model", "weight", "compute", "status", "detail"], _variant_rows(state.variants))
        if state.variants
        else "<div>no variants</div>"
    )
    scaling = ""
    if state.autoscaling is not None:
        a = state.autoscaling
        scaling = esc(f"{a.min_replicas} to {a.max_replicas} replicas")
    return card(
        "endpoint",
        title,
        fields(
            [
                ("url", f"<code>{esc(safe_url(state.url))}</code>" if state.url else ""),
                ("autoscaling", scaling),
                ("tags", _pairs(state.tags)),
            ]
        ),
        variants,
    )


_SIGNS = {
    "create_endpoint": "+",
    "add_variant": "+",
    "register_model": "+",
    "remove_variant": "-",
    "rollout": "&gt;",
    "recover_rollout": "!",
}


def plan_html(plan: Plan) -> str:
    """A plan: each action, grouped by the resource it changes, as the readable plan has them."""
    if plan.is_empty:
        return card("plan", esc(plan.target), "<div>No changes: the target matches the spec.</div>")
    rows = []
    for action in plan.actions:
        sign = _SIGNS.get(action.kind, "~")
        rows.append([f"<code>{sign}</code>", esc(action.resource), esc(action.describe())])
    return card(
        "plan",
        f"{esc(plan.target)}: {plan.changes} change(s)",
        table(["", "resource", "change"], rows),
    )


def apply_result_html(result: ApplyResult) -> str:
    """What an apply did: the plan, the models it registered, the endpoints as they are now."""
    models = "".join(model_version_html(m) for m in result.models)
    endpoints = "".join(endpoint_html(e) for e in result.endpoints.values())
    title = f"{esc(result.plan.target)}: " + (
        f"{result.plan.changes} change(s) applied" if result.changed else "nothing to change"
    )
    return card("apply", title, plan_html(result.plan) if result.changed else "", models, endpoints)


def rollout_record_html(record: RolloutRecord) -> str:
    """One change to an endpoint from its history: strategy, outcome, before and after, gate numbers."""

    def split(variants: Iterable[VariantState]) -> str:
        return esc(", ".join(f"{v.name}={v.model} {v.weight}%" for v in variants)) or "-"

    took = ""
    if record.finished_at is not None:
        took = esc(f"{(record.finished_at - record.started_at).total_seconds():.1f}s")
    measurements = ", ".join(f"{esc(k)}={val:.4g}" for k, val in record.measurements.items())
    steps = ""
    if record.steps:
        steps = "<ol style='margin:2px 0'>" + "".join(f"<li>{esc(s)}</li>" for s in record.steps) + "</ol>"
    return card(
        "rollout",
        f"{esc(record.endpoint)} · {esc(record.strategy)} {status(record.phase)}",
        fields(
            [
                ("id", f"<code>{esc(record.id)}</code>"),
                ("from", split(record.baseline)),
                ("to", split(record.target)),
                ("reason", esc(record.reason)),
                ("gate", measurements),
                ("started", esc(record.started_at.strftime("%Y-%m-%d %H:%M:%S"))),
                ("took", took),
                ("steps", steps),
            ]
        ),
    )
