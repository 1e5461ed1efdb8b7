"""An OpenFaaS FunctionDeployment that cannot be used is refused, saying which field and why.

Pure validation: no server, no container (tests/api checks that such a refusal is a 400 with a
JSON error and that nothing is half-deployed)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from faaso.config.deployment import deployment_to_spec
from faaso.errors import InvalidRequest
from faaso.spec.function import MIN_MEMORY


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
        ({"service": "ok", "image": "x", "namespace": "Not_One"}, "'Not_One' is not a valid name"),
        ({"service": "ok", "image": "x", "limits": {"memory": "0"}}, "must be more than 0"),
        ({"service": "ok", "image": "x", "wat": 1}, "unknown fields: wat"),
        ({"service": "ok", "image": "x", "registryAuth": "%%%"}, "registryAuth must be base64"),
        ({"service": "ok", "image": "x", "registryAuth": 7}, "registryAuth must be base64"),
        # base64 of "no-colon" and of "user:" (no password)
        ({"service": "ok", "image": "x", "registryAuth": "bm8tY29sb24="}, "password is missing"),
        ({"service": "ok", "image": "x", "registryAuth": "dXNlcjo="}, "password is missing"),
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


def test_a_memory_limit_below_the_engines_minimum_runs_at_the_minimum() -> None:
    """faasd and faas-netes accept 5Mi (OpenFaaS's conformance tests deploy it); Docker refuses
    less than 6 MiB. The spec runs at the minimum and says so."""
    spec = deployment_to_spec({"service": "ok", "image": "x", "limits": {"memory": "5Mi"}})
    assert spec.limits.memory == MIN_MEMORY
    (note,) = spec.notes
    assert "limits.memory 5Mi" in note and "6Mi" in note
    fine = deployment_to_spec({"service": "ok", "image": "x", "limits": {"memory": "6Mi"}})
    assert fine.limits.memory == MIN_MEMORY and fine.notes == ()


def test_a_deployment_in_another_namespace_is_keyed_name_dot_namespace() -> None:
    spec = deployment_to_spec({"service": "ok", "image": "x", "namespace": "dev"})
    assert (spec.name, spec.short_name, spec.namespace) == ("ok.dev", "ok", "dev")
    default = deployment_to_spec({"service": "ok", "image": "x", "namespace": "openfaas-fn"})
    assert (default.name, default.short_name, default.namespace) == ("ok", "ok", "openfaas-fn")


def test_registry_auth_is_kept_out_of_the_record_and_the_repr() -> None:
    auth = base64.b64encode(b"user:pa55word").decode()
    spec = deployment_to_spec({"service": "ok", "image": "r.example/x:1", "registryAuth": auth})
    assert spec.registry_auth == auth
    assert spec.deployment is not None and "registryAuth" not in spec.deployment
    assert auth not in repr(spec)
    with pytest.raises(InvalidRequest) as info:
        deployment_to_spec({"service": "ok", "image": "x", "registryAuth": "c2VjcmV0"})
    assert "c2VjcmV0" not in str(info.value)  # a credential is never echoed
