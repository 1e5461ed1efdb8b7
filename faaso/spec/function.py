"""The function model: what a function is, independent of where it was declared.

A :class:`FunctionSpec` comes from the routes file (:mod:`faaso.config.routes_file`) or from an
OpenFaaS deployment through the API (:mod:`faaso.config.deployment`); both validate into this
one frozen type. This module also holds the naming rules both sources share.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from faaso.spec.scaling import ScalePolicy

# OpenFaaS's default namespace: the routes file's functions live there, and so does anything
# deployed without a namespace. A function of another namespace is keyed ``NAME.NAMESPACE``
# (function names have no dots, so the key splits one way only): that key names its
# controller, its containers and its pool, and is its ``function_name`` in the metrics.
NAMESPACE = "openfaas-fn"

# DNS-1123 label, as OpenFaaS requires; also a valid Docker repository component.
FUNCTION_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")
# OpenFaaS's rule for secret names, minus anything that could leave the secrets folder.
SECRET_NAME_RE = re.compile(r"^[-a-zA-Z_0-9.]{1,253}$")
MEMORY_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "ki": 1024,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gi": 1024**3,
    "gib": 1024**3,
}
MEMORY_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")
MIN_MEMORY = 6 * 1024**2  # Docker refuses less than 6 MiB
# Namespaces are DNS labels, as Kubernetes' (and so faas-netes') are.
NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

DEFAULT_TIMEOUT = 30.0
DEFAULT_STARTUP_TIMEOUT = 120.0
DEFAULT_HEALTH_PATH = "/_/health"
DEFAULT_HEALTH_INTERVAL = 2.0
DEFAULT_HEALTH_TIMEOUT = 1.0
DEFAULT_HEALTH_FAILURES = 3
MAX_REPLICAS = 64


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits applied to each container of a function."""

    memory: int | None = None  # bytes
    cpus: float | None = None  # fraction of CPUs


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """One function: either ``source`` + ``runtime`` (built by faaso) or a prebuilt ``image``."""

    name: str
    source: Path | None = None
    runtime: str | None = None
    image: str | None = None
    replicas: int = 1
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    timeout: float = DEFAULT_TIMEOUT
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    health_path: str = DEFAULT_HEALTH_PATH
    health_interval: float = DEFAULT_HEALTH_INTERVAL
    health_timeout: float = DEFAULT_HEALTH_TIMEOUT
    health_failures: int = DEFAULT_HEALTH_FAILURES
    limits: Limits = field(default_factory=Limits)
    # OpenFaaS's requests: what each container is guaranteed (Swarm reservations; plain
    # Docker has nothing that reserves, so there they are only reported back)
    requests: Limits = field(default_factory=Limits)
    secrets: tuple[str, ...] = ()
    read_only_root: bool = False
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    env_process: str | None = None  # OpenFaaS's fprocess, passed as the env var of that name
    max_inflight: int | None = None  # requests in flight to the function, over all replicas
    async_concurrency: int | None = None  # asynchronous jobs run at once (None: the default)
    created_at: float | None = None  # API deployments: when they were first deployed
    scale: ScalePolicy = field(default_factory=ScalePolicy)  # replicas starts at scale.min
    # What faaso runs differently from what was asked, and why (shown in the status).
    notes: tuple[str, ...] = ()
    # API deployments: the FunctionDeployment it was made from, as compact JSON without
    # registryAuth. A Swarm service records it so every faaso of a cluster can rebuild the spec.
    deployment: str | None = None
    # OpenFaaS's registryAuth (base64 "user:password") for pulling ``image``; never shown.
    registry_auth: str | None = field(default=None, repr=False)

    @property
    def short_name(self) -> str:
        """The function's name within its namespace."""
        return split_key(self.name)[0]

    @property
    def namespace(self) -> str:
        return split_key(self.name)[1]

    def run_fingerprint(self) -> str:
        """A hash of everything about the function's containers except its image.

        The image tag already hashes the build inputs; together they say whether a running
        container still matches this spec.
        """
        doc = {
            "env": dict(sorted(self.env.items())),
            "labels": dict(sorted(self.labels.items())),
            "health_path": self.health_path,
            "limits": [self.limits.memory, self.limits.cpus],
            "secrets": sorted(self.secrets),
            "read_only_root": self.read_only_root,
            "env_process": self.env_process,
        }
        if self.requests != Limits():  # absent: the same hash as before requests counted
            doc["requests"] = [self.requests.memory, self.requests.cpus]
        raw = json.dumps(doc, sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:16]


def function_key(name: str, namespace: str | None = None) -> str:
    """The key of function ``name`` in ``namespace``: the name itself in the default one."""
    if not namespace or namespace == NAMESPACE:
        return name
    return f"{name}.{namespace}"


def split_key(key: str) -> tuple[str, str]:
    """``sum`` -> (``sum``, ``openfaas-fn``); ``sum.dev`` -> (``sum``, ``dev``)."""
    name, dot, namespace = key.partition(".")
    return name, namespace if dot else NAMESPACE


def valid_secret_name(name: str) -> bool:
    """``[-a-zA-Z_0-9.]+``, and never ``.``, ``..`` or anything with a path separator."""
    return bool(SECRET_NAME_RE.match(name)) and name not in (".", "..") and ".." not in name


def parse_memory(value: object) -> int:
    """``128Mi``, ``256m``, ``1G`` or a number of bytes -> bytes. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("not a size")
    if isinstance(value, int):
        amount, unit = float(value), ""
    elif isinstance(value, str):
        match = MEMORY_RE.match(value)
        if not match:
            raise ValueError("not a size")
        amount, unit = float(match.group(1)), match.group(2).lower()
    else:
        raise ValueError("not a size")
    if unit not in MEMORY_UNITS:
        raise ValueError(f"unknown unit {unit!r}")
    return int(amount * MEMORY_UNITS[unit])
