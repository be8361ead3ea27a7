"""Type-checked (not run): the public API as users write it, under ``mypy --strict``.

If a change to mlshift's signatures breaks ordinary user code, ``nox -s typing`` fails here.
"""

from __future__ import annotations

from pathlib import Path

import mlshift
from mlshift.specs import EndpointSpec, ModelSpec


def deploy_flow(path: Path) -> list[int]:
    client: mlshift.Client = mlshift.connect("memory://")
    version: mlshift.ModelVersion = client.models.register("iris", path, metrics={"accuracy": 0.9})
    number: str = version.version
    state: mlshift.EndpointState = client.endpoints.deploy("iris", f"iris:{number}")
    weights: dict[str, int] = state.weights
    state = client.endpoints.deploy("iris", "iris@champion", traffic=20, size="cpu-large", replicas=2)
    prediction: mlshift.Prediction = client.endpoints.predict("iris", [[5.1, 3.5, 1.4, 0.2]])
    labels = [int(p) for p in prediction.predictions]
    served_by: str | None = prediction.variant
    assert served_by is None or isinstance(served_by, str)
    mine = client.endpoints.predict("iris", [[5.1, 3.5, 1.4, 0.2]], request_id="order-1")
    request_id: str | None = mine.request_id
    assert request_id == "order-1"
    client.endpoints.set_traffic("iris", dict.fromkeys(weights, 50))
    client.endpoints.delete("iris")
    client.close()
    return labels


def plan_flow() -> bool:
    with mlshift.connect("memory://") as client:
        spec = EndpointSpec.model_validate({"name": "iris", "variants": [{"name": "a", "model": "iris:1"}]})
        model = ModelSpec(name="iris", path="iris.skops", framework="sklearn")
        plan: mlshift.Plan = client.plan([model, spec])
        text: str = plan.render()
        result: mlshift.ApplyResult = client.apply(plan)
        return bool(text) and result.changed


def rollout_flow() -> list[str]:
    from mlshift.plan import GateReading
    from mlshift.specs.rollout import Canary, HealthGate, Probe

    def kpi(reading: GateReading) -> str | None:
        return None if reading.error_rate < 0.05 else "too many errors"

    client = mlshift.connect("memory://")
    gate = HealthGate(max_error_rate=0.01, max_p99="250ms", probe=Probe(payload={"instances": [[1.0]]}))
    try:
        client.endpoints.deploy(
            "iris", "iris:2", rollout=Canary(percent=10, bake="5m", gate=gate), checks=[kpi]
        )
    except mlshift.RolloutFailed as exc:
        reason: str = exc.reason
        numbers: dict[str, float] = exc.measurements
        return [reason, *map(str, numbers)]
    state: mlshift.EndpointState = client.endpoints.rollback("iris")
    return [record.phase for record in client.endpoints.history("iris")] + list(state.weights)


def shadow_flow() -> float | None:
    from mlshift.plan import GateReading
    from mlshift.specs.rollout import Canary, HealthGate, Shadow

    def agreement_seen(reading: GateReading) -> None:
        print(reading.agreement, reading.client_error_rate, reading.baseline_client_error_rate)

    client = mlshift.connect("memory://")
    rollout = Shadow(
        percent=20,
        duration="5m",
        min_agreement=0.99,
        then=Canary(percent=10, bake="5m"),
        gate=HealthGate(max_client_error_increase=0.02, max_p99_ratio=2),
    )
    client.endpoints.deploy(
        "iris", "iris:2", rollout=rollout, checks=[agreement_seen], allow_schema_change=True
    )
    return client.endpoints.history("iris")[0].measurements.get("agreement")


def errors() -> str:
    try:
        mlshift.connect("nope://")
    except mlshift.ConfigError as exc:
        return exc.field or exc.message
    except mlshift.MlshiftError as exc:
        return str(exc)
    return ""


def storage_machinery(folder: str) -> list[str]:
    """An adapter's own state over the public storage machinery."""
    from mlshift.adapter import PENDING, Operation, PollingOperation
    from mlshift.errors import LeaseLost
    from mlshift.storage import (
        ArtifactStore,
        FolderObjectStore,
        LeaseLock,
        MemoryObjectStore,
        ObjectStore,
        PreconditionFailed,
        RolloutJournal,
        Written,
    )

    store: ObjectStore = FolderObjectStore(folder) if folder else MemoryObjectStore()
    outcome: Written | PreconditionFailed = store.put_if_absent("k", b"v")
    leases = LeaseLock(store, "locks", ttl=60.0, provider="mine")
    journal = RolloutJournal(store, "journal", before_write=leases.check)
    cards = ArtifactStore(store, "")
    try:
        with leases.hold("ep", owner="me", timeout=1.0):
            ids = [r.id for r in journal.records("ep")]
    except LeaseLost as exc:
        ids = [exc.message]
    deleted: Operation[None] = PollingOperation(lambda: PENDING if not ids else None, "delete ep")
    deleted.wait(timeout=1.0)
    return [*ids, cards.put_card({"a": 1}), type(outcome).__name__]


def notebook_flow() -> list[str]:
    import io

    from mlshift.specs.rollout import Canary

    client = mlshift.connect("memory://")
    log = io.StringIO()
    state = client.endpoints.deploy(
        "iris",
        "iris:2",
        rollout=Canary(percent=10, bake="1m"),
        on_event=mlshift.ProgressPrinter(log, interval=1),
    )
    plan = client.plan(
        EndpointSpec.model_validate({"name": "iris", "variants": [{"name": "a", "model": "iris:1"}]})
    )
    cards: list[str] = [
        state._repr_html_(),
        client.models.get("iris:2")._repr_html_(),
        plan._repr_html_(),
        client.apply(plan)._repr_html_(),
        client.endpoints.history("iris")[0]._repr_html_(),
    ]
    return [*cards, log.getvalue()]
