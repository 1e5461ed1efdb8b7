"""OpenFaaS's JSON shapes out: FunctionStatus.

Field names and quirks follow the real servers (faasd, faas-netes), which clients follow:
zero counts are left out of FunctionStatus; faaso has one namespace, ``openfaas-fn``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faaso.spec.function import NAMESPACE, FunctionSpec, Limits


def _resources(limits: Limits) -> dict[str, str] | None:
    out: dict[str, str] = {}
    if limits.memory:
        out["memory"] = (
            f"{limits.memory // 2**20}Mi" if limits.memory % 2**20 == 0 else str(limits.memory)
        )
    if limits.cpus:
        out["cpu"] = f"{limits.cpus:g}"
    return out or None


def function_status(
    spec: FunctionSpec,
    *,
    image: str,
    available: int,
    invocations: int,
    created_at: str | None,
    requests: Mapping[str, Any] | None = None,
    replicas: int | None = None,
) -> dict[str, Any]:
    """A FunctionStatus, with OpenFaaS's habit of leaving out zero counts."""
    status: dict[str, Any] = {
        "name": spec.name,
        "image": image,
        "namespace": NAMESPACE,
        "envVars": dict(spec.env),
        "labels": dict(spec.labels),
        "annotations": dict(spec.annotations),
        "secrets": list(spec.secrets),
        "readOnlyRootFilesystem": spec.read_only_root,
    }
    if spec.env_process:
        status["envProcess"] = spec.env_process
    limits = _resources(spec.limits)
    if limits:
        status["limits"] = limits
    if requests:
        status["requests"] = dict(requests)
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
