"""``mlshift.testing.rollouts``: a failing model version and the traffic helper, on ``memory://``."""

from __future__ import annotations

from pathlib import Path

import pytest

import mlshift
from mlshift.errors import InvalidPayload, MlshiftError
from mlshift.testing.rollouts import failing_predictor, send_traffic


def test_a_failing_predictor_registers_deploys_and_fails_every_prediction(tmp_path: Path) -> None:
    folder = failing_predictor(tmp_path / "broken", columns=3)
    assert folder == tmp_path / "broken"
    with mlshift.connect("memory://") as client:
        version = client.models.register("broken", folder, framework="predictor")
        assert version.framework == "predictor"
        client.endpoints.deploy("broken-ep", "broken:1")
        with pytest.raises(MlshiftError, match="HTTP 500: the model failed"):
            client.endpoints.predict("broken-ep", [[1.0, 2.0, 3.0]])
        with pytest.raises(InvalidPayload, match="has 4 values, the model takes 3"):
            client.endpoints.predict("broken-ep", [[1.0, 2.0, 3.0, 4.0]])


def test_send_traffic_counts_what_callers_saw(tmp_path: Path) -> None:
    with mlshift.connect("memory://") as client:
        client.models.register("broken", failing_predictor(tmp_path / "broken"), framework="predictor")
        client.endpoints.deploy("broken-ep", "broken:1")
        with send_traffic(client, "broken-ep", [[1.0, 2.0, 3.0, 4.0]]) as seen:
            pass
    assert set(seen) <= {"error ProviderError", "error InvalidPayload", "error ModelError"}
    assert sum(seen.values()) >= 1
    assert not any(key.startswith("crash") for key in seen)
