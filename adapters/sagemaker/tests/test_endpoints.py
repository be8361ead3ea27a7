"""Endpoints: models, configurations, weights, live state, faults, no orphans, locks."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import pytest

import mlshift
from mlshift.adapter import RolloutRecord
from mlshift.errors import (
    ConfigError,
    Conflict,
    LeaseLost,
    NotFound,
    ProviderError,
    ProviderTimeout,
    QuotaExceeded,
)
from mlshift.specs import EndpointSpec, ModelSpec, ProjectFile
from mlshift_sagemaker.testing import FakeSageMaker
from sagemaker_helpers import refused_before_any_change, sagemaker

QUOTA_MESSAGE = (
    "The account-level service limit 'ml.m5.large for endpoint usage' is 0 Instances, with current "
    "utilization of 0 Instances and a request delta of 1 Instances."
)


def sagemaker_ops(aws: FakeSageMaker, since: int = 0) -> list[str]:
    return [c.operation for c in aws.mutating_calls(since=since, service="sagemaker")]


def test_deploy_makes_a_model_a_config_and_an_endpoint_and_predicts(
    client: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    mark = len(aws.calls)
    state = client.endpoints.deploy("iris-ep", "iris:1", tags={"team": "ml"})
    assert sagemaker_ops(aws, mark) == ["CreateModel", "CreateEndpointConfig", "CreateEndpoint"]
    assert (state.status, state.weights, state.tags) == ("healthy", {"iris-v1": 100}, {"team": "ml"})
    assert state.variants[0].compute.size == "cpu-small"
    config = aws.backend().endpoint_configs[aws.backend().endpoints["iris-ep"].endpoint_config_name]
    assert config.production_variants[0]["InstanceType"] == "ml.m5.large"
    model = aws.backend()._models[config.production_variants[0]["ModelName"]]
    assert model.execution_role_arn == aws.role_arn
    assert model.primary_container["Environment"]["MLSHIFT_MODEL_REF"] == "iris:1"
    assert client.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]


def test_a_split_routes_real_requests_by_weight(
    deployed: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    deployed.endpoints.deploy("iris-ep", "iris:2", traffic=20)
    seen = Counter(deployed.endpoints.predict("iris-ep", iris["rows"][:1]).variant for _ in range(50))
    assert seen == {"iris-v1": 40, "iris-v2": 10}
    assert aws.invocations[("iris-ep", "iris-v2")] == 10
    only_v2 = deployed.endpoints.predict("iris-ep", iris["rows"], variant="iris-v2")
    assert (only_v2.variant, only_v2.predictions) == ("iris-v2", iris["expected_v2"])


def test_a_pure_weight_change_is_one_weights_call(deployed: mlshift.Client, aws: FakeSageMaker) -> None:
    deployed.endpoints.deploy("iris-ep", "iris:2", traffic=20)
    config = aws.backend().endpoints["iris-ep"].endpoint_config_name
    mark = len(aws.calls)
    state = deployed.endpoints.set_traffic("iris-ep", {"iris-v1": 50, "iris-v2": 50})
    assert sagemaker_ops(aws, mark) == ["UpdateEndpointWeightsAndCapacities"]
    assert state.weights == {"iris-v1": 50, "iris-v2": 50}
    assert aws.backend().endpoints["iris-ep"].endpoint_config_name == config


def test_a_new_variant_is_a_new_config_and_the_old_one_is_retired(
    deployed: mlshift.Client, aws: FakeSageMaker
) -> None:
    before = aws.resources()
    mark = len(aws.calls)
    deployed.endpoints.deploy("iris-ep", "iris:2")  # all traffic to iris:2, iris-v1 goes away
    assert sagemaker_ops(aws, mark) == [
        "CreateModel",  # iris-v2
        "CreateEndpointConfig",
        "UpdateEndpoint",  # add iris-v2 at 0%
        "DeleteEndpointConfig",
        "UpdateEndpointWeightsAndCapacities",  # 0/100
        "CreateEndpointConfig",
        "UpdateEndpoint",  # without iris-v1
        "DeleteEndpointConfig",
        "DeleteModel",  # iris-v1's model, no longer used
    ]
    after = aws.resources()
    assert len(after["models"]) == len(after["endpoint_configs"]) == 1
    assert after["models"] != before["models"] and after["endpoint_configs"] != before["endpoint_configs"]


def test_reapplying_an_unchanged_project_makes_no_mutating_call_and_uploads_nothing(
    client: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    project = ProjectFile(
        models=(
            ModelSpec(name="iris", path=str(iris["v1"]), framework="sklearn", metrics={"accuracy": 0.9}),
        ),
        endpoints=(
            EndpointSpec.model_validate(
                {
                    "name": "iris-ep",
                    "variants": [{"name": "main", "model": "iris", "weight": 100}],
                    "compute": {"size": "cpu-medium", "replicas": 2},
                    "tags": {"team": "ml"},
                    "provider_options": {
                        "sagemaker": {"environment": {"LOG_LEVEL": "info"}},
                        "local": {"port": 8600},
                    },
                }
            ),
        ),
    )
    first = client.apply(project)
    assert first.changed and aws.bytes_uploaded() > 0
    mark = len(aws.calls)
    plan = client.plan(project)
    result = client.apply(project)
    assert plan.is_empty and not result.changed, plan.render()
    assert aws.mutating_calls(since=mark) == []
    assert aws.bytes_uploaded(since=mark) == 0
    # the same holds for a fresh process: nothing is remembered in memory
    with mlshift.connect("sagemaker://us-east-1") as other:
        mark = len(aws.calls)
        assert other.plan(project).is_empty
        assert aws.mutating_calls(since=mark) == []


def test_throttling_on_every_call_for_two_attempts_still_converges(
    client: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    aws.throttle(attempts=2)
    client.models.register("iris", iris["v1"], framework="sklearn")
    state = client.endpoints.deploy("iris-ep", "iris:1")
    assert state.status == "healthy"
    assert client.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]
    first = [c for c in aws.calls if c.attempt == 1]
    assert first and all(c.fault == "ThrottlingException" for c in first)
    assert Counter(c.attempt for c in aws.calls) == {1: len(first), 2: len(first), 3: len(first)}
    assert all(c.fault is None for c in aws.calls if c.attempt == 3)
    assert len(aws.retry_sleeps) == 2 * len(first) and all(s >= 0 for s in aws.retry_sleeps)
    resources = aws.resources()  # retried creates made exactly one of each, nothing extra
    assert (len(resources["models"]), len(resources["endpoint_configs"]), resources["endpoints"]) == (
        1,
        1,
        ["iris-ep"],
    )


def test_throttling_that_outlasts_the_retries_is_quota_exceeded(
    client: mlshift.Client, aws: FakeSageMaker
) -> None:
    aws.throttle(attempts=99, service="sagemaker")
    with pytest.raises(QuotaExceeded) as caught:
        client.models.list()
    assert caught.value.provider_code == "ThrottlingException"
    assert len(aws.calls) == sagemaker(client).options.max_attempts


def test_a_server_error_is_retried(deployed: mlshift.Client, aws: FakeSageMaker) -> None:
    aws.server_error("DescribeEndpoint", times=2)
    mark = len(aws.calls)
    assert deployed.endpoints.get("iris-ep").status == "healthy"
    assert [c.fault for c in aws.calls[mark:] if c.operation == "DescribeEndpoint"][:3] == [
        "InternalFailure",
        "InternalFailure",
        None,
    ]


def test_a_quota_error_is_quota_exceeded_with_the_aws_message_and_leaves_nothing(
    client: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    aws.fail("CreateEndpoint", "ResourceLimitExceeded", QUOTA_MESSAGE)
    with pytest.raises(QuotaExceeded) as caught:
        client.endpoints.deploy("iris-ep", "iris:1")
    error = caught.value
    assert QUOTA_MESSAGE in str(error) and error.provider_code == "ResourceLimitExceeded"
    from botocore.exceptions import ClientError

    assert isinstance(error.orig, ClientError)
    assert "Service Quotas" in (error.hint or "")
    assert aws.resources() == {"models": [], "endpoint_configs": [], "endpoints": [], "alarms": []}
    assert sagemaker(client).store.list_keys("mlshift/endpoints/") == []
    history = client.endpoints.history("iris-ep")
    assert history[0].phase == "failed" and "ResourceLimitExceeded" in (history[0].reason or "")


def test_a_quota_error_while_adding_a_variant_keeps_the_endpoint_as_it_was(
    deployed: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    before = aws.resources()
    aws.fail("UpdateEndpoint", "ResourceLimitExceeded", QUOTA_MESSAGE)
    with pytest.raises(QuotaExceeded, match="ml.m5.large for endpoint usage"):
        deployed.endpoints.deploy("iris-ep", "iris:2", traffic=20)
    assert aws.resources() == before
    assert deployed.endpoints.get("iris-ep").weights == {"iris-v1": 100}
    assert deployed.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]


def test_an_endpoint_that_never_turns_healthy_fails_and_is_removed(
    client: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    aws.never_healthy("iris-ep")
    with pytest.raises(ProviderError, match="did not pass the ping health check") as caught:
        client.endpoints.deploy("iris-ep", "iris:1")
    assert "failed to start and was deleted" in str(caught.value)
    assert aws.resources() == {"models": [], "endpoint_configs": [], "endpoints": [], "alarms": []}


def test_an_update_that_never_turns_healthy_is_rolled_back_by_sagemaker(
    deployed: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    before = aws.resources()
    aws.never_healthy("iris-ep")
    with pytest.raises(ProviderError, match="rolled the update of 'iris-ep' back"):
        deployed.endpoints.deploy("iris-ep", "iris:2", traffic=20)
    assert aws.resources() == before
    assert deployed.endpoints.get("iris-ep").status == "healthy"
    assert deployed.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]


def test_a_deployment_that_hangs_times_out(aws: FakeSageMaker, iris: dict[str, Any]) -> None:
    with mlshift.connect("sagemaker://us-east-1?wait_timeout=0.3") as client:
        client.models.register("iris", iris["v1"], framework="sklearn")
        aws.never_healthy("iris-ep", hang=True)
        started = time.monotonic()
        with pytest.raises(ProviderTimeout, match="did not finish within 0.3 s"):
            client.endpoints.deploy("iris-ep", "iris:1")
        assert time.monotonic() - started < 10
        assert client.endpoints.get("iris-ep").status == "creating"
        aws.healthy_again()
        client.endpoints.delete("iris-ep")
        assert aws.resources()["endpoints"] == []


def test_live_states_are_read_into_neutral_terms(
    deployed: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    from mlshift.adapter import ResolvedVariant

    adapter = deployed.adapter
    version = deployed.models.get("iris:2")
    op = adapter.endpoints.add_variant("iris-ep", ResolvedVariant(name="canary", model=version, weight=0))
    assert adapter.endpoints.observe("iris-ep").status == "creating"  # type: ignore[union-attr]
    assert adapter.endpoints.observe("iris-ep").variants[0].status == "healthy"  # type: ignore[union-attr]
    state = op.wait()
    assert state.status == "healthy" and state.weights == {"iris-v1": 100, "canary": 0}
    assert state.variant("canary").model == "iris:2"  # type: ignore[union-attr]


def test_an_exact_instance_type_comes_from_provider_options(
    client: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    state = client.endpoints.deploy(
        "iris-ep",
        "iris:1",
        size="gpu-small",
        provider_options={"sagemaker": {"instance_type": "ml.g5.xlarge"}},
    )
    assert state.variants[0].compute.size == "gpu-small"
    config = aws.backend().endpoint_configs[aws.backend().endpoints["iris-ep"].endpoint_config_name]
    assert config.production_variants[0]["InstanceType"] == "ml.g5.xlarge"


def test_sizes_map_to_the_documented_instance_types(
    client: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.endpoints.deploy("iris-ep", "iris:1", size="gpu-small", replicas=2)
    config = aws.backend().endpoint_configs[aws.backend().endpoints["iris-ep"].endpoint_config_name]
    variant = config.production_variants[0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.g4dn.xlarge", 2)


@pytest.mark.parametrize(
    ("options", "field", "words"),
    [
        (
            {"sagemaker": {"instance_type": "ml.m5.huge"}},
            "provider_options.sagemaker.instance_type",
            "unknown SageMaker",
        ),
        (
            {"sagemaker": {"instance_type": "ml.g5.xlarg"}},
            "provider_options.sagemaker.instance_type",
            "did you mean ml.g5.xlarge",
        ),
        (
            {"sagemaker": {"instance_typ": "ml.m5.large"}},
            "provider_options.sagemaker.instance_typ",
            "unknown field",
        ),
        (
            {"sagemaker": {"environment": {"MLSHIFT_X": "1"}}},
            "provider_options.sagemaker.environment",
            "set by mlshift",
        ),
    ],
)
def test_bad_provider_options_fail_at_plan_time_naming_the_field(
    client: mlshift.Client,
    aws: FakeSageMaker,
    iris: dict[str, Any],
    options: dict[str, Any],
    field: str,
    words: str,
) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    with refused_before_any_change(aws, field, match=re.escape(words)):
        client.endpoints.deploy("iris-ep", "iris:1", provider_options=options)


def test_other_targets_options_are_left_to_them(client: mlshift.Client, iris: dict[str, Any]) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    state = client.endpoints.deploy(
        "iris-ep",
        "iris:1",
        provider_options={"local": {"port": 8500}, "vertex": {"machine_type": "n1-standard-2"}},
    )
    assert state.status == "healthy"


@pytest.mark.parametrize(
    ("endpoint", "variant", "field"),
    [("e" * 64, None, "name"), ("iris_ep", None, "name"), ("iris-ep", "blue_green", "variants[0].name")],
)
def test_names_sagemaker_refuses_fail_at_plan_time(
    client: mlshift.Client,
    aws: FakeSageMaker,
    iris: dict[str, Any],
    endpoint: str,
    variant: str | None,
    field: str,
) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    with refused_before_any_change(aws, field, match="SageMaker names use letters"):
        client.endpoints.deploy(endpoint, "iris:1", variant=variant)


def test_the_role_is_needed_to_deploy_and_named_when_missing(
    aws: FakeSageMaker, iris: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLSHIFT_SAGEMAKER_ROLE_ARN")
    with mlshift.connect("sagemaker://us-east-1") as client:
        client.models.register("iris", iris["v1"], framework="sklearn")  # registering needs none
        with pytest.raises(ConfigError) as caught:
            client.endpoints.deploy("iris-ep", "iris:1")
    assert caught.value.field == "target.options.role_arn"


def test_tags_user_target_and_mlshift(aws: FakeSageMaker, iris: dict[str, Any]) -> None:
    with mlshift.connect("sagemaker://us-east-1", options={"tags": {"cost-center": "42"}}) as client:
        client.models.register("iris", iris["v1"], framework="sklearn")
        state = client.endpoints.deploy("iris-ep", "iris:1", tags={"team": "ml"})
        assert state.tags == {"team": "ml"}  # only the spec's own tags: the plan compares these
        sm = sagemaker(client).clients.client("sagemaker")
        arn = aws.backend().endpoints["iris-ep"].arn
        tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}
        assert tags["cost-center"] == "42" and tags["mlshift:managed"] == "true" and "mlshift:spec" in tags
        mark = len(aws.calls)
        state = client.endpoints.deploy("iris-ep", "iris:1", tags={"team": "platform", "tier": "gold"})
        assert state.tags == {"team": "platform", "tier": "gold"}
        assert sagemaker_ops(aws, mark) == ["AddTags"]


def test_an_endpoint_made_outside_mlshift_is_not_listed(deployed: mlshift.Client, aws: FakeSageMaker) -> None:
    sm = sagemaker(deployed).clients.client("sagemaker")
    config = aws.backend().endpoints["iris-ep"].endpoint_config_name
    sm.create_endpoint(EndpointName="theirs", EndpointConfigName=config)
    assert [e.name for e in deployed.endpoints.list()] == ["iris-ep"]


def test_delete_removes_everything_including_what_a_crash_left(
    deployed: mlshift.Client, aws: FakeSageMaker
) -> None:
    sm = sagemaker(deployed).clients.client("sagemaker")
    live = aws.backend().endpoint_configs[aws.backend().endpoints["iris-ep"].endpoint_config_name]
    # what a process killed between CreateEndpointConfig and UpdateEndpoint leaves behind
    stray = "iris-ep-0123456789ab"
    sm.create_endpoint_config(
        EndpointConfigName=stray,
        ProductionVariants=live.production_variants,
        Tags=[{"Key": "mlshift:endpoint", "Value": "iris-ep"}],
    )
    deployed.endpoints.delete("iris-ep")
    assert aws.resources() == {"models": [], "endpoint_configs": [], "endpoints": [], "alarms": []}
    assert sagemaker(deployed).store.list_keys("mlshift/journal/iris-ep/") == []
    with pytest.raises(NotFound):
        deployed.endpoints.get("iris-ep")


def test_delete_starts_when_called_and_wait_finishes_it(deployed: mlshift.Client, aws: FakeSageMaker) -> None:
    mark = len(aws.calls)
    operation = deployed.adapter.endpoints.delete("iris-ep")
    # The endpoint is on its way out before anyone waits (a caller that never waits still deletes).
    assert "DeleteEndpoint" in aws.operations(since=mark, service="sagemaker")
    assert operation.wait(timeout=60) is None and operation.done()
    assert aws.resources() == {"models": [], "endpoint_configs": [], "endpoints": [], "alarms": []}


def test_resizing_only_the_count_needs_no_new_fleet(deployed: mlshift.Client, aws: FakeSageMaker) -> None:
    def spec(size: str, replicas: int) -> EndpointSpec:
        return EndpointSpec.model_validate(
            {
                "name": "iris-ep",
                "variants": [{"name": "iris-v1", "model": "iris:1"}],
                "compute": {"size": size, "replicas": replicas},
            }
        )

    mark = len(aws.calls)
    deployed.apply(spec("cpu-small", 3))
    assert sagemaker_ops(aws, mark) == ["UpdateEndpointWeightsAndCapacities"]
    assert deployed.endpoints.get("iris-ep").variants[0].compute.replicas == 3
    mark = len(aws.calls)
    deployed.apply(spec("cpu-large", 3))
    assert "UpdateEndpoint" in sagemaker_ops(aws, mark)
    assert deployed.endpoints.get("iris-ep").variants[0].compute.size == "cpu-large"
    assert deployed.plan(spec("cpu-large", 3)).is_empty


def test_invoking_what_does_not_exist_is_not_found(deployed: mlshift.Client, iris: dict[str, Any]) -> None:
    with pytest.raises(NotFound):
        deployed.endpoints.predict("nope", iris["rows"])
    with pytest.raises(NotFound):
        deployed.endpoints.predict("iris-ep", iris["rows"], variant="nope")


# ------------------------------------------------------------------------------------------------
# The journal and the lock


def test_the_journal_is_json_in_the_bucket(deployed: mlshift.Client, aws: FakeSageMaker) -> None:
    store = sagemaker(deployed).store
    keys = store.list_keys("mlshift/journal/iris-ep/")
    assert len(keys) == 1
    record = json.loads(aws.backend("s3").get_object(store.bucket, keys[0]).value)
    assert (record["strategy"], record["phase"], record["endpoint"]) == ("create", "succeeded", "iris-ep")
    with mlshift.connect("sagemaker://us-east-1") as other:  # another process sees it
        assert [r.strategy for r in other.endpoints.history("iris-ep")] == ["create"]


def test_two_deploys_to_one_endpoint_conflict_naming_the_holder(
    deployed: mlshift.Client, aws: FakeSageMaker
) -> None:
    with mlshift.connect("sagemaker://us-east-1") as other:
        held = other.adapter.endpoints.lock("iris-ep", owner="pid 4242 on build-7", timeout=1)
        with held, pytest.raises(Conflict, match="being changed by pid 4242 on build-7"):
            deployed.endpoints.deploy("iris-ep", "iris:2", traffic=10, lock_timeout=0.3)
        state = deployed.endpoints.deploy("iris-ep", "iris:2", traffic=10, lock_timeout=1)
        assert state.weights == {"iris-v1": 90, "iris-v2": 10}


def test_a_dead_holders_lock_expires(deployed: mlshift.Client, aws: FakeSageMaker) -> None:
    store = sagemaker(deployed).store
    store.put_json(
        "mlshift/locks/iris-ep.json",
        {"endpoint": "iris-ep", "owner": "pid 1 on gone", "token": "x", "expires_at": time.time() - 1},
    )
    state = deployed.endpoints.deploy("iris-ep", "iris:2", traffic=10, lock_timeout=1)
    assert state.weights == {"iris-v1": 90, "iris-v2": 10}
    assert store.get_json("mlshift/locks/iris-ep.json") is None  # released after use


def test_a_held_lock_is_renewed(aws: FakeSageMaker) -> None:
    with mlshift.connect("sagemaker://us-east-1?lease_seconds=1.5") as client:
        store = sagemaker(client).store
        with client.adapter.endpoints.lock("ep", owner="me", timeout=1):
            first = store.get_json("mlshift/locks/ep.json")[0]["expires_at"]
            # Renewed every 0.5 s; a loaded machine may be slow, so wait for it, with a deadline.
            deadline = time.monotonic() + 30
            while (second := store.get_json("mlshift/locks/ep.json")[0]["expires_at"]) == first:
                assert time.monotonic() < deadline, "the held lock was not renewed within 30 s"
                time.sleep(0.05)
        assert second > first
        assert store.get_json("mlshift/locks/ep.json") is None  # released after use


def test_environment_values_are_stored_in_s3_only_as_a_digest(
    client: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    secret = "s3cret-token-value"
    spec = EndpointSpec.model_validate(
        {
            "name": "iris-ep",
            "variants": [{"name": "main", "model": "iris:1", "weight": 100}],
            "provider_options": {"sagemaker": {"environment": {"API_TOKEN": secret, "LOG_LEVEL": "info"}}},
        }
    )
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.models.register("iris", iris["v2"], framework="sklearn")
    client.apply(spec)
    adapter = sagemaker(client)
    key = adapter.endpoints._options_key("iris-ep")
    stored = adapter.store.get_json(key)
    assert stored is not None
    document = json.dumps(stored[0])
    assert secret not in document and "info" not in document
    assert stored[0]["environment_sha256"]["names"] == ["API_TOKEN", "LOG_LEVEL"]
    assert client.plan(spec).is_empty  # the digest is enough to tell nothing changed
    # A later change without provider options (deploy) still gives new variants the values,
    # read back from the live models' containers.
    mark = len(aws.calls)
    client.endpoints.deploy("iris-ep", "iris:2")
    created = [
        c.params["PrimaryContainer"] for c in aws.calls[mark:] if c.operation == "CreateModel" and c.params
    ]
    assert created and all(c["Environment"]["API_TOKEN"] == secret for c in created)
    again = adapter.store.get_json(key)
    assert again is not None and secret not in json.dumps(again[0])


def test_a_lost_lock_stops_the_change(aws: FakeSageMaker) -> None:
    with mlshift.connect("sagemaker://us-east-1?lease_seconds=1.5") as client:
        store = sagemaker(client).store
        record = RolloutRecord(
            id="20260101T000000-x", endpoint="ep", strategy="canary", started_at=datetime.now(timezone.utc)
        )
        noticed = False
        with (
            pytest.raises(LeaseLost, match=r"lost the lock of endpoint 'ep'.*pid 9 on other"),
            client.adapter.endpoints.lock("ep", owner="me", timeout=1),
        ):
            # Another process takes the lock over (as if ours had expired while we hung).
            store.put_json(
                "mlshift/locks/ep.json",
                {
                    "endpoint": "ep",
                    "owner": "pid 9 on other",
                    "token": "y",
                    "expires_at": time.time() + 60,
                },
            )
            deadline = time.monotonic() + 30
            while True:  # the next renewal finds the lease gone
                try:
                    client.adapter.endpoints.record_rollout(record)
                except LeaseLost:
                    noticed = True  # the journal refuses: the apply would stop here
                    break
                assert time.monotonic() < deadline, "losing the lock was not noticed within 30 s"
                time.sleep(0.05)
        # ...and leaving the block without an error still raises LeaseLost.
        assert noticed
        # The other holder's lease is not released by us.
        assert store.get_json("mlshift/locks/ep.json")[0]["owner"] == "pid 9 on other"


def test_a_variants_batching_goes_to_the_models_environment(
    client: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    from mlshift.specs import EndpointSpec

    client.models.register("iris", iris["v1"], framework="sklearn")
    client.apply(
        EndpointSpec.model_validate(
            {
                "name": "iris-ep",
                "variants": [{"name": "iris-v1", "model": "iris:1", "batching": {"max_batch_size": 16}}],
            }
        )
    )
    config = aws.backend().endpoint_configs[aws.backend().endpoints["iris-ep"].endpoint_config_name]
    env = aws.backend()._models[config.production_variants[0]["ModelName"]].primary_container["Environment"]
    assert (env["MLSHIFT_MAX_BATCH_SIZE"], env["MLSHIFT_MAX_LATENCY_MS"]) == ("16", "5")
    assert client.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]
