"""An OpenFaaS FunctionDeployment (the API's POST/PUT /system/functions body) as a FunctionSpec.

The API's half of the desired state, validated in one place as the routes file is in
:mod:`faaso.config.routes_file`. Errors are :class:`InvalidRequest` with a message
naming the field and the problem.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from faaso.config.cors import CorsError, cors_from_annotations
from faaso.config.scaling import ScaleError, parse_scaling
from faaso.errors import InvalidRequest
from faaso.spec.asyncjob import check_async_annotations
from faaso.spec.function import (
    ENV_NAME_RE,
    FUNCTION_NAME_RE,
    LABEL_KEY_RE,
    MIN_MEMORY,
    NAMESPACE,
    NAMESPACE_RE,
    FunctionSpec,
    Limits,
    function_key,
    parse_memory,
    valid_secret_name,
)

HEALTH_PATH_ANNOTATION = "com.openfaas.health.http.path"
DEPLOYMENT_KEYS = frozenset(
    {
        "service",
        "image",
        "namespace",
        "envProcess",
        "constraints",
        "envVars",
        "secrets",
        "labels",
        "annotations",
        "limits",
        "requests",
        "readOnlyRootFilesystem",
        "registryAuth",
        "network",  # deprecated, ignored by every provider
    }
)


def _str_map(doc: Mapping[str, Any], key: str, key_re: re.Pattern[str]) -> Mapping[str, str]:
    value = doc.get(key)
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, dict):
        raise InvalidRequest(f"{key} must be an object of strings")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not key_re.match(k):
            raise InvalidRequest(f"{key}: {k!r} is not a valid name")
        if not isinstance(v, str):
            raise InvalidRequest(f"{key}.{k} must be a string")
        out[k] = v
    return MappingProxyType(out)


def _limits(doc: Mapping[str, Any], key: str, notes: list[str] | None = None) -> Limits:
    """``notes`` gets a line for what is run differently from what was asked (a memory limit
    below the engine's minimum runs at the minimum, as faasd and faas-netes accept it)."""
    value = doc.get(key)
    if value is None:
        return Limits()
    if not isinstance(value, dict):
        raise InvalidRequest(f"{key} must be an object with memory and cpu")
    memory: int | None = None
    cpus: float | None = None
    if value.get("memory") not in (None, ""):
        try:
            memory = parse_memory(value["memory"])
        except ValueError as exc:
            raise InvalidRequest(f"{key}.memory {value['memory']!r}: {exc}") from exc
        if memory <= 0:
            raise InvalidRequest(f"{key}.memory must be more than 0")
        if memory < MIN_MEMORY:
            if notes is not None:
                notes.append(
                    f"{key}.memory {value['memory']} is below the container engine's minimum "
                    f"({MIN_MEMORY // 2**20}Mi): the containers run with {MIN_MEMORY // 2**20}Mi"
                )
            memory = MIN_MEMORY
    if value.get("cpu") not in (None, ""):
        raw = value["cpu"]
        try:
            cpus = float(str(raw).removesuffix("m")) / (1000 if str(raw).endswith("m") else 1)
        except ValueError as exc:
            raise InvalidRequest(f"{key}.cpu {raw!r} is not a number of CPUs") from exc
        if not 0 < cpus <= 1024:
            raise InvalidRequest(f"{key}.cpu must be greater than 0")
    return Limits(memory=memory, cpus=cpus)


def namespace_name(namespace: object) -> str:
    """A namespace as given in a query or a body: absent or empty is the default one. Checks
    the form only; whether it exists is the desired state's to say. Raises InvalidRequest."""
    if namespace in (None, ""):
        return NAMESPACE
    if not isinstance(namespace, str) or not NAMESPACE_RE.match(namespace):
        raise InvalidRequest(
            f"namespace {namespace!r} is not a valid name: lowercase letters, digits and '-', "
            "at most 63 characters"
        )
    return namespace


def namespace_doc(doc: object) -> dict[str, dict[str, str]]:
    """The labels and annotations of a FunctionNamespace body (``{name, labels,
    annotations}``), validated. Raises InvalidRequest."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise InvalidRequest("a namespace must be an object with labels and annotations")
    unknown = sorted(str(k) for k in doc if k not in ("name", "labels", "annotations"))
    if unknown:
        raise InvalidRequest(f"unknown fields: {', '.join(unknown)}")
    return {
        "labels": dict(_str_map(doc, "labels", LABEL_KEY_RE)),
        "annotations": dict(_str_map(doc, "annotations", LABEL_KEY_RE)),
    }


def registry_auth(value: object) -> str | None:
    """OpenFaaS's ``registryAuth``: base64 of ``user:password``, both non-empty. Raises
    InvalidRequest without echoing the value (it is a credential)."""
    if value in (None, ""):
        return None
    problem = 'registryAuth must be base64 of "username:password"'
    if not isinstance(value, str):
        raise InvalidRequest(problem)
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{problem} (it is not valid base64 of UTF-8 text)") from None
    user, colon, password = decoded.partition(":")
    if not colon or not user or not password:
        raise InvalidRequest(f"{problem} (the username or the password is missing)")
    return value


def deployment_record(doc: Mapping[str, Any]) -> str:
    """The deployment as a service records it: compact JSON, sorted, without registryAuth."""
    kept = {k: v for k, v in doc.items() if k != "registryAuth"}
    return json.dumps(kept, sort_keys=True, separators=(",", ":"))


def deployment_to_spec(doc: object, *, created_at: float | None = None) -> FunctionSpec:
    """Validate a FunctionDeployment body. Raises :class:`InvalidRequest`."""
    if not isinstance(doc, dict):
        raise InvalidRequest("the body must be a JSON object (a FunctionDeployment)")
    unknown = sorted(k for k in doc if k not in DEPLOYMENT_KEYS)
    if unknown:
        raise InvalidRequest(f"unknown fields: {', '.join(map(str, unknown))}")
    name = doc.get("service")
    if not isinstance(name, str) or not FUNCTION_NAME_RE.match(name):
        raise InvalidRequest(
            f"service {name!r} is not a valid function name: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    image = doc.get("image")
    if not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image):
        raise InvalidRequest("image must be a non-empty image reference")
    namespace = namespace_name(doc.get("namespace"))
    env_process = doc.get("envProcess")
    if env_process is not None and not isinstance(env_process, str):
        raise InvalidRequest("envProcess must be a string")
    secrets = doc.get("secrets") or []
    if not isinstance(secrets, list) or not all(isinstance(s, str) for s in secrets):
        raise InvalidRequest("secrets must be a list of secret names")
    for secret in secrets:
        if not valid_secret_name(secret):
            raise InvalidRequest(f"secret name {secret!r} is not valid")
    constraints = doc.get("constraints")
    if constraints is not None and (
        not isinstance(constraints, list) or not all(isinstance(c, str) for c in constraints)
    ):
        raise InvalidRequest("constraints must be a list of strings")
    read_only = doc.get("readOnlyRootFilesystem", False)
    if not isinstance(read_only, bool):
        raise InvalidRequest("readOnlyRootFilesystem must be true or false")
    annotations = _str_map(doc, "annotations", LABEL_KEY_RE)
    labels = _str_map(doc, "labels", LABEL_KEY_RE)
    if any(k.startswith("faaso.") for k in labels):
        raise InvalidRequest("labels starting with 'faaso.' are faaso's own")
    health_path = annotations.get(HEALTH_PATH_ANNOTATION, "/_/health")
    if not health_path.startswith("/"):
        raise InvalidRequest(f"annotation {HEALTH_PATH_ANNOTATION} must be a path")
    problem = check_async_annotations(annotations)
    if problem is not None:
        raise InvalidRequest(f"annotation {problem}")
    try:
        cors_from_annotations(annotations)
    except CorsError as exc:
        raise InvalidRequest(f"annotation {exc}") from None
    auth = registry_auth(doc.get("registryAuth"))
    requests = _limits(doc, "requests")  # reported back as sent; Swarm reserves them
    notes: list[str] = []
    limits = _limits(doc, "limits", notes)
    try:
        policy = parse_scaling(labels).policy
    except ScaleError as exc:
        raise InvalidRequest(str(exc)) from None
    return FunctionSpec(
        name=function_key(name, namespace),
        image=image,
        env=_str_map(doc, "envVars", ENV_NAME_RE),
        labels=labels,
        annotations=annotations,
        limits=limits,
        requests=requests,
        secrets=tuple(dict.fromkeys(secrets)),
        read_only_root=read_only,
        env_process=env_process or None,
        health_path=health_path,
        created_at=created_at,
        replicas=policy.min,  # OpenFaaS clients expect min replicas right after a deploy
        scale=policy,
        notes=tuple(notes),
        deployment=deployment_record(doc),
        registry_auth=auth,
    )
