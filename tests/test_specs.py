"""Specs: validation errors name the field, references parse, schemas export."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlshift.errors import ConfigError
from mlshift.specs import Compute, EndpointSpec, ModelRef, ModelSpec, ProjectFile, Signature


def endpoint(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "name": "iris",
        "variants": [
            {"name": "blue", "model": "iris:1", "weight": 80},
            {"name": "green", "model": "iris@champion", "weight": 20},
        ],
    }
    data.update(overrides)
    return data


def test_valid_endpoint_round_trips_through_json() -> None:
    spec = EndpointSpec.model_validate(endpoint())
    again = EndpointSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    assert json.loads(spec.model_dump_json())["variants"][1]["model"] == "iris@champion"
    assert spec.variants[1].model == ModelRef(name="iris", alias="champion")


def test_weights_must_sum_to_100() -> None:
    data = endpoint(
        variants=[{"name": "a", "model": "m:1", "weight": 70}, {"name": "b", "model": "m:2", "weight": 20}]
    )
    with pytest.raises(ConfigError, match=r"weights must sum to 100, got 90 \(a=70, b=20\)"):
        EndpointSpec.model_validate(data)


def test_error_names_the_nested_field() -> None:
    data = endpoint(variants=[{"name": "a", "model": "m:1", "weight": 101}])
    with pytest.raises(ConfigError) as info:
        EndpointSpec.model_validate(data)
    assert info.value.field == "variants[0].weight"
    assert "less than or equal to 100" in str(info.value)


def test_unknown_field_is_refused_not_dropped() -> None:
    with pytest.raises(ConfigError, match=r"variants\[0\]\.wieght: .*unknown field"):
        EndpointSpec.model_validate(endpoint(variants=[{"name": "a", "model": "m:1", "wieght": 100}]))


def test_direct_construction_raises_config_error_too() -> None:
    with pytest.raises(ConfigError, match="invalid name 'has space'"):
        EndpointSpec(name="has space", variants=())  # type: ignore[arg-type]
    assert issubclass(ConfigError, ValueError)


def test_duplicate_variant_names() -> None:
    data = endpoint(
        variants=[{"name": "a", "model": "m:1", "weight": 50}, {"name": "a", "model": "m:2", "weight": 50}]
    )
    with pytest.raises(ConfigError, match="repeated: a"):
        EndpointSpec.model_validate(data)


def test_unknown_framework_lists_allowed() -> None:
    with pytest.raises(
        ConfigError, match="'sklearn', 'onnx', 'xgboost', 'lightgbm', 'mlflow' or 'predictor'"
    ):
        ModelSpec(name="m", path="/x", framework="tensorflow")  # type: ignore[arg-type]


def test_unknown_size_lists_allowed() -> None:
    with pytest.raises(ConfigError, match="cpu-small"):
        Compute(size="huge")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("iris", ModelRef(name="iris")),
        ("iris:3", ModelRef(name="iris", version="3")),
        ("iris@champion", ModelRef(name="iris", alias="champion")),
        ("fraud.model_v2:10", ModelRef(name="fraud.model_v2", version="10")),
    ],
)
def test_model_ref_parse(text: str, expected: ModelRef) -> None:
    assert ModelRef.parse(text) == expected
    assert str(ModelRef.parse(text)) == text


@pytest.mark.parametrize("text", ["", "iris:", "iris@", ":3", "iris:1@x", "ir is", "@alias"])
def test_model_ref_rejects_malformed(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid model reference"):
        ModelRef.parse(text)


names = st.from_regex(r"[a-z0-9]([a-z0-9_.-]{0,20}[a-z0-9])?", fullmatch=True)


@given(name=names, version=st.integers(min_value=1, max_value=10**6))
def test_model_ref_round_trip(name: str, version: int) -> None:
    ref = ModelRef.parse(f"{name}:{version}")
    assert (ref.name, ref.version) == (name, str(version))
    assert ModelRef.parse(str(ref)) == ref


@given(weights=st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=5))
def test_weight_rule_matches_the_sum(weights: list[int]) -> None:
    variants = [{"name": f"v{i}", "model": "m:1", "weight": w} for i, w in enumerate(weights)]
    if sum(weights) == 100:
        assert EndpointSpec.model_validate({"name": "e", "variants": variants}).variants
    else:
        with pytest.raises(ConfigError):
            EndpointSpec.model_validate({"name": "e", "variants": variants})


def test_signature_helpers() -> None:
    sig = Signature.from_columns(["a", "b"])
    assert sig.n_features == 2 and sig.column_names == ("a", "b")
    assert Signature.numeric(3).column_names is None


def test_project_schema_exports() -> None:
    schema = ProjectFile.model_json_schema()
    assert {"targets", "models", "endpoints"} <= set(schema["properties"])
    text = json.dumps(schema)
    assert "NAME:VERSION" in text  # model references are documented as strings for editors


def test_variant_batching_from_yaml_shaped_data_and_its_bounds() -> None:
    from mlshift.specs import Batching

    spec = EndpointSpec.model_validate(
        endpoint(variants=[{"name": "a", "model": "m:1", "batching": {"max_batch_size": 64}}])
    )
    batching = spec.variants[0].batching
    assert batching == Batching(max_batch_size=64, max_latency_ms=5)
    assert batching.environment() == {"MLSHIFT_MAX_BATCH_SIZE": "64", "MLSHIFT_MAX_LATENCY_MS": "5"}
    assert EndpointSpec.model_validate(endpoint()).variants[0].batching is None
    for bad, field, message in [
        ({"max_batch_size": 0}, "max_batch_size", "greater than or equal to 1"),
        ({"max_batch_size": 32, "max_latency_ms": 0}, "max_latency_ms", "greater than 0"),
        ({"max_batch_size": 32, "max_latency_ms": 20_000}, "max_latency_ms", "less than or equal to 10000"),
        ({"max_batch": 32}, "max_batch", "unknown field"),
    ]:
        with pytest.raises(ConfigError) as info:
            EndpointSpec.model_validate(endpoint(variants=[{"name": "a", "model": "m:1", "batching": bad}]))
        assert info.value.field == f"variants[0].batching.{field}"
        assert message in str(info.value)
