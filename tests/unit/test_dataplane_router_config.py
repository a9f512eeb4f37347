"""The router's configuration contract: what parses, what is refused and why."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from mlcycle.api import routerconfig as config_module
from mlcycle.api.routerconfig import Endpoint, RouterConfig
from mlcycle.dataplane.router.app import RouterSettings

pytestmark = pytest.mark.unit

MINIMAL = {
    "service": "iris",
    "backends": {"stable": {"endpoints": ["127.0.0.1:9001"]}},
    "weights": {"stable": 1},
}


def test_the_documented_example_parses_as_documented() -> None:
    documented = re.search(r"```yaml\n(.*?)```", config_module.__doc__ or "", re.DOTALL)
    assert documented is not None
    config = RouterConfig.from_text(documented.group(1))
    assert config.backends["stable"].service == "iris-stable"
    assert config.backends["stable"].port == "http"
    assert config.backends["canary"].static_endpoints() == (Endpoint("127.0.0.1", 9001),)
    assert config.backends["stable"].grpc_port == "grpc"
    assert config.backends["canary"].static_grpc_endpoints() == (Endpoint("127.0.0.1", 9101),)
    assert config.weights == {"stable": 90, "canary": 10}
    assert config.header_routes[0].header == "x-mlcycle-version"
    assert config.shadow is not None
    assert config.shadow.percent == 25
    assert config.timeouts.request_seconds == 30


def test_json_and_yaml_give_the_same_config_and_it_round_trips() -> None:
    as_json = RouterConfig.from_text(json.dumps(MINIMAL))
    as_yaml = RouterConfig.from_text(yaml.safe_dump(MINIMAL))
    assert as_json == as_yaml
    assert RouterConfig.from_text(as_json.to_json()) == as_json
    assert "headerRoutes" in as_json.to_json()


def _with(**changes: Any) -> dict[str, Any]:
    return {**MINIMAL, **changes}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param(
            _with(weights={"stable": 1, "ghost": 1}), "unknown backend 'ghost'", id="weight"
        ),
        pytest.param(_with(weights={"stable": -1}), "negative", id="negative weight"),
        pytest.param(_with(weights={"stable": 0}), "positive weight", id="all weights zero"),
        pytest.param(
            _with(headerRoutes=[{"header": "x-v", "backend": "ghost"}]),
            "unknown backend 'ghost'",
            id="header route",
        ),
        pytest.param(
            _with(headerRoutes=[{"header": "bad header", "backend": "stable"}]),
            "pattern",
            id="header name",
        ),
        pytest.param(
            _with(shadow={"backend": "ghost", "percent": 5}), "unknown backend", id="shadow"
        ),
        pytest.param(
            _with(shadow={"backend": "stable", "percent": 101}), "less than or equal", id="share"
        ),
        pytest.param(_with(backends={"stable": {}}), "needs a service, endpoints", id="no source"),
        pytest.param(
            _with(backends={"stable": {"endpoints": ["no-port"]}}), "host:port", id="endpoint"
        ),
        pytest.param(
            _with(backends={"stable": {"endpoints": ["h:70000"]}}), "host:port", id="port range"
        ),
        pytest.param(
            _with(backends={"stable": {"grpcEndpoints": ["no-port"]}}),
            "host:port",
            id="gRPC endpoint",
        ),
        pytest.param(_with(backends={}), "at least 1", id="no backends"),
        pytest.param(_with(weight={"stable": 1}), "Extra inputs", id="misspelt field"),
        pytest.param(_with(timeouts={"requestSeconds": 0}), "greater than 0", id="timeout"),
    ],
)
def test_invalid_configs_are_refused_with_a_reason(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RouterConfig.model_validate(document)


def test_grpc_is_optional_per_backend_and_may_be_a_backend_s_only_source() -> None:
    # A configuration from before gRPC: HTTP as it was, no gRPC endpoint anywhere.
    before = RouterConfig.model_validate(MINIMAL)
    assert before.backends["stable"].grpc_port is None
    assert before.backends["stable"].static_grpc_endpoints() == ()
    grpc_only = RouterConfig.model_validate(
        _with(backends={"stable": {"grpcEndpoints": ["127.0.0.1:9101"]}})
    )
    assert grpc_only.backends["stable"].static_endpoints() == ()
    assert RouterConfig.from_text(grpc_only.to_json()) == grpc_only
    by_number = RouterConfig.model_validate(
        _with(backends={"stable": {"service": "iris-v1", "grpcPort": 8081}})
    )
    assert by_number.backends["stable"].grpc_port == 8081


def test_header_routes_alone_may_carry_all_traffic() -> None:
    config = RouterConfig.model_validate(
        _with(weights={}, headerRoutes=[{"header": "x-v", "backend": "stable"}])
    )
    assert config.weights == {}


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [("127.0.0.1:80", Endpoint("127.0.0.1", 80)), ("[::1]:8080", Endpoint("::1", 8080))],
)
def test_endpoint_parsing(text: str, endpoint: Endpoint) -> None:
    assert Endpoint.parse(text) == endpoint


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param({}, "exactly one", id="no source"),
        pytest.param({"config_file": "r.yaml", "configmap": "r"}, "exactly one", id="two sources"),
        pytest.param({"configmap": "r"}, "needs --namespace", id="configmap without namespace"),
    ],
)
def test_process_settings_need_exactly_one_source(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RouterSettings.model_validate(settings)


def test_the_grpc_port_defaults_to_the_model_server_s() -> None:
    assert RouterSettings(config_file="r.yaml").grpc_port == 8081  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="less than or equal"):
        RouterSettings(config_file="r.yaml", grpc_port=70000)  # type: ignore[arg-type]
