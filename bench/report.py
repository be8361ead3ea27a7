"""Targets and docs/performance.md, both computed from a results dict (bench/results/latest.json)."""

from __future__ import annotations

from typing import Any

from common import ratio

CONFIG_LABELS = {
    "c2_r1": "2 conns, 1 row",
    "c2_r100": "2 conns, 100 rows",
    "c16_r1": "16 conns, 1 row",
    "c16_r100": "16 conns, 100 rows",
}
SERVER_LABELS = {
    "mlshift": "`mlshift serve`",
    "mlflow": "`mlflow models serve`",
    "starlette-ceiling": "bare Starlette (ceiling)",
}


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:,.{digits}f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text}{unit}"


def _target(name: str, goal: str, measured: str, ok: bool | None, why: str = "") -> dict[str, Any]:
    status = "not measured" if ok is None else ("pass" if ok else "MISS")
    return {"target": name, "goal": goal, "measured": measured, "status": status, "note": why}


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target from the issue, with the measured value and pass / MISS / not measured."""
    out: list[dict[str, Any]] = []
    serving = results.get("serving") or {}
    ratios = serving.get("ratios", {})
    vs_mlflow, vs_ceiling = ratios.get("vs_mlflow"), ratios.get("vs_ceiling")
    bound = ratios.get("ceiling_vs_mlflow") or {}
    no_mlflow = "mlflow was not measured in this run"
    for cfg in ("c16_r1", "c16_r100"):
        r = vs_mlflow[cfg]["rps"] if vs_mlflow else None
        ceiling = bound.get(cfg, {}).get("rps")
        note = f"the no-validation ceiling: {ceiling:.1f}x" if ceiling else ""
        out.append(
            _target(
                f"serving req/s vs mlflow ({CONFIG_LABELS[cfg]})",
                ">= 20x",
                _fmt(r, "x"),
                None if r is None else r >= 20,
                note if vs_mlflow else no_mlflow,
            )
        )
    for cfg in CONFIG_LABELS:
        r = vs_mlflow[cfg]["p99"] if vs_mlflow else None
        out.append(
            _target(
                f"serving p99 vs mlflow ({CONFIG_LABELS[cfg]})",
                "<= 0.10x",
                _fmt(r, "x", 3),
                None if r is None else r <= 0.10,
                "" if vs_mlflow else no_mlflow,
            )
        )
    r = vs_mlflow["cold_start"] if vs_mlflow else None
    out.append(
        _target(
            "serving cold start vs mlflow (launch to first 200)",
            "<= 0.33x",
            _fmt(r, "x", 3),
            None if r is None else r <= 1 / 3,
            "" if vs_mlflow else no_mlflow,
        )
    )
    for cfg in CONFIG_LABELS:
        r = vs_ceiling[cfg]["rps"] if vs_ceiling else None
        out.append(
            _target(
                f"serving req/s vs bare Starlette ceiling ({CONFIG_LABELS[cfg]}), validation on",
                ">= 0.80x",
                _fmt(r, "x", 2),
                None if r is None else r >= 0.80,
            )
        )
    out += _batching_targets(results.get("batching"))
    out += _peer_targets(results.get("peers"))
    out += _router_targets(results.get("router"))
    out += _workers_targets(results.get("workers"))
    startup = results.get("startup") or {}
    r = startup.get("import_ratio_vs_aiplatform")
    out.append(
        _target(
            "`import mlshift` vs `from google.cloud import aiplatform`",
            ">= 20x faster",
            _fmt(r, "x"),
            None if r is None else r >= 20,
            "" if r is not None or not startup else "google-cloud-aiplatform not installed",
        )
    )
    ours = (startup.get("imports") or {}).get("mlshift", {}).get("median_ms")
    ok = None if ours is None else ours <= 100
    out.append(_target("`import mlshift`", "<= 100 ms", _fmt(ours, " ms"), ok))
    cli = startup.get("cli_help_ms")
    ok = None if cli is None else cli <= 300
    out.append(_target("`mlshift --help` wall time", "<= 300 ms", _fmt(cli, " ms"), ok))
    out += _pipelines_targets(results.get("pipelines"))
    out += _image_targets(results.get("image") or {})
    out += _cloud_calls_targets(results.get("cloud_calls") or {})
    out += _capture_targets(results.get("capture") or {})
    reapply = results.get("reapply") or {}
    for target, row in reapply.items():
        again = row["reapply"]
        calls, stored, uploaded = again["mutating_calls"], again["bytes_stored"], again["bytes_uploaded"]
        out.append(
            _target(
                f"unchanged re-apply on `{target}`",
                "0 mutating calls, 0 bytes",
                f"{calls} mutating calls, {uploaded} B uploaded, {_fmt(stored, ' B')} stored",
                None if stored is None else (calls == 0 and stored == 0 and uploaded == 0),
            )
        )
    shadow = results.get("shadow") or {}
    r = shadow.get("p99_ratio")
    busy = _busy(shadow)
    out.append(
        _target(
            f"callers' p99 with {shadow.get('percent_mirrored', 100)}% mirrored to a shadow (local router)",
            "<= 1.10x",
            _fmt(r, "x", 2),
            None if r is None else r <= 1.10,
            "" if busy is None else f"on a busy machine, load average {busy}: see Shadow traffic",
        )
    )
    return out


def _pipelines_targets(pipelines: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The 500-step compile targets: mlshift's own IR, and the same KFP document, vs kfp."""
    pipelines = pipelines or {}
    out: list[dict[str, Any]] = []
    row = (pipelines.get("sizes") or {}).get("500", {})
    r = row.get("speedup_first")
    note = ""
    if pipelines.get("status", "").startswith("not measured"):
        note = pipelines["status"]
    elif pipelines and r is None:
        note = "; ".join(pipelines.get("notes", [])) or "kfp not measured"
    out.append(
        _target(
            "500-step pipeline define + compile vs kfp",
            ">= 2x faster",
            _fmt(r, "x"),
            None if r is None else r >= 2,
            note,
        )
    )
    # Like for like: mlshift compiling to the same KFP PipelineSpec kfp writes (what Vertex AI
    # and Kubeflow run), not to its own IR.
    r = row.get("speedup_first_kfp_ir")
    if pipelines and r is None and not note:
        note = (
            "mlshift-kfp not measured (mlshift.pipelines.kfp missing)" if "kfp" in row else "kfp not measured"
        )
    out.append(
        _target(
            "500-step pipeline compiled to KFP IR vs kfp (same document)",
            ">= 2x faster",
            _fmt(r, "x"),
            None if r is None else r >= 2,
            note,
        )
    )
    return out


