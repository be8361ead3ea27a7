"""mlshift.adapter.target_options: one merge of a target's options for every adapter."""

from __future__ import annotations

import pytest
from pydantic import Field

from mlshift.adapter import target_options
from mlshift.errors import ConfigError
from mlshift.specs import SpecModel


class Nested(SpecModel):
    subnet: str


class DemoOptions(SpecModel):
    bucket: str
    prefix: str = "mlshift"
    timeout: float = Field(default=10.0, gt=0)
    tags: dict[str, str] = Field(default_factory=dict)
    network: Nested | None = None


def merge(query: dict[str, str], options: dict[str, object], env: dict[str, str]) -> DemoOptions:
    return target_options(
        DemoOptions,
        "demo",
        query,
        options,
        env,
        credential_hint="log in with demo-cli",
        required={"bucket": "set bucket in mlshift.yaml or MLSHIFT_DEMO_BUCKET"},
    )


def test_query_wins_over_options_which_win_over_the_environment() -> None:
    env = {"MLSHIFT_DEMO_BUCKET": "env", "MLSHIFT_DEMO_PREFIX": "envp", "MLSHIFT_DEMO_TIMEOUT": "3"}
    opts = merge({"prefix": "q"}, {"prefix": "yaml", "timeout": 5}, env)
    assert (opts.bucket, opts.prefix, opts.timeout) == ("env", "q", 5.0)


def test_empty_variables_and_structured_fields_are_not_read_from_the_environment() -> None:
    env = {"MLSHIFT_DEMO_BUCKET": "b", "MLSHIFT_DEMO_PREFIX": "", "MLSHIFT_DEMO_TAGS": "a=b"}
    opts = merge({}, {}, env)
    assert (opts.prefix, opts.tags) == ("mlshift", {})


@pytest.mark.parametrize("field", ["tags", "network"])
def test_structured_fields_are_refused_in_the_query(field: str) -> None:
    with pytest.raises(ConfigError, match="cannot be given in the URI query") as info:
        merge({field: "x"}, {"bucket": "b"}, {})
    assert info.value.field == f"target.options.{field}"
    assert "mlshift.yaml" in (info.value.hint or "")


def test_a_missing_required_option_says_where_to_give_it() -> None:
    with pytest.raises(ConfigError, match="demo target: target.options.bucket is required") as info:
        merge({}, {}, {})
    assert info.value.field == "target.options.bucket"
    assert "MLSHIFT_DEMO_BUCKET" in (info.value.hint or "")


def test_invalid_and_unknown_options_are_named_with_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        merge({"timeout": "-1"}, {"bucket": "b"}, {})
    assert info.value.field == "target.options.timeout"
    assert str(info.value).startswith("demo target: target.options.timeout:")
    assert "bucket, network, prefix, tags, timeout" in (info.value.hint or "")
    with pytest.raises(ConfigError) as info:
        merge({"colour": "blue"}, {"bucket": "b"}, {})
    assert info.value.field == "target.options.colour"


def test_a_credential_is_refused_and_its_value_never_shown() -> None:
    secret = "hunter2-0123456789"
    with pytest.raises(ConfigError, match="looks like a credential") as info:
        merge({"api_token": secret}, {"bucket": "b"}, {})
    assert info.value.field == "target.options.api_token"
    assert info.value.hint == "log in with demo-cli"
    assert secret not in str(info.value) and secret not in repr(info.value.to_dict())
