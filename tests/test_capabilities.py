"""Declared capabilities are read: a spec needing one the target lacks is refused at plan time."""

from __future__ import annotations

from typing import Any

import pytest

import mlshift
from mlshift.errors import ConfigError
from mlshift.specs.endpoint import EndpointSpec
from mlshift.testing.memory import MemoryAdapter


def _serverless(model: str = "iris:1") -> EndpointSpec:
    return EndpointSpec.model_validate(
        {"name": "flowers", "variants": [{"name": "main", "model": model}], "serverless": True}
    )


def test_serverless_on_a_target_without_it_is_refused_at_plan_time(iris: dict[str, Any]) -> None:
    with mlshift.connect("memory://?capabilities=-serverless") as client:
        client.models.register("iris", iris["v1"], framework="sklearn")
        mark = len(MemoryAdapter.of(client).calls)
        with pytest.raises(ConfigError) as refused:
            client.apply(_serverless())
        message = str(refused.value)
        assert "'flowers' asks for serverless compute" in message
        assert "memory://?capabilities=-serverless does not offer" in message
        assert "targets that do: " in message and "memory" in message.split("targets that do: ")[1]
        assert refused.value.field == "serverless"
        assert MemoryAdapter.of(client).calls[mark:] == []  # nothing was changed
        assert client.endpoints.list() == []
        # the same spec without serverless is fine there
        client.apply(_serverless().model_copy(update={"serverless": False}))
        assert [e.name for e in client.endpoints.list()] == ["flowers"]


def test_serverless_on_a_target_that_declares_it_is_planned(
    memory: mlshift.Client, iris: dict[str, Any]
) -> None:
    memory.models.register("iris", iris["v1"], framework="sklearn")
    plan = memory.plan(_serverless())
    assert [a.kind for a in plan.actions] == ["create_endpoint"]
    memory.apply(plan)
    assert memory.endpoints.predict("flowers", iris["rows"]).predictions == iris["expected_v1"]


def test_serverless_is_a_field_of_the_project_file_schema() -> None:
    schema = EndpointSpec.model_json_schema()
    assert schema["properties"]["serverless"]["type"] == "boolean"
