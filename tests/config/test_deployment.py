"""An OpenFaaS FunctionDeployment that cannot be used is refused, saying which field and why.

Pure validation: no server, no container (tests/api checks that such a refusal is a 400 with a
JSON error and that nothing is half-deployed)."""

from __future__ import annotations

from typing import Any

import pytest

from faaso.config.deployment import deployment_to_spec
from faaso.errors import InvalidRequest


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([], "must be a JSON object"),
        ({"image": "x"}, "not a valid function name"),
        ({"service": "Bad_Name", "image": "x"}, "'Bad_Name' is not a valid function name"),
        ({"service": "ok", "image": ""}, "image must be a non-empty image reference"),
        ({"service": "ok", "image": "x", "envVars": {"A": 1}}, "envVars.A must be a string"),
        ({"service": "ok", "image": "x", "envVars": "A=1"}, "envVars must be an object"),
        ({"service": "ok", "image": "x", "limits": {"memory": "lots"}}, "limits.memory 'lots'"),
        ({"service": "ok", "image": "x", "secrets": ["../etc"]}, "secret name '../etc'"),
        ({"service": "ok", "image": "x", "namespace": "elsewhere"}, "'elsewhere' does not exist"),
        ({"service": "ok", "image": "x", "wat": 1}, "unknown fields: wat"),
    ],
)
def test_bad_deployments_are_refused(body: Any, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        deployment_to_spec(body)
    assert fragment in str(info.value)


def test_a_good_deployment_is_a_spec() -> None:
    spec = deployment_to_spec(
        {"service": "ok", "image": "x", "envVars": {"A": "1"}, "secrets": ["db"]}
    )
    assert (spec.name, spec.image, dict(spec.env), spec.secrets) == ("ok", "x", {"A": "1"}, ("db",))
