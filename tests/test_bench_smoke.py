"""A tiny run of the benchmark suite, so it cannot silently rot (the real run is `nox -s bench`).

Needs neither mlflow nor wrk nor the cloud SDKs: `--quick` measures mlshift alone, loads the
server with bench/loadgen.py for a few hundred requests, and re-applies on memory:// and
local://. Peers that are missing must show up as "not measured", never as a pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    tmp = tmp_path_factory.mktemp("bench")
    out, report = tmp / "results.json", tmp / "performance.md"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--quick", "--out", str(out), "--report", str(report)],
        capture_output=True,
        text=True,
        # A bound against a hung run, not a speed claim: on a 2-core machine shared with other
        # test runs the quick suite (five benchmarks, four server launches) takes minutes.
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text()), report.read_text()


def test_startup_is_measured(quick_run: tuple[dict[str, Any], str]) -> None:
    startup = quick_run[0]["startup"]
    assert startup["imports"]["mlshift"]["median_ms"] > 0
    assert startup["cli_help_ms"] > 0


def test_serving_counts_only_200s_and_validates(quick_run: tuple[dict[str, Any], str]) -> None:
    serving = quick_run[0]["serving"]
    assert serving["load_generator"].startswith("bench/loadgen.py")
    ours = serving["servers"]["mlshift"]
    assert set(ours["configs"]) == {"c2_r1", "c2_r100", "c16_r1", "c16_r100"}
    for row in ours["configs"].values():
        assert row["failed_runs"] == 0 and row["non200"] == 0 and row["socket_errors"] == 0
        assert row["rps"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
    assert ours["cold_start_s"] > 0
    assert ours["bad_payload_status"] == [400]  # signature validation is on


def test_batching_is_measured_on_and_off(quick_run: tuple[dict[str, Any], str]) -> None:
    results, report = quick_run
    batching = results["batching"]
    assert batching["connections"] == 64
    assert set(batching["configs"]) == {"off", "on"}
    for row in batching["configs"].values():
        assert row["failed_runs"] == 0 and row["non200"] == 0 and row["socket_errors"] == 0
        assert row["rps"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
    # Off, the server reports no batching; on, every model call got at least one row.
    assert batching["configs"]["off"]["mean_batch_rows"] is None
    assert batching["configs"]["on"]["mean_batch_rows"] >= 1
    assert batching["ratios"]["rps_on_vs_off"] > 0
    statuses = {t["target"]: t["status"] for t in results["targets"]}
    for target in (
        "req/s with batching on vs off (64 conns, 1 row)",
        "p99 with batching on (64 conns, 1 row)",
    ):
        assert statuses[target] in ("pass", "MISS")  # measured, whichever way it went
    assert "## Batching" in report


def test_unchanged_reapply_costs_nothing(quick_run: tuple[dict[str, Any], str]) -> None:
    reapply = quick_run[0]["reapply"]
    assert set(reapply) == {"memory://", "local://"}
    for row in reapply.values():
        assert row["first_deploy"]["mutating_calls"] >= 2  # register + create, at least
        assert row["first_deploy"]["bytes_uploaded"] > 0
        again = row["reapply"]
        assert (again["plan_changes"], again["mutating_calls"], again["bytes_uploaded"]) == (0, 0, 0)
        assert again["bytes_stored"] == 0
    assert reapply["memory://"]["reapply"]["adapter_recorded_mutations"] == 0


def test_report_states_every_target(quick_run: tuple[dict[str, Any], str]) -> None:
    results, report = quick_run
    statuses = {t["target"]: t["status"] for t in results["targets"]}
    # mlflow is not installed here: its ratios must say so rather than pass.
    assert statuses["serving cold start vs mlflow (launch to first 200)"] == "not measured"
    assert statuses["unchanged re-apply on `memory://`"] == "pass"
    for heading in ("## Targets", "## Serving", "## Start-up", "## Pipelines", "## Idempotent re-apply"):
        assert heading in report
    assert "| 500-step pipeline define + compile vs kfp | >= 2x faster |" in report
    assert "| 500-step pipeline compiled to KFP IR vs kfp (same document) | >= 2x faster |" in report


def test_the_image_targets_come_from_its_results_and_say_when_not_measured() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import report
    finally:
        sys.path.remove(str(BENCH))

    def statuses(image: dict[str, Any]) -> dict[str, str]:
        return {t["target"]: t["status"] for t in report.evaluate_targets({"image": image})}

    cold = "container cold start (`docker run` → first 200)"
    missing = statuses({"status": "not measured: no Docker daemon answers"})
    assert missing[cold] == missing["serving image size (scikit-learn only)"] == "not measured"
    measured = {
        "status": "measured", "image": "mlshift-serving:0.1.0", "rounds": 3, "load_seconds": 5.0,
        "image_mb": 400, "build_warm_s": 3.0, "cold_start_to_first_200_s": 2.4,
        "cold_start_samples": [2.3, 2.4, 2.6], "container_overhead_s": 0.6, "container_rps": 950.0,
        "container_p99_ms": 4.0, "process_rps": 1000.0, "process_p99_ms": 5.0, "container_vs_process": 0.95,
    }  # fmt: skip
    got = statuses(measured)
    assert got["serving image size (scikit-learn only)"] == "pass"
    assert got[cold] == "MISS"  # 2.4 s is over the 2 s goal: said, not hidden
    assert got["req/s through a container replica vs a process replica"] == "pass"
    page = "\n".join(report._image(measured))
    assert "## Serving image and `local+docker://`" in page and "python bench/run.py --only image" in page
    # Re-measured alone, it replaces its own rows and section of the page and nothing else.
    before = (ROOT / "docs" / "performance.md").read_text()
    once = report.splice(before, {"image": measured}, ["image"])
    again = report.splice(once, {"image": {**measured, "cold_start_to_first_200_s": 1.9}}, ["image"])
    assert again.count("## Serving image") == 1 and again.count(f"| {cold} |") == 1
    assert f"| {cold} | <= 2 s | 1.90 s | pass" in again
    assert before[: before.index("## Targets")] in again  # the header, as it was measured
    others = before[before.index("\n## Serving\n") :]
    if "\n## Serving image" in others:  # its own earlier section is what gets replaced
        others = others[: others.index("\n## Serving image")]
    assert others.rstrip("\n") in again  # every other section
    assert "## Idempotent re-apply" in again and "## Serving\n" in again


class _Refuses(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"error": "no"}'
        self.send_response(400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuses)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_server_answering_400_is_not_throughput(refusing_server: int, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text("{}")
    url = f"http://127.0.0.1:{refusing_server}/invocations"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "loadgen.py"), url, "--body-file", str(body), "-n", "50", "-d", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    raw = json.loads(proc.stdout.split("LOADJSON ", 1)[1])
    assert raw["requests"] == raw["non200"] == 50
    sys.path.insert(0, str(BENCH))
    try:
        from common import summarize
    finally:
        sys.path.remove(str(BENCH))
    summary = summarize(raw, rows=1, cpu_s=0.0)
    assert summary["rps"] is None and summary["non200"] == 50


def test_the_kfp_ir_target_compares_the_same_document() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import report
    finally:
        sys.path.remove(str(BENCH))

    like_for_like = "500-step pipeline compiled to KFP IR vs kfp (same document)"

    def target(sizes: dict[str, Any]) -> dict[str, Any]:
        found = report.evaluate_targets({"pipelines": {"status": "measured", "sizes": sizes}})
        return next(t for t in found if t["target"] == like_for_like)

    row = {"mlshift": {}, "mlshift-kfp": {}, "kfp": {}, "speedup_first": 5.0}
    assert target({"500": {**row, "speedup_first_kfp_ir": 3.2}})["status"] == "pass"
    assert target({"500": {**row, "speedup_first_kfp_ir": 1.4}})["status"] == "MISS"
    assert target({"500": {"mlshift": {}}})["status"] == "not measured"


def test_pipelines_splice_into_the_page_with_both_targets() -> None:
    report = _bench_module("report")
    before = (ROOT / "docs" / "performance.md").read_text()
    measured = {"date": "2026-01-01 00:00 UTC", "load_start": 1.0, "load_end": 2.0, "command": "x"}

    def side(first_ms: float) -> dict[str, Any]:
        return {"import_ms": 10.0, "first_ms": first_ms, "warm_ms": first_ms / 2, "ir_bytes": 1000}

    row = {
        "mlshift": side(100.0),
        "mlshift-kfp": side(200.0),
        "kfp": side(900.0),
        "speedup_first": 9.0,
        "speedup_warm": 9.0,
        "speedup_first_kfp_ir": 4.5,
        "speedup_warm_kfp_ir": 4.5,
    }
    pipelines = {
        "status": "measured",
        "shape": "chain",
        "sizes": {"500": row},
        "notes": [],
        "measured": measured,
    }
    once = report.splice(before, {"pipelines": pipelines}, ["pipelines"])
    slower = {**row, "speedup_first": 1.5, "speedup_first_kfp_ir": 1.2}
    again = report.splice(once, {"pipelines": {**pipelines, "sizes": {"500": slower}}}, ["pipelines"])
    assert again.count("## Pipelines") == 1
    own = "| 500-step pipeline define + compile vs kfp |"
    same_doc = "| 500-step pipeline compiled to KFP IR vs kfp (same document) |"
    assert again.count(own) == 1 and f"{own} >= 2x faster | 1.5x | MISS" in again
    assert again.count(same_doc) == 1 and f"{same_doc} >= 2x faster | 1.2x | MISS" in again
    # Both rows stay in the targets table, not after it.
    targets = again[again.index("## Targets") : again.index("\n## ", again.index("## Targets") + 1)]
    assert own in targets and same_doc in targets
    section = again[again.index("## Pipelines") : again.index("\n## ", again.index("## Pipelines") + 1)]
    assert "Measured separately (2026-01-01 00:00 UTC" in section
    assert "| 500 | mlshift-kfp | 10.0 ms | 200.0 ms |" in section
    assert before[: before.index("## Targets")] in again


def _bench_module(name: str) -> Any:
    sys.path.insert(0, str(BENCH))
    try:
        import importlib

        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


def test_the_peers_harness_writes_their_configs_and_reads_their_answers(tmp_path: Path) -> None:
    """MLServer and BentoML are not installed here: what mlshift writes for them and reads back is."""
    peers = _bench_module("peers")
    ports = {"http": 8081, "grpc": 8082, "metrics": 8083}
    best = peers.mlserver_files(tmp_path / "best", tmp_path / "m.joblib", best=True, ports=ports)
    settings = json.loads((best / "settings.json").read_text())
    model = json.loads((best / "model-settings.json").read_text())
    assert settings == {"host": "127.0.0.1", "http_port": 8081, "grpc_port": 8082, "metrics_port": 8083,
                        "parallel_workers": 0}  # fmt: skip
    assert model["implementation"] == "mlserver_sklearn.SKLearnModel"
    assert model["parameters"]["uri"] == str(tmp_path / "m.joblib")
    assert (model["max_batch_size"], model["max_batch_time"]) == (64, 0.005)
    default = peers.mlserver_files(tmp_path / "default", tmp_path / "m.joblib", best=False, ports=ports)
    assert "parallel_workers" not in json.loads((default / "settings.json").read_text())
    assert "max_batch_size" not in json.loads((default / "model-settings.json").read_text())
    assert peers.mlserver_command("/venv/bin/python", best) == ["/venv/bin/mlserver", "start", str(best)]

    for batching in (True, False):
        source = peers.bentoml_service(tmp_path / "model.skops", batching=batching)
        compile(source, "service.py", "exec")  # valid Python, whatever bentoml makes of it
        assert ("batchable=True, max_batch_size=64" in source) is batching
        assert repr(str(tmp_path / "model.skops")) in source
    command = peers.bentoml_command("/venv/bin/python", tmp_path, 9000)
    assert command[:3] == ["/venv/bin/bentoml", "serve", "service:Model"]
    assert command[command.index("--port") + 1] == "9000" and "127.0.0.1" in command

    body = json.loads(peers.v2_body([[1.0, 2.0], [3.0, 4.0]]))
    assert body == {
        "inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP64", "data": [1.0, 2.0, 3.0, 4.0]}]
    }
    assert json.loads(peers.bentoml_body([[1.0, 2.0]])) == {"instances": [[1.0, 2.0]]}
    # Each protocol's answer, as those servers send it.
    mlserver = (
        b'{"model_name":"model","outputs":[{"name":"predict","shape":[2,1],"datatype":"INT64","data":[0,1]}]}'
    )
    assert peers.predictions_of("mlserver-best", mlserver) == [0, 1]
    nested = b'{"outputs":[{"name":"predictions","shape":[2,1],"datatype":"INT64","data":[[0],[1]]}]}'
    assert peers.predictions_of("mlshift-v2", nested) == [0, 1]
    assert peers.predictions_of("bentoml-batch", b"[1, 0]") == [1, 0]
    assert peers.predictions_of("mlshift", b'{"predictions": [1]}') == [1]


def test_peer_ratios_pick_the_best_peer_and_the_report_judges_against_it() -> None:
    peers, report = _bench_module("peers"), _bench_module("report")

    def row(rps: float | None, p99: float, cold: float) -> dict[str, Any]:
        return {"rps": rps, "p99_ms": p99, "cold_start_s": cold}

    servers = {
        "mlshift": row(2000, 10, 1.0),
        "mlshift-v2": row(2400, 8, 1.0),
        "mlserver-best": row(1000, 20, 3.0),
        "mlserver-default": row(None, 0, 3.0),  # failed: never the best
        "bentoml-batch": row(500, 40, 5.0),
    }
    assert peers.best_peer(servers) == "mlserver-best"
    ratios = peers.peer_ratios(servers)
    assert ratios["mlserver-best"] == {"rps": 2.4, "p99": 0.4, "cold_start": 0.333, "rps_v2": 2.4}
    assert ratios["mlserver-default"]["rps"] is None
    results = {"peers": {"best_peer": "mlserver-best", "ratios": ratios, "notes": []}}
    got = {t["target"]: t["status"] for t in report.evaluate_targets(results)}
    assert got["req/s vs the best peer (16 conns, 1 row)"] == "pass"
    assert got["p99 vs the best peer (16 conns, 1 row)"] == "pass"
    results["peers"]["ratios"]["mlserver-best"]["rps"] = 1.9
    got = {t["target"]: t["status"] for t in report.evaluate_targets(results)}
    assert got["req/s vs the best peer (16 conns, 1 row)"] == "MISS"
    # No peer measured: "not measured", never a pass.
    got = {t["target"]: t["status"] for t in report.evaluate_targets({"peers": {"notes": ["no peers"]}})}
    assert got["req/s vs the best peer (16 conns, 1 row)"] == "not measured"
    assert got["req/s through the local router vs the variant's own URL (16 conns, 1 row)"] == "not measured"


def test_peers_router_and_workers_splice_into_the_page() -> None:
    report = _bench_module("report")
    before = (ROOT / "docs" / "performance.md").read_text()
    measured = {"date": "2026-01-01 00:00 UTC", "load_start": 1.0, "load_end": 2.0, "command": "x"}
    router = {
        "load_generator": "wrk", "cpus": {"server": 0, "load_generator": 1}, "connections": 16,
        "duration_s": 4, "repeat": 3, "router_cpu_us_per_req": 200.0, "measured": measured,
        "configs": {n: {"rps": 1000.0, "p50_ms": 5.0, "p99_ms": 9.0, "replica_cpu_us_per_req": 300.0,
                        "failed_runs": 0, "runs": 3} for n in ("direct", "router")},
        "ratios": {"rps_router_vs_direct": 0.9, "p99_added_ms": 0.5},
    }  # fmt: skip
    once = report.splice(before, {"router": router}, ["router"])
    worse = {**router, "ratios": {"rps_router_vs_direct": 0.8, "p99_added_ms": 2.0}}
    again = report.splice(once, {"router": worse}, ["router"])
    assert again.count("## The router hop") == 1
    target = "| req/s through the local router vs the variant's own URL (16 conns, 1 row) |"
    assert again.count(target) == 1 and f"{target} >= 0.85x | 0.80x | MISS" in again
    assert "Measured separately (2026-01-01 00:00 UTC" in again
    assert before[: before.index("## Targets")] in again
    with pytest.raises(ValueError, match="cannot splice serving"):
        report.splice(before, {}, ["serving"])


def test_the_router_hop_is_measured(quick_run: tuple[dict[str, Any], str]) -> None:
    router = quick_run[0]["router"]
    for row in router["configs"].values():
        assert row["failed_runs"] == 0 and row["non200"] == 0 and row["rps"] > 0
    assert router["ratios"]["rps_router_vs_direct"] > 0
    assert "## The router hop" in quick_run[1]
