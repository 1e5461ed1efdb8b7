"""OpenFaaS's JSON shapes out: FunctionStatus.

Field names and quirks follow the real servers (faasd, faas-netes), which clients follow: their
Go structs have ``omitempty``, so zero counts and fields that were not deployed (``envVars``,
``annotations``, ``secrets``, ``limits``, ``requests``) are left out rather than empty;
limits and requests come back as they were sent (``"100m"``, ``"5Mi"``); ``labels`` always
holds ``faas_function: NAME``, as faas-netes reports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faaso.spec.function import FunctionSpec, Limits

FUNCTION_LABEL = "faas_function"


def _resources(limits: Limits) -> dict[str, str] | None:
    """A routes file's limits, in the API's words (the file says ``cpus: 0.5``)."""
    out: dict[str, str] = {}
    if limits.memory:
        out["memory"] = (
            f"{limits.memory // 2**20}Mi" if limits.memory % 2**20 == 0 else str(limits.memory)
        )
    if limits.cpus:
        out["cpu"] = f"{limits.cpus:g}"
    return out or None


def _as_sent(value: object) -> dict[str, str] | None:
    """A deployment's ``limits`` or ``requests`` as it was sent: the keys given a value."""
    if not isinstance(value, Mapping):
        return None
    out = {k: str(value[k]) for k in ("memory", "cpu") if value.get(k) not in (None, "")}
    return out or None


def function_status(
    spec: FunctionSpec,
    *,
    image: str,
    available: int,
    invocations: int,
    created_at: str | None,
    deployment: Mapping[str, Any] | None = None,
    replicas: int | None = None,
) -> dict[str, Any]:
    """A FunctionStatus. ``deployment`` is the FunctionDeployment as sent, for a function
    deployed through the API (None for the routes file's)."""
    status: dict[str, Any] = {
        "name": spec.short_name,
        "image": image,
        "namespace": spec.namespace,
        "labels": {**spec.labels, FUNCTION_LABEL: spec.short_name},
        "readOnlyRootFilesystem": spec.read_only_root,
    }
    if spec.env:
        status["envVars"] = dict(spec.env)
    if spec.annotations:
        status["annotations"] = dict(spec.annotations)
    if spec.secrets:
        status["secrets"] = list(spec.secrets)
    if spec.env_process:
        status["envProcess"] = spec.env_process
    if deployment is not None:
        limits = _as_sent(deployment.get("limits"))
        requests = _as_sent(deployment.get("requests"))
    else:
        limits, requests = _resources(spec.limits), None
    if limits:
        status["limits"] = limits
    if requests:
        status["requests"] = requests
    if spec.notes:
        status["notes"] = list(spec.notes)  # faaso's own: what runs differently from the ask
    if invocations:
        status["invocationCount"] = invocations
    replicas = spec.replicas if replicas is None else replicas  # the running count wanted now
    if replicas:
        status["replicas"] = replicas
    if available:
        status["availableReplicas"] = available
    if created_at:
        status["createdAt"] = created_at
    return status