def _batching_targets(batching: dict[str, Any] | None) -> list[dict[str, Any]]:
    batching = batching or {}
    ratios = batching.get("ratios", {})
    why = "" if batching else "the batching benchmark did not run"
    r = ratios.get("rps_on_vs_off")
    out = [
        _target(
            "req/s with batching on vs off (64 conns, 1 row)",
            ">= 1.3x",
            _fmt(r, "x", 2),
            None if r is None else r >= 1.3,
            why,
        )
    ]
    on = (batching.get("configs") or {}).get("on", {}).get("p99_ms")
    budget = ratios.get("p99_budget_ms")
    limit = batching.get("max_latency_ms")
    out.append(
        _target(
            "p99 with batching on (64 conns, 1 row)",
            "<= max_latency_ms + unbatched p99",
            f"{_fmt(on, ' ms', 2)} (budget {_fmt(budget, ' ms', 2)}, max_latency_ms {_fmt(limit)})",
            None if on is None or budget is None else on <= budget,
            why,
        )
    )
    return out


def _peer_targets(peers: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Issue 17: ahead of the best peer (MLServer, BentoML) in that peer's best configuration."""
    peers = peers or {}
    best = peers.get("best_peer")
    r = (peers.get("ratios") or {}).get(best or "", {})
    why = "" if best else "; ".join(peers.get("notes", [])) or "the peers benchmark did not run"
    label = f"best peer: {best}" if best else ""
    return [
        _target("req/s vs the best peer (16 conns, 1 row)", ">= 2x", _fmt(r.get("rps"), "x", 2),
                None if r.get("rps") is None else r["rps"] >= 2, label or why),
        _target("p99 vs the best peer (16 conns, 1 row)", "<= 0.5x", _fmt(r.get("p99"), "x", 3),
                None if r.get("p99") is None else r["p99"] <= 0.5, label or why),
        _target("cold start vs the best peer (launch to first 200)", "<= 1x",
                _fmt(r.get("cold_start"), "x", 3),
                None if r.get("cold_start") is None else r["cold_start"] <= 1, label or why),
    ]  # fmt: skip


def _router_targets(router: dict[str, Any] | None) -> list[dict[str, Any]]:
    router = router or {}
    ratios = router.get("ratios", {})
    why = "" if router else "the router benchmark did not run"
    r, added = ratios.get("rps_router_vs_direct"), ratios.get("p99_added_ms")
    return [
        _target("req/s through the local router vs the variant's own URL (16 conns, 1 row)", ">= 0.85x",
                _fmt(r, "x", 2), None if r is None else r >= 0.85, why),
        _target("p99 added by the local router (16 conns, 1 row)", "<= +1 ms", _fmt(added, " ms", 2),
                None if added is None else added <= 1.0, why),
    ]  # fmt: skip


def _workers_targets(workers: dict[str, Any] | None) -> list[dict[str, Any]]:
    workers = workers or {}
    r = (workers.get("ratios") or {}).get("rps_2_vs_1")
    cpus = workers.get("cpus_usable")
    why = "the workers benchmark did not run" if not workers else ""
    if cpus is not None and cpus <= 2:
        why = f"{cpus} CPUs: the load generator shares them with the workers (no third core)"
    return [
        _target("req/s with `--workers 2` vs 1 worker (16 conns, 1 row)", ">= 1.7x", _fmt(r, "x", 2),
                None if r is None else r >= 1.7, why)
    ]  # fmt: skip


def _image_targets(image: dict[str, Any]) -> list[dict[str, Any]]:
    """The serving image's targets (issue 12)."""
    out: list[dict[str, Any]] = []
    measured = image.get("status") == "measured"
    note = "" if measured or not image else image.get("status", "")
    size = image.get("image_mb")
    out.append(
        _target("serving image size (scikit-learn only)", "<= 450 MB", _fmt(size, " MB", 0),
                None if size is None else size <= 450, note)
    )  # fmt: skip
    cold = image.get("cold_start_to_first_200_s")
    overhead = image.get("container_overhead_s")
    out.append(
        _target(
            "container cold start (`docker run` → first 200)",
            "<= 2 s",
            _fmt(cold, " s", 2),
            None if cold is None else cold <= 2.0,
            f"of which the engine's cost of any container: {overhead:.2f} s"
            if overhead is not None
            else note,
        )
    )
    r = image.get("container_vs_process")
    out.append(
        _target("req/s through a container replica vs a process replica", ">= 0.9x", _fmt(r, "x", 2),
                None if r is None else r >= 0.9, note)
    )  # fmt: skip
    return out


def _times(results: dict[str, Any]) -> list[str]:
    """The line that says how long each benchmark took (what to trim when the run is long)."""
    times = [f"{name} {_fmt(seconds, ' s', 0)}" for name, seconds in results.get("took_s", {}).items()]
    return [f"- Time per benchmark: {', '.join(times)}"] if times else []


def render(results: dict[str, Any]) -> str:
    """docs/performance.md."""
    m = results["machine"]
    lines = [
        "# Performance",
        "",
        "<!-- Generated by bench/run.py from bench/results/latest.json: edit bench/, not this file. -->",
        "",
        "Every number on this page comes from one run of `nox -s bench` on the machine described",
        "below: mlshift and the tool a user would pick instead run in the same session, taking",
        "turns, and medians are reported. **The ratio is the claim**; absolute numbers depend on",
        "the machine (and on whatever else it was doing — see the load average).",
        "",
        "Reproduce (installs mlflow, kfp and the cloud SDKs into their own venvs, and wrk with",
        "apt-get when it is missing; about 15 minutes on a fresh 2-core machine, more for the downloads):",
        "",
        "```",
        "python -m pip install nox",
        "nox -s bench",
        "```",
        "",
        f"- Measured: {m['date']}, {_fmt(results.get('elapsed_s'), ' s', 0)} for the whole run;"
        f" command: `{results.get('command', 'python bench/run.py')}`",
        *_times(results),
        f"- Machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gb']} GB memory; {m['platform']}",
        f"- Load average (1 min) at start / end: {m.get('load_start')} / {m.get('load_end')}",
        f"- Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in sorted(results.get("versions", {}).items())),
        "",
        "## Targets",
        "",
        "| target | goal | measured | status |",
        "|---|---|---|---|",
    ]
    for t in results.get("targets", []):
        note = f" ({t['note']})" if t.get("note") else ""
        lines.append(f"| {t['target']} | {t['goal']} | {t['measured']} | {t['status']}{note} |")
    lines.append("")
    lines += _serving(results.get("serving"))
    lines += _batching(results.get("batching"))
    lines += _peers(results.get("peers"))
    lines += _router(results.get("router"))
    lines += _workers(results.get("workers"))
    lines += _startup(results.get("startup"))
    lines += _pipelines(results.get("pipelines"))
    lines += _reapply(results.get("reapply"))
    lines += _shadow(results.get("shadow"), m)
    lines += _image(results.get("image"))
    lines += _cloud_calls(results.get("cloud_calls"))
    lines += _capture(results.get("capture"))
    return "\n".join(lines)


def _serving(serving: dict[str, Any] | None) -> list[str]:
    if not serving:
        return []
    model = serving["model"]
    lines = [
        "## Serving",
        "",
        f"One scikit-learn {model['estimator']} on {model['features']} features"
        f"{' (named columns)' if model['feature_names'] else ''}, trained once and saved as a",
        "`.skops` file (what `mlshift serve` and the ceiling load) and, from that file, as an",
        "MLflow model with `mlflow.sklearn.save_model` and an inferred signature. Every server",
        f"gets MLflow's `{model['payload']}` payload on `POST /invocations` from a separate",
        f"process on 127.0.0.1 ({serving['load_generator']}, one thread, {serving['duration_s']} s per",
        f"run after a 1 s warm-up; {serving['repeat']} rounds, the server order rotating each round).",
        _pinning(serving.get("cpus") or {}),
        "Only 200 answers count: every response's status is checked, and a run with any other",
        "status or a socket error would be reported as failed and left out.",
        "The ceiling is a bare Starlette + orjson + uvloop + httptools app that does no input",
        "validation at all (bench/servers/ceiling.py); mlshift checks every request against the",
        "model signature (column names and order, row width, value types).",
        "",
        "| server | load | req/s | p50 ms | p99 ms | rows/s | server CPU µs/req | failed runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, server in serving["servers"].items():
        for cfg, row in server["configs"].items():
            lines.append(
                f"| {SERVER_LABELS.get(name, name)} | {CONFIG_LABELS[cfg]} | {_fmt(row['rps'], '', 0)} | "
                f"{_fmt(row['p50_ms'], '', 2)} | {_fmt(row['p99_ms'], '', 2)} | "
                f"{_fmt(row['rows_per_s'], '', 0)} | {_fmt(row.get('cpu_us_per_req'), '', 0)} | "
                f"{row['failed_runs']}/{row['runs']} |"
            )
    lines += [
        "",
        "| server | cold start (launch → first 200) | RSS after load | answer to a bad value |",
        "|---|---|---|---|",
    ]
    for name, server in serving["servers"].items():
        lines.append(
            f"| {SERVER_LABELS.get(name, name)} | {_fmt(server['cold_start_s'], ' s', 2)} | "
            f"{_fmt(server['rss_mb'], ' MB', 0)} | {', '.join(map(str, server['bad_payload_status']))} |"
        )
    lines += [
        "",
        "Cold start is the median of "
        f"{len(next(iter(serving['servers'].values()))['cold_start_samples'])} launches per server;",
        "RSS sums the server process and its children. The bad value is one row with a string",
        "where a number belongs: a validating server answers 400; the ceiling fails with 500.",
        "Server CPU per request (user + system time of the server's processes over the run,",
        "divided by the answers) is the figure least disturbed by other work on the machine.",
        "",
    ]
    bound = serving["ratios"].get("ceiling_vs_mlflow")
    for key, peer in (("vs_mlflow", "mlflow"), ("vs_ceiling", "the ceiling")):
        r = serving["ratios"].get(key)
        if not r:
            continue
        lines += [
            f"mlshift relative to {peer} (mlshift ÷ {peer}):",
            "",
            "| load | req/s | p99 | server CPU per request |",
            "|---|---|---|---|",
        ]
        for cfg, label in CONFIG_LABELS.items():
            if cfg in r:
                lines.append(
                    f"| {label} | {_fmt(r[cfg]['rps'], 'x', 2)} | {_fmt(r[cfg]['p99'], 'x', 3)} | "
                    f"{_fmt(r[cfg].get('cpu_per_req'), 'x', 2)} |"
                )
        lines += [
            "",
            f"Cold start {_fmt(r['cold_start'], 'x', 2)}, memory {_fmt(r['rss'], 'x', 2)}.",
            "",
        ]
        if key == "vs_mlflow" and bound:
            shown = ", ".join(f"{CONFIG_LABELS[c]}: {_fmt(v['rps'], 'x', 1)}" for c, v in bound.items())
            lines += [
                "For scale, the ceiling itself — no validation, the least any server on this stack",
                f"can do — reaches this many times mlflow's req/s: {shown}.",
                "",
            ]
    for note in serving.get("notes", []):
        lines += [f"Note: {note}", ""]
    return lines


def _batching(batching: dict[str, Any] | None) -> list[str]:
    if not batching:
        return []
    lines = [
        "## Batching",
        "",
        f"`mlshift serve` on the same model, {batching['connections']} connections each sending"
        f" {batching['rows_per_request']}-row `dataframe_split` bodies ({batching['load_generator']},",
        f"{batching['duration_s']} s per run after a 1 s warm-up, {batching['repeat']} rounds alternating"
        " which configuration goes first), without batching and with `--max-batch-size"
        f" {batching['max_batch_size']} --max-latency-ms {batching['max_latency_ms']:g}`.",
        _pinning(batching.get("cpus") or {}),
        "Mean batch size is read from the server's own counts (`GET /v1/metadata`).",
        "",
        "| batching | req/s | p50 ms | p99 ms | server CPU µs/req | mean rows per model call | failed runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in batching["configs"].items():
        lines.append(
            f"| {name} | {_fmt(row['rps'], '', 0)} | {_fmt(row['p50_ms'], '', 2)} | "
            f"{_fmt(row['p99_ms'], '', 2)} | {_fmt(row.get('cpu_us_per_req'), '', 0)} | "
            f"{_fmt(row.get('mean_batch_rows'))} | {row['failed_runs']}/{row['runs']} |"
        )
    lines += ["", f"req/s with batching on ÷ off: {_fmt(batching['ratios']['rps_on_vs_off'], 'x', 2)}.", ""]
    return lines


def _peers(peers: dict[str, Any] | None) -> list[str]:
    if not peers:
        return []
    lines = [
        "## Peers: MLServer and BentoML",
        "",
        f"The Serving model behind each peer server and `mlshift serve`, {peers['connections']} connections",
        f"each sending {peers['rows_per_request']}-row bodies in that server's own protocol"
        f" ({peers['load_generator']}, {peers['duration_s']} s per run after a 1 s warm-up,"
        f" {peers['repeat']} rounds, the order rotating each round). Each peer runs from a venv of its own",
        "with the same scikit-learn, loading the same fitted estimator; every answer is checked",
        "against the model's predictions before the load run.",
        _pinning(peers.get("cpus") or {}),
        "",
        "| server | configuration | req/s | p50 ms | p99 ms | server CPU µs/req | cold start s | RSS MB |"
        " mlshift ÷ it, req/s | failed runs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = peers.get("ratios") or {}
    for name, row in peers["servers"].items():
        r = ratios.get(name, {}).get("rps")
        lines.append(
            f"| {name} | {peers['descriptions'].get(name, '')} | {_fmt(row['rps'], '', 0)} | "
            f"{_fmt(row['p50_ms'], '', 2)} | {_fmt(row['p99_ms'], '', 2)} | "
            f"{_fmt(row['cpu_us_per_req'], '', 0)} | {_fmt(row['cold_start_s'], '', 2)} | "
            f"{_fmt(row['rss_mb'], '', 0)} | {_fmt(r, 'x', 2)} | "
            f"{row['failed_runs']}/{row['runs']} |"
        )
    best = peers.get("best_peer")
    lines += [
        "",
        "mlshift's ratio is its better row (own payload or V2) over each peer row; on V2 alone:"
        + ", ".join(f" {n} {_fmt(r.get('rps_v2'), 'x', 2)}" for n, r in ratios.items())
        + ".",
        f"Best peer configuration here: {best or 'none measured'}.",
        "",
        "Reproduce: `nox -s bench -- --only peers` (it makes the peers' venvs from",
        "bench/requirements/mlserver.txt and bentoml.txt), or with venvs of your own:",
        "`python bench/run.py --only peers --mlserver-python VENV/bin/python"
        " --bentoml-python VENV/bin/python`.",
        "",
    ]
    for note in peers.get("notes", []):
        lines += [f"Note: {note}", ""]
    return lines


def _router(router: dict[str, Any] | None) -> list[str]:
    if not router:
        return []
    lines = [
        "## The router hop",
        "",
        "One `python -m mlshift.serving` replica of the Serving model, called on its own URL and through",
        "the local endpoint router in front of it (`python -m mlshift.local._router`, as `local://` runs",
        f"it), {router['connections']} connections of 1-row bodies ({router['load_generator']},",
        f"{router['duration_s']} s per run after a 1 s warm-up, {router['repeat']} rounds alternating"
        " which goes first).",
        _pinning(router.get("cpus") or {}) + " The router is not pinned: it shares the CPUs with both.",
        "",
        "| path | req/s | p50 ms | p99 ms | replica CPU µs/req | failed runs |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in router["configs"].items():
        lines.append(
            f"| {name} | {_fmt(row['rps'], '', 0)} | {_fmt(row['p50_ms'], '', 2)} | "
            f"{_fmt(row['p99_ms'], '', 2)} | "
            f"{_fmt(row['replica_cpu_us_per_req'], '', 0)} | {row['failed_runs']}/{row['runs']} |"
        )
    r = router["ratios"]
    lines += [
        "",
        f"Through the router ÷ direct: {_fmt(r['rps_router_vs_direct'], 'x', 2)} req/s, p99"
        f" {_fmt(r['p99_added_ms'], ' ms', 2)} added; the router spends"
        f" {_fmt(router.get('router_cpu_us_per_req'), ' µs', 0)} of CPU per request. It keeps",
        "connections to the replicas open and reuses them, and builds no client or request object",
        "per request. Reproduce: `python bench/run.py --only router`.",
        "",
    ]
    return lines


def _workers(workers: dict[str, Any] | None) -> list[str]:
    if not workers:
        return []
    lines = [
        "## Workers",
        "",
        "`mlshift serve --workers 2` vs one worker on the Serving model,"
        f" {workers['connections']} connections of 1-row bodies ({workers['load_generator']},",
        f"{workers['duration_s']} s per run after a 1 s warm-up, {workers['repeat']} rounds alternating).",
        f"Nothing is pinned; this machine has {workers['cpus_usable']} usable CPUs, which the load",
        "generator shares with the workers. The first 200 comes once every worker has loaded the",
        "model (no worker answers before), so the load run's connections are spread over all of them.",
        "",
        "| workers | req/s | p50 ms | p99 ms | server CPU µs/req | failed runs |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in workers["configs"].items():
        lines.append(
            f"| {name} | {_fmt(row['rps'], '', 0)} | {_fmt(row['p50_ms'], '', 2)} | "
            f"{_fmt(row['p99_ms'], '', 2)} | "
            f"{_fmt(row['cpu_us_per_req'], '', 0)} | {row['failed_runs']}/{row['runs']} |"
        )
    lines += [
        "",
        f"2 workers ÷ 1: {_fmt(workers['ratios']['rps_2_vs_1'], 'x', 2)} req/s."
        " Reproduce: `python bench/run.py --only workers`.",
        "",
    ]
    return lines


def _pinning(cpus: dict[str, Any]) -> str:
    if cpus.get("server") is None:
        return "Server and load generator share the machine's CPUs (no pinning)."
    return (
        f"Each server runs confined to CPU {cpus['server']} and the load generator to CPU"
        f" {cpus['load_generator']}, so that no server pays for its load generator's CPU."
    )


def _startup(startup: dict[str, Any] | None) -> list[str]:
    if not startup:
        return []
    ours = startup["imports"]["mlshift"]["median_ms"]
    lines = [
        "## Start-up",
        "",
        "Time of the import statement in a fresh interpreter (the interpreter's own start not",
        "included), median of the timed runs after one untimed warm-up run:",
        "",
        "| import | version | median | relative to `import mlshift` |",
        "|---|---|---|---|",
    ]
    statements = {
        "mlshift": "import mlshift",
        "google-cloud-aiplatform": "from google.cloud import aiplatform",
        "azure-ai-ml": "from azure.ai.ml import MLClient",
        "sagemaker (mlops)": "import sagemaker.mlops.workflow",
        "mlflow": "import mlflow",
    }
    for label, row in startup["imports"].items():
        value = row["median_ms"]
        if value is None:
            shown, rel = row.get("reason") or "not installed", ""
        else:
            shown, rel = _fmt(value, " ms"), (f"{value / ours:.1f}x" if ours else "")
        lines.append(f"| `{statements.get(label, label)}` | {row.get('version') or '—'} | {shown} | {rel} |")
    lines += [
        "",
        f"`mlshift --help` takes {_fmt(startup['cli_help_ms'], ' ms')} of wall time, of which starting",
        f"the interpreter alone (`python -c pass`) is {_fmt(startup['python_startup_ms'], ' ms')}.",
        "`import mlshift` loads no cloud SDK, no numpy and no pydantic: public names resolve on",
        "first use. A first real use — a new interpreter that imports mlshift, connects to",
        f"`memory://` and lists endpoints — takes {_fmt(startup['first_use_ms'], ' ms')} of wall time,",
        "interpreter start included.",
        "",
    ]
    return lines


def _pipelines(pipelines: dict[str, Any] | None) -> list[str]:
    if not pipelines:
        return []
    lines = ["## Pipelines", ""]
    if pipelines.get("status", "").startswith("not measured"):
        return [*lines, pipelines["status"] + ".", ""]
    lines += [
        "A chain of N steps (each reads the previous step's artifact and takes one float",
        "parameter), defined, validated and compiled to IR JSON: mlshift's `Pipeline(...).to_json()`",
        "vs kfp's `@dsl.pipeline` + `Compiler().compile` (KFP IR, what Vertex AI runs). Each",
        "measurement is a fresh process; *first* is the first define + compile in it (after",
        "the import; mlshift imports its IR models lazily, so their import falls in here), *warm*",
        "the median of three more in the same process. Speed-ups are kfp's time ÷ mlshift's.",
        "*mlshift-kfp* compiles the same chain to a KFP PipelineSpec (`mlshift.pipelines.kfp`),",
        "the document kfp writes: that row compares like for like.",
        "",
        "| steps | tool | import | first define + compile | import + first | warm | IR size "
        "| speed-up: first / import + first / warm |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, row in pipelines["sizes"].items():
        for side in ("mlshift", "mlshift-kfp", "kfp"):
            if side not in row:
                continue
            r = row[side]
            total = r["import_ms"] + r["first_ms"] if r["import_ms"] and r["first_ms"] else None
            speed = ""
            first_key = {"mlshift": "speedup_first", "mlshift-kfp": "speedup_first_kfp_ir"}.get(side, "")
            if first_key in row:
                k = row["kfp"]
                theirs = k["import_ms"] + k["first_ms"] if k["import_ms"] and k["first_ms"] else None
                warm_key = first_key.replace("first", "warm")
                speed = (
                    f"{_fmt(row[first_key], 'x')} / {_fmt(ratio(theirs, total), 'x', 1)} / "
                    f"{_fmt(row[warm_key], 'x')}"
                )
            lines.append(
                f"| {n} | {side} | {_fmt(r['import_ms'], ' ms')} | {_fmt(r['first_ms'], ' ms')} | "
                f"{_fmt(total, ' ms')} | {_fmt(r['warm_ms'], ' ms')} | {_fmt(r['ir_bytes'], ' B')} "
                f"| {speed} |"
            )
    lines.append("")
    for note in pipelines.get("notes", []):
        lines += [f"Note: {note}", ""]
    return lines


def _reapply(reapply: dict[str, Any] | None) -> list[str]:
    if not reapply:
        return []
    lines = [
        "## Idempotent re-apply",
        "",
        "An `mlshift.yaml` with one model and one endpoint, applied to a fresh target, then",
        "applied again unchanged. Calls are those made through the adapter contract (on a cloud",
        "target each is a provider API request); *mutating* means anything but a read.",
        "Uploaded bytes are the artifacts handed to `models.register`; stored bytes are files",
        "created or changed under the target's own storage folder.",
        "",
        "| target | apply | plan changes | calls | mutating calls | uploaded | stored | time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for target, row in reapply.items():
        first, again = row["first_deploy"], row["reapply"]
        lines.append(
            f"| `{target}` | first deploy | {first['plan_changes']} | {first['calls']} | "
            f"{first['mutating_calls']} ({', '.join(first['mutating'])}) | "
            f"{_fmt(first['bytes_uploaded'], ' B')} | "
            f"{_fmt(first['bytes_stored'], ' B')} | {_fmt(first['seconds'] * 1000, ' ms')} |"
        )
        lines.append(
            f"| `{target}` | unchanged re-apply (worst of {again['runs']}) | {again['plan_changes']} | "
            f"{again['calls']} | {again['mutating_calls']} | {_fmt(again['bytes_uploaded'], ' B')} | "
            f"{_fmt(again['bytes_stored'], ' B')} | {_fmt(again['median_seconds'] * 1000, ' ms')} (median) |"
        )
    memory = reapply.get("memory://", {}).get("reapply", {})
    if memory.get("adapter_recorded_mutations") is not None:
        lines += [
            "",
            "Cross-check: `memory://` records its own mutating calls (`client.adapter.calls`); during"
            f" the unchanged re-applies it recorded {memory['adapter_recorded_mutations']}.",
        ]
    calls = sorted({c for row in reapply.values() for c in row["reapply"]["call_names"]})
    shown = ", ".join(f"`{c}`" for c in calls)
    lines += ["", f"Calls an unchanged re-apply makes: {shown}.", ""]
    return lines


def _clouds(clouds: dict[str, Any]) -> dict[str, Any]:
    """The per-cloud rows of the cloud_calls results (``measured`` is when a merge ran it)."""
    return {label: row for label, row in clouds.items() if label != "measured"}


def _cloud_calls_targets(clouds: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for label, row in _clouds(clouds).items():
        name = f"unchanged re-apply on `{label}` (HTTP requests the SDK sent)"
        if row.get("status") != "measured":
            out.append(_target(name, "0 mutating, 0 bytes", "—", None, row.get("status", "")))
            continue
        again = row["reapply"]
        out.append(
            _target(
                name,
                "0 mutating, 0 bytes",
                f"{again['mutating']} mutating of {again['requests']}, {again['bytes_uploaded']} B uploaded",
                again["mutating"] == 0 and again["bytes_uploaded"] == 0,
            )
        )
    return out


def _cloud_calls(clouds: dict[str, Any] | None) -> list[str]:
    if not clouds:
        return []
    lines = [
        "## Control-plane calls on the clouds",
        "",
        "The `mlshift.yaml` of the re-apply benchmark (one model, one endpoint of one variant),",
        "applied to each cloud's testing kit and then again unchanged: every HTTP request the",
        "provider's own SDK sent, as the kit recorded it (SageMaker: boto3 on moto; Azure ML:",
        "`azure-ai-ml`, `azure-storage-blob` and `azure-mgmt-monitor` through the kit's transport;",
        "Vertex AI: the Google REST clients against the kit's loopback server). *Control plane* is",
        "the management API and metrics; *storage* is S3, Blob or GCS; *mutating* is anything but a",
        "read, by each kit's rule; *uploaded* is what was written to storage (the artifact, and",
        "mlshift's version card, journal and lease). bench/cloud_calls.py.",
    ]
    when = clouds.get("measured")
    if when:
        lines.append(
            f"Measured separately ({when['date']}, load average {when['load_start']} / {when['load_end']};"
            f" `{when['command']}`)."
        )
    lines += [
        "",
        "| target | apply | requests | control plane | storage | mutating (control plane) | uploaded "
        "| time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, row in _clouds(clouds).items():
        if row.get("status") != "measured":
            lines.append(f"| `{label}` | {row.get('status', 'not measured')} | | | | | | |")
            continue
        for what, r in (
            ("first deploy", row["first_deploy"]),
            (f"unchanged re-apply (worst of {row['reapply']['runs']})", row["reapply"]),
        ):
            seconds = r.get("seconds")
            lines.append(
                f"| `{label}` | {what} | {r['requests']} | {r['control_plane']} | {r['storage']} | "
                f"{r['mutating']} ({r['mutating_control_plane']}) | {_fmt(r['bytes_uploaded'], ' B')} | "
                f"{'' if seconds is None else _fmt(seconds * 1000, ' ms', 0)} |"
            )
    lines.append("")
    return lines


def _busy(shadow: dict[str, Any]) -> float | None:
    """The load average while the shadow benchmark ran, when it was above the CPU count."""
    own = shadow.get("measured") or {}
    busy = max(own.get("load_start") or 0, own.get("load_end") or 0)
    return busy if own.get("cpus") and busy > own["cpus"] else None


def _shadow(shadow: dict[str, Any] | None, machine: dict[str, Any]) -> list[str]:
    if not shadow:
        return []
    off, on = shadow["without_shadow"], shadow["with_shadow"]
    lines = [
        "## Shadow traffic",
        "",
        "What mirroring costs the callers of a local endpoint (bench/shadow.py). One endpoint serves",
        "an iris classifier through the local router; a second version runs beside it at 0%. Each",
        f"round is two load runs of {shadow['seconds']} s ({shadow['load_generator']}, "
        f"{shadow['connections']} connections,",
        "one row per request, 127.0.0.1): first with no mirror, then with the router copying "
        f"{shadow['percent_mirrored']}% of",
        "the answered requests to the second version after answering the caller. Medians over "
        f"{shadow['rounds']} rounds.",
        "",
        "| callers' view | req/s | p50 ms | p99 ms | p99 of each round (ms) | non-200 |",
        "|---|---|---|---|---|---|",
    ]
    for label, row in (("no mirror", off), (f"{shadow['percent_mirrored']}% mirrored", on)):
        rounds = ", ".join(_fmt(v, "", 2) for v in row.get("p99_ms_runs", []))
        lines.append(
            f"| {label} | {_fmt(row['requests_per_s'], '', 0)} | {_fmt(row['p50_ms'], '', 2)} | "
            f"{_fmt(row['p99_ms'], '', 2)} | {rounds} | {row['non200']} |"
        )
    p50, rps = ratio(on["p50_ms"], off["p50_ms"]), ratio(on["requests_per_s"], off["requests_per_s"])
    lines += [
        "",
        f"p99 with the mirror ÷ p99 without: {_fmt(shadow['p99_ratio'], 'x', 2)} (p50: {_fmt(p50, 'x', 2)}, "
        f"req/s: {_fmt(rps, 'x', 2)}). The shadow "
        f"answered {_fmt(shadow['mirrored_requests'])} mirrored",
        f"requests; {_fmt(shadow['skipped_mirrors'])} were not mirrored because too many were "
        "in flight (the router drops",
        "mirrors rather than queue them behind callers).",
    ]
    own = shadow.get("measured") or {}
    busy = _busy(shadow)
    off_runs = off.get("p99_ms_runs", [])
    if busy is not None:
        lines += [
            "",
            f"The machine was busy (load average up to {busy} on {own['cpus']} CPUs): without the mirror,",
            f"the rounds' p99 ranged from {_fmt(min(off_runs, default=None), ' ms', 2)} to "
            f"{_fmt(max(off_runs, default=None), ' ms', 2)}, so read the rounds beside the",
            "ratio. The load generator keeps every connection busy, so on a machine",
            "with no idle CPU the new version's copies take CPU from the callers' requests (the",
            "p50 and req/s columns).",
        ]
    if own and own.get("date") != machine.get("date"):
        lines += [
            "",
            f"Measured on its own (`python bench/run.py --only shadow`): {own['date']}, "
            f"{own.get('cpus')} CPUs, load average",
            f"(1 min) {own.get('load_start')} at start, {own.get('load_end')} at end.",
        ]
    return [*lines, ""]


def _image(image: dict[str, Any] | None) -> list[str]:
    if not image:
        return []
    lines = ["## Serving image and `local+docker://`", ""]
    if image.get("status") != "measured":
        return [*lines, f"{image.get('status', 'not measured')}.", ""]
    when = image.get("measured")
    lines += [
        f"The scikit-learn serving image (`{image['image']}`, Python {image.get('python') or '?'}),"
        " built by `mlshift image build` from",
        "host-built wheels on the offline Debian base (`mlshift image base`). One iris",
        "LogisticRegression `.skops` file mounted read-only; the model server in the container",
        "against `python -m mlshift.serving` on the host, same model, 2 connections of",
        f"bench/loadgen.py for {image['load_seconds']:g} s each, medians of {image['rounds']} rounds.",
    ]
    if when:
        lines += [
            f"Measured separately ({when['date']}, load average {when['load_start']} / {when['load_end']};"
            f" `{when['command']}`).",
        ]
    lines += [
        "",
        "| | |",
        "|---|---|",
        f"| image size | {_fmt(image['image_mb'], ' MB', 0)} |",
        f"| build with nothing changed (every layer cached) | {_fmt(image.get('build_warm_s'), ' s')} |",
    ]

    def row(label: str, value: str) -> str:
        return f"| {label} | {value} |"

    samples = ", ".join(f"{s:.2f}" for s in image.get("cold_start_samples", []))
    if image.get("build_cold_s") is not None:
        lines.append(
            row("build with no layer cache (wheels from the host's cache)", _fmt(image["build_cold_s"], " s"))
        )
    lines += [
        row(
            "cold start: `docker run` → first 200 on `/invocations`",
            f"{_fmt(image['cold_start_to_first_200_s'], ' s', 2)} (samples: {samples})",
        ),
        row("for scale: `docker run IMAGE true` → exit", _fmt(image.get("container_overhead_s"), " s", 2)),
        row(
            "req/s, container replica",
            f"{_fmt(image['container_rps'], '', 0)} (p99 {_fmt(image['container_p99_ms'], ' ms', 2)})",
        ),
        row(
            "req/s, process replica",
            f"{_fmt(image['process_rps'], '', 0)} (p99 {_fmt(image['process_p99_ms'], ' ms', 2)})",
        ),
        row("container ÷ process req/s", _fmt(image.get("container_vs_process"), "x", 2)),
        "",
        "Reproduce with a Docker engine (`.ci/docker-up` starts one as root) and the base image:",
        "`python bench/run.py --only image --merge` (add `--cold-build` for the no-cache build),",
        "or `python bench/serving_image.py` for the JSON alone.",
        "",
    ]
    return lines


CAPTURE_LOADS = {"c16_r1": "16 conns, 1 row", "c16_r100": "16 conns, 100 rows"}
#: Below this a difference in req/s is noise whatever the rounds' own spread was (one round has none).
CAPTURE_NOISE_FLOOR = 0.02
#: The claim at sample_rate 1.0: capture costs at most this share of req/s.
CAPTURE_MARGIN = 0.05


def _capture_targets(capture: dict[str, Any]) -> list[dict[str, Any]]:
    """Request capture's targets (issue 15), each judged on every load measured.

    A verdict needs runs steadier than the 5% being judged: when the per-round ratios vary by
    more than that, the status says *inconclusive* rather than let noise pass or fail the claim.
    """
    ratios = capture.get("ratios") or {}
    why = "" if capture else "the capture benchmark did not run"
    busy = _capture_busy(capture)
    if busy:
        why = f"load average {busy} on {capture['load']['cpus']} CPUs: see Request capture"
    noise = {load: max(r.get("noise") or 0.0, CAPTURE_NOISE_FLOOR) for load, r in ratios.items()}
    wide = [f"{CAPTURE_LOADS.get(k, k)}: {v:.1%}" for k, v in noise.items() if v > CAPTURE_MARGIN]
    out = []
    for rate, goal in (("1.0", f">= {1 - CAPTURE_MARGIN:.2f}x"), ("0.1", "within noise")):
        parts, verdicts = [], []
        for load, r in ratios.items():
            value = r[rate]["rps"]
            label = CAPTURE_LOADS.get(load, load)
            if rate == "1.0":
                parts.append(f"{_fmt(value, 'x', 2)} ({label})")
                verdicts.append(None if value is None else value >= 1 - CAPTURE_MARGIN)
            else:
                parts.append(f"{_fmt(value, 'x', 2)} ({label}; noise {noise[load]:.1%})")
                verdicts.append(None if value is None else 1 - value <= noise[load])
        row = _target(
            f"req/s with capture at sample_rate {rate} vs off",
            goal,
            ", ".join(parts) or "—",
            None if not verdicts or None in verdicts else all(verdicts),
            why,
        )
        if wide and row["status"] != "not measured":
            row["status"] = "inconclusive"
            spread = ", ".join(wide)
            row["note"] = f"the per-round ratios vary by more than {CAPTURE_MARGIN:.0%} ({spread})" + (
                f"; {why}" if why else ""
            )
        out.append(row)
    shares = _capture_cpu_shares(capture)
    values = [v.get("1.0") for v in shares.values()]
    out.append(
        _target(
            "server CPU that capture at sample_rate 1.0 adds per request (in process)",
            f"<= {CAPTURE_MARGIN:.0%} of a request's",
            ", ".join(f"{_fmt(v.get('1.0'), '%', 1)} ({CAPTURE_LOADS.get(k, k)})" for k, v in shares.items())
            or "—",
            None if not values or None in values else max(values) <= CAPTURE_MARGIN * 100,
            why if not capture or capture.get("cpu_cost") else "the capture benchmark did not measure it",
        )
    )
    return out


def _capture_cpu_shares(capture: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per load and rate: CPU µs capture adds per request (in process) as a % of the server's
    CPU µs per request without capture (from the load runs of the same benchmark)."""
    cost = (capture.get("cpu_cost") or {}).get("loads") or {}
    off = ((capture.get("configs") or {}).get("off") or {}).get("loads") or {}
    out: dict[str, dict[str, float | None]] = {}
    for load, row in cost.items():
        per_request = (off.get(load) or {}).get("cpu_us_per_req")
        out[load] = {
            rate: None
            if row.get(f"{rate}_added_us") is None or not per_request
            else round(100 * row[f"{rate}_added_us"] / per_request, 1)
            for rate in ("0.1", "1.0")
        }
    return out


def _capture_busy(capture: dict[str, Any]) -> float | None:
    """The highest load average seen while capture was measured, when above the CPU count."""
    load = capture.get("load") or {}
    busy = max(load.get("start") or 0, load.get("end") or 0)
    return busy if load.get("cpus") and busy > load["cpus"] else None


def _capture(capture: dict[str, Any] | None) -> list[str]:
    if not capture:
        return []
    configs, ratios = capture["configs"], capture["ratios"]
    label = {"off": "off", "0.1": "sample_rate 0.1", "1.0": "sample_rate 1.0"}
    lines = [
        "## Request capture",
        "",
        "What recording requests for monitors ([Monitoring](monitoring.md)) costs `mlshift serve`",
        "(bench/capture.py). The model and bodies of Serving, on one `mlshift serve` process whose",
        "`MLSHIFT_CAPTURE_DIR` names a capture folder. Before each run its capture is switched the",
        "way the local target switches a live endpoint's: `capture.json` holds what the target",
        "writes for `capture: {sample_rate: 0.1}` or `{sample_rate: 1.0}`, and is removed for off",
        "(the server then records nothing; a server started without a capture folder does not even",
        "look). Each run starts once the server's stats say the rate is in force. Each rate is",
        "compared with off in the same round, seconds apart in the same process (two launches of one",
        "server differ by more than the 5% being judged), and the ratios are medians over rounds.",
        f"{capture['connections']} connections ({capture['load_generator']}, {capture['duration_s']} s per"
        f" run, after one warm-up per body), {capture['repeat']} rounds, the configuration order rotating.",
        _pinning(capture.get("cpus") or {}),
        "",
        "| capture | load | req/s | p50 ms | p99 ms | server CPU µs/req | req/s ÷ off | p99 ÷ off "
        "| CPU/req ÷ off | failed runs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, config in configs.items():
        for load, row in config["loads"].items():
            rel = ratios.get(load, {}).get(name) or {"rps": 1.0, "p99": 1.0}
            lines.append(
                f"| {label.get(name, name)} | {CAPTURE_LOADS.get(load, load)} | {_fmt(row['rps'], '', 0)} | "
                f"{_fmt(row['p50_ms'], '', 2)} | {_fmt(row['p99_ms'], '', 2)} | "
                f"{_fmt(row.get('cpu_us_per_req'), '', 0)} | {_fmt(rel['rps'], 'x', 2)} | "
                f"{_fmt(rel['p99'], 'x', 2)} | {_fmt(rel.get('cpu_per_req'), 'x', 2)} | "
                f"{row['failed_runs']}/{row['runs']} |"
            )
    spreads = ", ".join(
        f"{CAPTURE_LOADS.get(load, load)}: {_fmt(r.get('noise') and r['noise'] * 100, '%', 1)}"
        for load, r in ratios.items()
    )
    lines += [
        "",
        "How much the per-round ratios of req/s vary (their median absolute deviation, the larger",
        f"of the two rates', which one disturbed round does not move): {spreads}. A difference",
        f"smaller than that (or than {CAPTURE_NOISE_FLOOR:.0%}) is what *within noise* means;",
        f"a variation over {CAPTURE_MARGIN:.0%} makes the verdicts *inconclusive*.",
        "",
        "What the server wrote over every round (answered: the 200s the load generator counted",
        "while that rate was in force; a record dropped is one the writer's queue had no room for):",
        "",
        "| answered at 0.1 | answered at 1.0 | expected records | written | dropped | failed | plausible |",
        "|---|---|---|---|---|---|---|",
    ]
    c = capture.get("capture")
    if c:
        answered = c.get("answered") or {}
        lines.append(
            f"| {_fmt(answered.get('0.1'))} | {_fmt(answered.get('1.0'))} | {_fmt(c['expected'], '', 0)} | "
            f"{_fmt(c['records_in_files'])} | {_fmt(c['dropped'])} | {_fmt(c['failed'])} | "
            f"{'yes' if c['plausible'] else 'NO'} |"
        )
    lines += [
        "",
        "*Plausible*: written + dropped is the answered counts times their rates (within four",
        "standard deviations, and at most one in-flight request per connection and run more), every",
        "count the server keeps matches the lines in its files, and a record holds the body sent.",
    ]
    cost = capture.get("cpu_cost") or {}
    if cost.get("loads"):
        shares = _capture_cpu_shares(capture)
        lines += [
            "",
            "What capture costs in CPU, away from the network and from other processes' work: one",
            f"process calls the prediction route's ASGI wrapper {cost['calls']:,} times with a stub model"
            " that answers at",
            "once, bare and then wrapped by the capture writer (writing real files), and counts its own",
            f"CPU time (both threads) until everything is written; medians of {cost['repeat']}. The share"
            " divides that by",
            "the server CPU per request without capture in the table above.",
            "",
            "| load | bare route µs/req | added at 0.1 | added at 1.0 | share of a request's CPU"
            " at 0.1 / 1.0 |",
            "|---|---|---|---|---|",
        ]
        for load, row in cost["loads"].items():
            share = shares.get(load, {})
            lines.append(
                f"| {CAPTURE_LOADS.get(load, load)} | {_fmt(row['off_us'], '', 1)} | "
                f"{_fmt(row['0.1_added_us'], ' µs', 1)} | {_fmt(row['1.0_added_us'], ' µs', 1)} | "
                f"{_fmt(share.get('0.1'), '%', 1)} / {_fmt(share.get('1.0'), '%', 1)} |"
            )
    lines += ["", "Reproduce: `python bench/run.py --only capture --merge` (or `--quick` for a smoke run)."]
    load, when = capture.get("load") or {}, capture.get("measured") or {}
    if when:
        lines += [
            "",
            f"Measured on its own ({when['date']}; `{when['command']}`), load average (1 min)"
            f" {load.get('start')} at start and {load.get('end')} at end on {load.get('cpus')} CPUs.",
        ]
    elif load:
        lines += ["", f"Load average (1 min): {load.get('start')} at start, {load.get('end')} at end."]
    busy = _capture_busy(capture)
    if busy:
        lines += [
            "",
            f"The machine was busy (load average up to {busy} on {load['cpus']} CPUs, others' work):",
            "absolute numbers are low, spreads wide, and the ratios (server CPU per request included)",
            "show the other work as much as capture; re-measure on a quiet machine for a verdict.",
        ]
        faster = [load for load, r in ratios.items() if (r["1.0"]["rps"] or 0) > 1 + CAPTURE_MARGIN]
        if faster:
            lines += [
                "Here the servers with capture even served more req/s than without ("
                + " and ".join(CAPTURE_LOADS.get(k, k) for k in faster)
                + "), which capture's",
                "own CPU cost (the in-process table) cannot explain: read those ratios as noise.",
            ]
    return [*lines, ""]


def _measured(part: dict[str, Any]) -> list[str]:
    """When a benchmark was measured on its own (``--merge``), when and under what load."""
    when = part.get("measured")
    if not when:
        return []
    return [
        f"Measured separately ({when['date']}, load average {when['load_start']} / {when['load_end']};"
        f" `{when['command']}`).",
        "",
    ]


def _spliceable() -> dict[str, tuple[Any, Any, str]]:
    """Benchmark name -> (its targets, its section, the section's heading)."""
    return {
        "image": (lambda r: _image_targets(r or {}), _image, "## Serving image and `local+docker://`"),
        "peers": (_peer_targets, _peers, "## Peers: MLServer and BentoML"),
        "router": (_router_targets, _router, "## The router hop"),
        "workers": (_workers_targets, _workers, "## Workers"),
        "cloud_calls": (_cloud_calls_targets, _cloud_calls, "## Control-plane calls on the clouds"),
        "capture": (_capture_targets, _capture, "## Request capture"),
        "pipelines": (_pipelines_targets, _pipelines, "## Pipelines"),
    }


#: Sections spliced at the end of the page, without a "measured separately" line (the
#: capture section says when it was measured itself).
_AT_THE_END = ("image", "cloud_calls", "capture")


def splice(page: str, results: dict[str, Any], names: list[str]) -> str:
    """``page`` (an existing docs/performance.md) with the benchmarks ``names`` from ``results``.

    For a re-measurement whose earlier results file is gone (results files are not committed):
    their rows of the targets table and their sections are replaced, or added, and the rest
    of the page is left as it was measured. ``image``, ``cloud_calls``, ``capture``, ``peers``,
    ``router``, ``workers`` and ``pipelines`` can be spliced; a new section goes before Start-up
    (the image's, the cloud calls' and capture's at the end).
    """
    table = _spliceable()
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(
            f"cannot splice {', '.join(unknown)} into an existing page"
            f" (only {', '.join(table)} can be spliced)"
        )
    lines = page.rstrip("\n").split("\n")
    for name in names:
        targets, section_of, heading = table[name]
        rows = [
            f"| {t['target']} | {t['goal']} | {t['measured']} | {t['status']}"
            + (f" ({t['note']})" if t.get("note") else "")
            + " |"
            for t in targets(results[name])
        ]
        names_in_rows = {row.split(" | ")[0] for row in rows}
        kept = [line for line in lines if line.split(" | ")[0] not in names_in_rows]
        removed_at = next((i for i, line in enumerate(lines) if line.split(" | ")[0] in names_in_rows), None)
        lines = kept
        table_end = next(
            i for i in range(lines.index("## Targets") + 3, len(lines)) if not lines[i].startswith("|")
        )
        # In place when the rows were there already, else at the end of the table.
        at = table_end if removed_at is None else min(removed_at, table_end)
        lines[at:at] = rows
        section = section_of(results[name])
        if name not in _AT_THE_END and section:
            section = [*section[:2], *_measured(results[name]), *section[2:]]
        if heading in lines:
            start = lines.index(heading)
            end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
            del lines[start:end]
        elif name not in _AT_THE_END and "## Start-up" in lines:
            start = lines.index("## Start-up")
        else:
            while lines and not lines[-1]:
                lines.pop()
            lines.append("")
            start = len(lines)
        lines[start:start] = section
    return "\n".join(lines).rstrip("\n")
