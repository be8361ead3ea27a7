"""kfp://HOST: pipelines on a self-hosted Kubeflow Pipelines, through its v2beta1 REST API.

The end-to-end tests run against FakeKubeflow, which runs every step for real (a subprocess per
step, as `python -m mlshift.pipelines.kfp_step` in the image would).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlshift
from kfp_pipelines import gated, make, nightly, nightly_paris, waiting
from mlshift.adapter import Capability
from mlshift.errors import AuthError, ConfigError, NotFound
from mlshift.pipelines import pipeline
from mlshift.specs.endpoint import EndpointSpec
from mlshift_vertex.kfp import KubeflowAdapter, KubeflowApiError, KubeflowPipelineService, PipelinesOnlyTarget
from mlshift_vertex.kfp.testing import FakeKubeflow, evaluate_condition


@pytest.fixture(autouse=True)
def kfp_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """The `kfp` entry point, where the installed metadata predates it (an editable install made
    before it was added); a fresh install has it."""
    import mlshift._registry as registry

    found = registry._entry_points()
    if "kfp" not in found:
        monkeypatch.setattr(
            registry, "_entry_points", lambda: {**found, "kfp": "mlshift_vertex.kfp:KubeflowAdapter"}
        )
    for key in ("MLSHIFT_KFP_TOKEN", "MLSHIFT_KFP_IMAGE", "MLSHIFT_KFP_STEP_TARGET"):
        monkeypatch.delenv(key, raising=False)


def adapter(uri: str, **options: Any) -> KubeflowAdapter:
    from mlshift._registry import parse_target_uri

    return KubeflowAdapter.from_uri(parse_target_uri(uri), options, base_dir=Path.cwd())


@pytest.fixture
def kfp() -> Iterator[FakeKubeflow]:
    with FakeKubeflow() as fake:
        yield fake


@pytest.fixture
def client(kfp: FakeKubeflow) -> Iterator[mlshift.Client]:
    with mlshift.connect(kfp.target, options={"poll_interval": 0.05}) as c:
        yield c


# ------------------------------------------------------------------------------ the target


def test_plain_http_only_to_loopback() -> None:
    assert adapter("kfp://127.0.0.1:8888").base_url == "http://127.0.0.1:8888"
    assert adapter("kfp://localhost:8888/pipeline").base_url == "http://localhost:8888/pipeline"
    assert adapter("kfp://127.0.0.1:8888?tls=true").base_url == "https://127.0.0.1:8888"
    assert adapter("kfp://kubeflow.example.com/pipeline").base_url == "https://kubeflow.example.com/pipeline"
    assert adapter("kfp://10.0.0.5:8888").base_url == "https://10.0.0.5:8888"


@pytest.mark.parametrize(
    ("uri", "options", "words"),
    [
        ("kfp://", {}, "no host"),
        ("kfp://host:99999", {}, "is not HOST[:PORT]"),
        ("kfp://user:pw@host", {}, "credentials in the URI"),
        ("kfp://host?bogus=1", {}, "target.options"),
        ("kfp://host", {"api_token": "x"}, "looks like a credential"),
        ("kfp://host", {"step_target": "kfp://other"}, "no models or endpoints"),
        ("kfp://host", {"step_target": "prod"}, "not a target URI"),
        ("kfp://host", {"token_env": "not a name"}, "token_env"),
        ("kfp+grpc://host", {}, "no 'grpc' variant"),
    ],
)
def test_malformed_targets_are_refused_by_name(uri: str, options: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        adapter(uri, **options)


def test_it_declares_pipelines_only() -> None:
    a = adapter("kfp://127.0.0.1:1")
    assert a.capabilities == {Capability.PIPELINES, Capability.PIPELINE_CONDITIONS, Capability.SCHEDULES}
    assert a.pipelines is not None


def test_endpoints_and_models_are_refused_at_plan_time_before_any_request(
    kfp: FakeKubeflow, client: mlshift.Client
) -> None:
    spec = EndpointSpec.model_validate({"name": "iris", "variants": [{"name": "a", "model": "iris:1"}]})
    with pytest.raises(PipelinesOnlyTarget, match="pipelines-only target") as caught:
        client.plan(spec)
    assert "targets that serve models: local://, sagemaker://" in caught.value.message
    with pytest.raises(PipelinesOnlyTarget, match="cannot list models"):
        client.models.list()
    with pytest.raises(PipelinesOnlyTarget):
        client.endpoints.list()
    assert kfp.calls == []


# ------------------------------------------------------------------------------ runs


def test_a_pipeline_runs_its_steps_and_the_next_run_comes_from_cache(
    kfp: FakeKubeflow, client: mlshift.Client
) -> None:
    run = client.pipelines.run(gated).wait(180)
    assert run.status == "succeeded", run.message
    steps = {s.name: s.status for s in run.steps}
    assert steps == {
        "make": "succeeded",
        "score": "succeeded",
        "count": "succeeded",
        "publish": "succeeded",
        "fail": "skipped",
    }
    assert "publishing 3 rows tagged a" in kfp.log(run.id, "publish")
    assert "kubectl logs" in run.logs("publish")

    again = client.pipelines.run(gated).wait(180)
    assert again.status == "succeeded"
    # publish has caching off; the others come from the cache
    assert {s.name: s.status for s in again.steps} == {
        **steps,
        "make": "cached",
        "score": "cached",
        "count": "cached",
    }
    uploads = [c.path for c in kfp.calls if c.method == "POST" and "/upload" in c.path]
    assert uploads == ["/apis/v2beta1/pipelines/upload", "/apis/v2beta1/pipelines/upload_version"]
    assert [r.id for r in client.pipelines.list("gated")] == [again.id, run.id]
    assert client.pipelines.list("nothing-like-it") == []


def test_parameters_reach_the_steps_and_a_closed_gate_fails_the_run(
    kfp: FakeKubeflow, client: mlshift.Client
) -> None:
    run = client.pipelines.run(gated, params={"rows": 1, "tag": "z"}).wait(180)
    assert run.status == "failed"
    assert "not enough rows" in (run.message or "")
    assert (
        run.message
        == "step 'fail' failed: not enough rows: score.metrics['share'] = 0.1, needs >= 0.2 (threshold)"
    )
    steps = {s.name: s.status for s in run.steps}
    assert steps["fail"] == "failed" and steps["publish"] == "skipped"
    assert kfp.run(run.id)["runtime_config"]["parameters"] == {"rows": 1, "tag": "z", "threshold": 0.2}


def test_a_run_started_elsewhere_is_read_from_its_pipeline_version(
    kfp: FakeKubeflow, client: mlshift.Client
) -> None:
    run_id = client.pipelines.run(gated).id
    with mlshift.connect(kfp.target, options={"poll_interval": 0.05}) as other:
        run = other.pipelines.get(run_id).wait(180)
        assert run.pipeline == "gated"
        assert [s.name for s in run.steps][:1] == ["make"]
        assert {s.name for s in run.steps} == {"make", "score", "count", "publish", "fail"}
        assert {s.name: s.kind for s in run.steps}["fail"] == "fail"


def test_without_cache_a_new_version_is_uploaded_and_every_step_runs(
    kfp: FakeKubeflow, client: mlshift.Client
) -> None:
    client.pipelines.run(gated).wait(180)
    run = client.pipelines.run(gated, cache=False).wait(180)
    assert run.status == "succeeded"
    assert "cached" not in {s.status for s in run.steps}
    assert len(kfp.versions()) == 3  # the upload's first version, then one per distinct spec


def test_a_failing_task_fails_the_run_naming_the_step(kfp: FakeKubeflow, client: mlshift.Client) -> None:
    kfp.fail_task("score", "OOMKilled")
    run = client.pipelines.run(gated, cache=False).wait(180)
    assert run.status == "failed"
    assert run.message == "step 'score' failed: OOMKilled"
    steps = {s.name: s.status for s in run.steps}
    assert steps["score"] == "failed" and steps["publish"] == "skipped"


def test_cancel_terminates_the_run(kfp: FakeKubeflow, client: mlshift.Client) -> None:
    run = client.pipelines.run(waiting)
    deadline = time.monotonic() + 60
    while run.steps[0].status != "running":
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.05)
    run.cancel()
    run.wait(60)
    assert run.status == "cancelled"
    assert any(c.path.endswith(":terminate") for c in kfp.calls)


def test_bad_parameters_are_refused_before_anything_is_sent(
    kfp: FakeKubeflow, client: mlshift.Client
) -> None:
    with pytest.raises(ConfigError, match="rows"):
        client.pipelines.run(gated, params={"rows": "many"})
    assert kfp.calls == []


def test_a_schedule_is_one_recurring_run_replaced_only_when_it_changes(
    kfp: FakeKubeflow, client: mlshift.Client
) -> None:
    service = client.adapter.pipelines
    assert isinstance(service, KubeflowPipelineService)
    assert service.sync_schedule(nightly.ir, dry_run=True).action == "created"
    assert [c for c in kfp.calls if c.method != "GET"] == []
    first = service.sync_schedule(nightly.ir)
    (recurring,) = kfp.recurring_runs()
    assert first.action == "created" and first.schedule_id == recurring["recurring_run_id"]
    assert recurring["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert (recurring["no_catchup"], recurring["max_concurrency"], recurring["mode"]) == (True, 1, "ENABLE")
    assert recurring["runtime_config"]["parameters"] == {"rows": 3}

    changes = [c for c in kfp.calls if c.method != "GET"]
    assert service.sync_schedule(nightly.ir) == dataclasses.replace(first, action="unchanged")
    assert [c for c in kfp.calls if c.method != "GET"] == changes  # unchanged: nothing sent

    assert service.sync_schedule(nightly.ir, {"rows": 5}, dry_run=True).action == "updated"
    assert [c for c in kfp.calls if c.method != "GET"] == changes
    second = service.sync_schedule(nightly.ir, {"rows": 5})
    assert second.action == "updated" and second.schedule_id != first.schedule_id
    assert [r["recurring_run_id"] for r in kfp.recurring_runs()] == [second.schedule_id]
    assert second.schedule_id is not None
    run = client.pipelines.get(kfp.fire(second.schedule_id)).wait(180)
    assert run.status == "succeeded" and run.params == {"rows": 5}
    assert service.delete_schedule("nightly").action == "deleted" and kfp.recurring_runs() == []
    assert service.delete_schedule("nightly").action == "absent"


def test_client_pipelines_schedule_keeps_a_recurring_run(kfp: FakeKubeflow, client: mlshift.Client) -> None:
    assert Capability.SCHEDULES in client.adapter.capabilities
    assert client.pipelines.schedule(nightly).action == "created"
    changes = [c for c in kfp.calls if c.method != "GET"]
    assert client.pipelines.schedule(nightly).action == "unchanged"
    assert [c for c in kfp.calls if c.method != "GET"] == changes

    @pipeline(name="nightly", schedule="30 4 * * 1")
    def weekly(rows: int = 3) -> None:
        make(rows=rows)

    moved = client.pipelines.schedule(weekly)
    assert (moved.action, moved.cron) == ("updated", "30 4 * * 1")
    (recurring,) = kfp.recurring_runs()
    assert recurring["trigger"] == {"cron_schedule": {"cron": "0 30 4 * * 1"}}
    assert client.pipelines.unschedule("nightly").action == "deleted" and kfp.recurring_runs() == []


def test_schedules_kfp_cannot_keep_are_refused_before_anything_is_sent(
    kfp: FakeKubeflow, client: mlshift.Client
) -> None:
    service = client.adapter.pipelines
    assert isinstance(service, KubeflowPipelineService)
    with pytest.raises(ConfigError, match="UTC") as caught:
        service.sync_schedule(nightly_paris.ir)
    assert caught.value.field == "schedule.timezone"
    assert kfp.calls == []
    assert service.sync_schedule(gated.ir).action == "absent"  # no schedule: nothing to keep
    assert [c for c in kfp.calls if c.method != "GET"] == []


# ------------------------------------------------------------------------------ faults and auth


def test_api_errors_become_named_mlshift_errors(kfp: FakeKubeflow, client: mlshift.Client) -> None:
    kfp.fail("POST .*/runs$", 500, "database is locked")
    with pytest.raises(KubeflowApiError, match="database is locked"):
        client.pipelines.run(gated)
    with pytest.raises(NotFound):
        client.pipelines.get("no-such-run")


def test_the_bearer_token_comes_from_the_environment_and_is_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "s3cr3t-token-value"
    with FakeKubeflow(token=secret) as kfp:
        with mlshift.connect(kfp.target) as c, pytest.raises(AuthError) as caught:
            c.pipelines.list()
        assert secret not in str(caught.value) and "MLSHIFT_KFP_TOKEN" in str(caught.value)
        monkeypatch.setenv("MLSHIFT_KFP_TOKEN", secret)
        with mlshift.connect(kfp.target) as c:
            assert c.pipelines.list() == []
            assert secret not in repr(c.adapter) + repr(vars(c.adapter))


def test_an_unreachable_server_says_how_to_reach_it() -> None:
    import socket

    # Bound but not listening: connections are refused, and no other process can take the
    # port meanwhile (as it could once the socket were closed).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with (
            mlshift.connect(f"kfp://127.0.0.1:{port}") as c,
            pytest.raises(mlshift.errors.ProviderError, match="port-forward"),
        ):
            c.pipelines.list()


# ------------------------------------------------------------------------------ compile


def test_compile_for_a_kfp_target_is_kfp_ir_in_its_image() -> None:
    from mlshift._client import compile_pipeline

    spec = compile_pipeline(gated, "kfp://127.0.0.1:1?image=registry.example/mlshift-serving:1")
    assert spec["schemaVersion"] == "2.1.0"
    assert (
        spec["deploymentSpec"]["executors"]["exec-make"]["container"]["image"]
        == "registry.example/mlshift-serving:1"
    )


def test_conditions_evaluate_as_cel() -> None:
    values = {"a": 0.5, "n": 3, "s": "x"}
    assert evaluate_condition("inputs.parameter_values['a'] >= 0.25", values)
    assert not evaluate_condition("!(inputs.parameter_values['a'] >= 0.25)", values)
    assert evaluate_condition("double(inputs.parameter_values['n']) > inputs.parameter_values['a']", values)
    assert evaluate_condition(
        "inputs.parameter_values['s'] == 'x' && int(inputs.parameter_values['n']) == 3", values
    )
    with pytest.raises(ValueError):
        evaluate_condition("__import__('os')", values)
    # Operators inside a string literal are text, not CEL.
    quoted = {"s": "a && !true || b"}
    assert evaluate_condition("inputs.parameter_values['s'] == 'a && !true || b'", quoted)
    with pytest.raises(ValueError, match="missing input 'zz'"):
        evaluate_condition("inputs.parameter_values['zz'] > 1", values)


def test_register_and_deploy_steps_need_the_step_target_option() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples"))
    try:
        from train_gate_deploy import train_gate_deploy
    finally:
        sys.path.pop(0)
    with pytest.raises(ConfigError, match="step 'register'") as caught:
        adapter("kfp://127.0.0.1:1").pipelines.compile(train_gate_deploy.ir)
    assert "step_target" in (caught.value.hint or "")
    spec = adapter("kfp://127.0.0.1:1", step_target="vertex://acme/europe-west4").pipelines.compile(
        train_gate_deploy.ir
    )
    register = spec["deploymentSpec"]["executors"]["exec-register"]["container"]["args"]
    assert '"target": "vertex://acme/europe-west4"' in register[register.index("--task") + 1]
