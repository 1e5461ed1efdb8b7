"""FunctionStatus as OpenFaaS's clients read it: what was deployed, as it was sent. Pure: no
server, no container (tests/api/test_api.py reads the same through a real server)."""

from __future__ import annotations

from typing import Any

from faaso.api.openfaas import function_status
from faaso.config.deployment import deployment_to_spec
from faaso.spec.function import FunctionSpec, Limits


def status_of(deployment: dict[str, Any]) -> dict[str, Any]:
    spec = deployment_to_spec(deployment)
    return function_status(
        spec,
        image=spec.image or "",
        available=0,
        invocations=0,
        created_at=None,
        deployment=deployment,
    )


def test_fields_not_sent_are_left_out() -> None:
    status = status_of({"service": "bare", "image": "x"})
    assert status == {
        "name": "bare",
        "image": "x",
        "namespace": "openfaas-fn",
        "labels": {"faas_function": "bare"},
        "readOnlyRootFilesystem": False,
        "replicas": 1,
    }
    empty = status_of({"service": "bare", "image": "x", "envVars": {}, "secrets": []})
    assert "envVars" not in empty and "secrets" not in empty  # omitempty, as in Go


def test_limits_and_requests_come_back_as_sent() -> None:
    status = status_of(
        {
            "service": "f",
            "image": "x",
            "namespace": "dev",
            "limits": {"memory": "5Mi", "cpu": "100m"},
            "requests": {"memory": "128Mi", "cpu": ""},
            "labels": {"team": "a"},
        }
    )
    assert status["limits"] == {"memory": "5Mi", "cpu": "100m"}
    assert status["requests"] == {"memory": "128Mi"}
    assert (status["name"], status["namespace"]) == ("f", "dev")
    assert status["labels"] == {"team": "a", "faas_function": "f"}
    assert "6Mi" in status["notes"][0]


def test_a_routes_file_function_reports_its_limits_in_the_apis_words() -> None:
    spec = FunctionSpec(name="sum", limits=Limits(memory=128 * 2**20, cpus=0.5))
    status = function_status(spec, image="i", available=1, invocations=2, created_at="t")
    assert status["limits"] == {"memory": "128Mi", "cpu": "0.5"}
    assert "requests" not in status and "envVars" not in status
