"""Desired state: the routes file, plus what the API deployed and scaled, kept across restarts.

The supervisor runs one :class:`~faaso.config.routes_file.Config`; this module makes it
from two sources:

- the routes file (read-only to the API: deploy, update and delete of its functions are refused);
- ``<state>/deployments.json``: functions deployed through the API, replica counts set
  through the API for any function, and the namespaces created through the API (besides
  ``openfaas-fn``, which always exists and holds the routes file's functions). It is written
  atomically after each change has been applied, so a crash at any point leaves the file as it
  was before or after that change.

Every change goes through the supervisor's ``apply``, as a diff: a deployment that cannot start
changes nothing and is not saved.

``shared`` (a cluster of faaso processes on one Swarm, docs/swarm.md): the API's deployments
are kept by Swarm, in their services' labels, not in ``deployments.json`` (which keeps the
replica overrides and namespaces of this faaso only). :meth:`seed_shared` takes them at start
and :meth:`sync_shared` follows what the cluster's other members deploy and remove.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from faaso.config.deployment import (
    deployment_record,
    deployment_to_spec,
    namespace_doc,
    namespace_name,
)
from faaso.config.routes_file import Config
from faaso.errors import ConfigError, ConflictError, InvalidRequest, NotFoundError
from faaso.logs import get_logger
from faaso.spec.function import MAX_REPLICAS, NAMESPACE, FunctionSpec, split_key
from faaso.state.files import atomic_write

STORE_VERSION = 1


class ApplyFn(Protocol):
    """How a merged config is applied (the supervisor's ``apply``)."""

    def __call__(
        self, new: Config, *, undo: Callable[[], None] | None = None
    ) -> Awaitable[object]: ...


@dataclasses.dataclass(slots=True)
class Stored:
    deployment: dict[str, Any]  # the FunctionDeployment as sent (for requests, constraints...)
    created_at: float


class DesiredState:
    def __init__(
        self,
        file_config: Config,
        store_path: Path,
        apply: ApplyFn,
        *,
        shared: bool = False,
    ) -> None:
        self.file_config = file_config
        self.store_path = store_path
        self._apply = apply
        self.shared = shared
        # shared: what deployments.json held from before (kept as it was, not served)
        self._unshared: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self.deployed: dict[str, Stored] = {}
        self.replicas: dict[str, int] = {}
        # namespace -> {"labels": {...}, "annotations": {...}}, the default one left out
        self.namespaces: dict[str, dict[str, dict[str, str]]] = {}
        self._load()

    # -- persistence -------------------------------------------------------------------------

    def _load(self) -> None:
        path = self.store_path
        if not path.exists():
            return
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(path, "", str(path), f"cannot read the deployments: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("version") != STORE_VERSION:
            raise ConfigError(
                path,
                "version",
                doc.get("version") if isinstance(doc, dict) else doc,
                f"expected version {STORE_VERSION}",
            )
        for name, item in (doc.get("namespaces") or {}).items():
            try:
                self.namespaces[namespace_name(name)] = namespace_doc(item)
            except (InvalidRequest, TypeError) as exc:
                raise ConfigError(path, f"namespaces.{name}", item, str(exc)) from exc
        if self.shared:
            self._unshared = dict(doc.get("functions") or {})
        for name, item in ({} if self.shared else doc.get("functions") or {}).items():
            try:
                stored = Stored(dict(item["deployment"]), float(item["created_at"]))
                spec = deployment_to_spec(stored.deployment)
            except (KeyError, TypeError, ValueError, InvalidRequest) as exc:
                raise ConfigError(path, f"functions.{name}", item, str(exc)) from exc
            if spec.namespace != NAMESPACE:  # a function keeps its namespace in existence
                self.namespaces.setdefault(spec.namespace, namespace_doc(None))
            self.deployed[name] = stored
        for name, count in (doc.get("replicas") or {}).items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ConfigError(path, f"replicas.{name}", count, "must be a whole number")
            self.replicas[name] = count

    def _save(self) -> None:
        doc = {
            "version": STORE_VERSION,
            "functions": self._unshared
            if self.shared
            else {
                n: {"deployment": s.deployment, "created_at": s.created_at}
                for n, s in sorted(self.deployed.items())
            },
            "replicas": dict(sorted(self.replicas.items())),
            "namespaces": dict(sorted(self.namespaces.items())),
        }
        atomic_write(self.store_path, json.dumps(doc, indent=2).encode() + b"\n", mode=0o600)

    # -- the merged view ---------------------------------------------------------------------

    def effective(
        self,
        file_config: Config | None = None,
        deployed: dict[str, Stored] | None = None,
        replicas: dict[str, int] | None = None,
    ) -> Config:
        file_config = file_config or self.file_config
        deployed = self.deployed if deployed is None else deployed
        replicas = self.replicas if replicas is None else replicas
        functions: dict[str, FunctionSpec] = dict(file_config.functions)
        for name, stored in deployed.items():
            if name in functions:
                raise ConfigError(
                    file_config.path,
                    f"functions.{name}",
                    name,
                    "this function was deployed through the API; remove it there "
                    "(faaso remove) before defining it in the file",
                )
            functions[name] = deployment_to_spec(stored.deployment, created_at=stored.created_at)
        for name, count in replicas.items():
            if name in functions:
                functions[name] = dataclasses.replace(functions[name], replicas=count)
        return dataclasses.replace(file_config, functions=MappingProxyType(functions))

    def spec(self, name: str) -> FunctionSpec | None:
        return self.effective().functions.get(name)

    def is_from_file(self, name: str) -> bool:
        return name in self.file_config.functions

    # -- namespaces --------------------------------------------------------------------------

    def namespace_names(self) -> list[str]:
        return [NAMESPACE, *sorted(self.namespaces)]

    def namespace(self, value: object) -> str:
        """A namespace from a query or a body, which must exist. Raises InvalidRequest."""
        namespace = namespace_name(value)
        if namespace != NAMESPACE and namespace not in self.namespaces:
            raise InvalidRequest(
                f"namespace {namespace!r} does not exist (create it with POST /system/namespaces)"
            )
        return namespace

    def namespace_info(self, namespace: str) -> dict[str, Any]:
        """The FunctionNamespace document. Raises NotFoundError."""
        if namespace == NAMESPACE:
            return {"name": NAMESPACE, "labels": {"openfaas": "1"}, "annotations": {}}
        doc = self.namespaces.get(namespace)
        if doc is None:
            raise NotFoundError(f"namespace {namespace!r} does not exist")
        return {"name": namespace, **doc}

    def functions_in(self, namespace: str) -> list[str]:
        """The keys of the functions in a namespace, sorted."""
        return sorted(k for k in self.effective().functions if split_key(k)[1] == namespace)

    async def put_namespace(self, body: object, *, create: bool) -> str:
        """POST (create) or PUT (update) a namespace. Raises InvalidRequest, ConflictError,
        NotFoundError."""
        if not isinstance(body, dict):
            raise InvalidRequest('the body must be {"name": NAMESPACE, "labels": {...}}')
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("name must name the namespace")
        namespace = namespace_name(name)
        doc = namespace_doc(body)
        async with self._lock:
            exists = namespace == NAMESPACE or namespace in self.namespaces
            if create and exists:
                raise ConflictError(f"namespace {namespace!r} already exists")
            if not create and not exists:
                raise NotFoundError(f"namespace {namespace!r} does not exist")
            if namespace == NAMESPACE:
                raise InvalidRequest(f"namespace {NAMESPACE!r} is faaso's default; it is fixed")
            self.namespaces = {**self.namespaces, namespace: doc}
            self._save()
        return namespace

    async def delete_namespace(self, value: object) -> str:
        """Remove an empty namespace. Raises InvalidRequest, NotFoundError, ConflictError."""
        namespace = namespace_name(value)
        async with self._lock:
            if namespace == NAMESPACE:
                raise InvalidRequest(f"namespace {NAMESPACE!r} is faaso's default; it stays")
            if namespace not in self.namespaces:
                raise NotFoundError(f"namespace {namespace!r} does not exist")
            users = self.functions_in(namespace)
            if users:
                names = ", ".join(split_key(k)[0] for k in users)
                raise ConflictError(
                    f"namespace {namespace!r} still has functions ({names}); remove them first"
                )
            self.namespaces = {n: d for n, d in self.namespaces.items() if n != namespace}
            self._save()
        return namespace

    # -- changes -----------------------------------------------------------------------------

    async def apply_file(self, new_file: Config) -> object:
        """A new routes file (hot reload)."""
        async with self._lock:
            replicas = {
                n: c
                for n, c in self.replicas.items()
                if n in new_file.functions or n in self.deployed
            }
            # Precedence: an edit of a function's replicas or scale settings in the file wins
            # over an older API override (which is dropped, and logged).
            for name in list(replicas):
                before = self.file_config.functions.get(name)
                after = new_file.functions.get(name)
                if (
                    before is not None
                    and after is not None
                    and (before.replicas, before.scale) != (after.replicas, after.scale)
                ):
                    get_logger("faaso.desired").info(
                        "scale.override_dropped",
                        function=name,
                        override=replicas.pop(name),
                        replicas=after.replicas,
                        why="the routes file's replicas or scale settings changed",
                    )
            result = await self._apply(self.effective(new_file, replicas=replicas))
            self.file_config = new_file
            if replicas != self.replicas:
                self.replicas = replicas
                self._save()
            return result

    async def deploy(self, body: object, *, update: bool) -> FunctionSpec:
        """POST (create) or PUT (update) /system/functions. Raises InvalidRequest/ConflictError."""
        spec = deployment_to_spec(body)
        self.namespace(spec.namespace)  # it must exist
        async with self._lock:
            if self.is_from_file(spec.name):
                raise ConflictError(
                    f"function {spec.name!r} is defined in "
                    f"{self.file_config.path}; edit that file instead",
                )
            exists = spec.name in self.deployed
            if update and not exists:
                raise NotFoundError(f"function {spec.name!r} is not deployed")
            assert isinstance(body, dict)
            previous = self.deployed.get(spec.name)
            created = previous.created_at if previous else time.time()
            deployed = {**self.deployed, spec.name: Stored(dict(body), created)}
            replicas = dict(self.replicas)
            if not exists:
                replicas.pop(spec.name, None)
            await self._apply(self.effective(deployed=deployed, replicas=replicas))
            self.deployed, self.replicas = deployed, replicas
            self._save()
            return spec

    async def remove(self, name: str) -> None:
        async with self._lock:
            if self.is_from_file(name):
                raise ConflictError(
                    f"function {name!r} is defined in "
                    f"{self.file_config.path}; edit that file instead",
                )
            if name not in self.deployed:
                raise NotFoundError(f"function {name!r} is not deployed")
            deployed = {n: s for n, s in self.deployed.items() if n != name}
            replicas = {n: c for n, c in self.replicas.items() if n != name}
            await self._apply(self.effective(deployed=deployed, replicas=replicas))
            self.deployed, self.replicas = deployed, replicas
            self._save()

    async def scale(self, name: str, count: int) -> None:
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_REPLICAS:
            raise InvalidRequest(f"replicas must be a whole number from 0 to {MAX_REPLICAS}")
        async with self._lock:
            if name not in self.file_config.functions and name not in self.deployed:
                raise NotFoundError(f"function {name!r} does not exist")
            replicas = {**self.replicas, name: count}
            await self._apply(self.effective(replicas=replicas))
            self.replicas = replicas
            self._save()
            get_logger("faaso.desired").info(
                "scale.override",
                function=name,
                replicas=count,
                note="set now; the autoscaler may move it within min..max; an edit of the "
                "file's replicas or scale settings, or faaso scale --reset, drops it",
            )

    def note_woken(self, name: str, replicas: int) -> None:
        """A request woke ``name`` from zero to ``replicas``: an API override of 0 ends there,
        so that a restart of faaso does not send the function back to zero (it becomes the
        count the wake set, kept as the override was). Nothing to apply: that count runs."""
        if self.replicas.get(name) != 0 or replicas <= 0:
            return
        self.replicas = {**self.replicas, name: replicas}
        self._save()
        get_logger("faaso.desired").info(
            "scale.override_woken", function=name, override=0, replicas=replicas
        )

    async def reset_scale(self, name: str) -> FunctionSpec:
        """Drop the API's replica override (``faaso scale NAME --reset``): the file's (or the
        deployment's) replicas apply again. Raises NotFoundError."""
        async with self._lock:
            if name not in self.file_config.functions and name not in self.deployed:
                raise NotFoundError(f"function {name!r} does not exist")
            replicas = {n: c for n, c in self.replicas.items() if n != name}
            config = self.effective(replicas=replicas)
            if replicas != self.replicas:
                await self._apply(config)
                get_logger("faaso.desired").info(
                    "scale.override_dropped",
                    function=name,
                    override=self.replicas[name],
                    replicas=config.functions[name].replicas,
                    why="reset through the API",
                )
                self.replicas = replicas
                self._save()
            return config.functions[name]

    async def refresh(self, *, undo: Callable[[], None] | None = None) -> None:
        """Re-apply as it is (a secret changed: functions that use it roll over). ``undo``
        puts the secret back when they cannot take it, before they roll back (see
        :meth:`faaso.control.supervisor.Supervisor.apply`)."""
        async with self._lock:
            await self._apply(self.effective(), undo=undo)

    # -- a cluster: the API's deployments are the services' ------------------------------------

    def _shared_view(self, records: dict[str, Stored]) -> dict[str, Stored]:
        """The records, minus names the routes file defines; an unchanged deployment keeps
        what this faaso holds of it (registryAuth is in no record)."""
        out: dict[str, Stored] = {}
        for name, stored in records.items():
            if self.is_from_file(name):
                get_logger("faaso.desired").warning(
                    "cluster.conflict",
                    function=name,
                    note="deployed through the API of another faaso, defined in this one's "
                    "routes file: the file's wins here",
                )
                continue
            mine = self.deployed.get(name)
            same = mine is not None and deployment_record(mine.deployment) == deployment_record(
                stored.deployment
            )
            out[name] = mine if mine is not None and same else stored
        return out

    def seed_shared(self, records: dict[str, Stored]) -> None:
        """At start, before anything runs: the cluster's API deployments."""
        assert self.shared
        self.deployed = self._shared_view(records)
        for stored in self.deployed.values():
            namespace = deployment_to_spec(stored.deployment).namespace
            if namespace != NAMESPACE:
                self.namespaces.setdefault(namespace, namespace_doc(None))

    async def sync_shared(self, records: dict[str, Stored]) -> bool:
        """Follow the cluster: functions deployed, changed or removed through another faaso.
        Whether anything changed. Raises ReloadError (then nothing changed)."""
        assert self.shared
        async with self._lock:
            deployed = self._shared_view(records)
            if deployed == self.deployed:
                return False
            replicas = {
                n: c
                for n, c in self.replicas.items()
                if n in self.file_config.functions or n in deployed
            }
            namespaces = dict(self.namespaces)
            for stored in deployed.values():
                namespace = deployment_to_spec(stored.deployment).namespace
                if namespace != NAMESPACE:
                    namespaces.setdefault(namespace, namespace_doc(None))
            await self._apply(self.effective(deployed=deployed, replicas=replicas))
            self.deployed, self.replicas, self.namespaces = deployed, replicas, namespaces
            self._save()
            return True
