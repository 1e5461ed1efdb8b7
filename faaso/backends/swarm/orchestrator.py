"""Docker Swarm as faaso's orchestrator: one function is one replicated service.

A function's service is named ``faaso-<owner>-<function>`` and labelled with ``faaso.owner``,
``faaso.function``, ``faaso.fingerprint`` and OpenFaaS's ``com.openfaas.function``. Its tasks'
containers carry ``faaso.service`` (never ``faaso.owner``: the plain-Docker backend lists
containers by that label and would take them for its own).

The service has the replica count, env, labels, limits and reservations, a read-only root with
a tmpfs ``/tmp`` when asked, a restart policy, a health check on the function's health path
(run inside the task, see :func:`health_command`), and an update config that starts the new
task first, waits for it to be healthy and rolls back on failure.

Reaching tasks: each service publishes 8080 in Swarm's *host* mode without a fixed port, so
every task gets a port of its own on the node that runs it, reported in the task's status.
faaso dials 127.0.0.1 at that port, so it balances and drains per task itself. The ingress
routing mesh (one port for the service) was tried and did not answer on this engine; it also
hides which task a request went to. On a multi-node cluster this reaches the tasks of the node
faaso runs on only: see docs/swarm.md for the overlay-network mode.

Secrets are Swarm secrets, one object per value (``<service-prefix>-<name>-<digest>``): Swarm
secrets cannot change in place, so a new value is a new object and the services that use it are
re-pointed by a rolling update; versions no service uses any more are removed.

Stopping a task: the service's stop signal is :data:`HOLD_SIGNAL`, which no process acts on, so
when Swarm stops a task (a rolling update, a scale-down, a removal) the task keeps serving until
faaso has taken it out of the proxy's pool and its requests have finished; faaso then sends the
image's own stop signal (:meth:`SwarmOrchestrator.stop_task`). Swarm kills the task after the
service's stop grace period when no faaso does. Without this, Swarm's SIGTERM reaches a task
faaso still sends requests to, and those fail.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import shlex
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiodocker
from aiodocker.multiplexed import multiplexed_result_list, multiplexed_result_stream
from aiodocker.utils import compose_auth_header

from faaso.backends.base import (
    FUNCTION_PORT,
    LABEL_FINGERPRINT,
    LABEL_FUNCTION,
    LABEL_MANAGED,
    LABEL_OPENFAAS_FUNCTION,
    LABEL_OWNER,
    LABEL_SERVICE,
    Instance,
    SecretRef,
    ServiceEvent,
    ServiceSpec,
    ServiceState,
    Task,
    task_instance,
)
from faaso.backends.engine_events import engine_events
from faaso.backends.swarm.secrets import newest, version_of
from faaso.errors import BackendError
from faaso.logs import get_logger
from faaso.spec.endpoint import Endpoint

DIAL_HOST = "127.0.0.1"
LABEL_SECRET = "faaso.secret"
SECRET_EVENT = "secret"  # the kind of a ServiceEvent about a secret (no function)
TMP_SIZE = 64 * 1024 * 1024
# What Swarm sends a task it stops: SIGCONT continues a process that runs anyway, and a
# process that handles it (job control) does not stop for it. See the module's docstring.
HOLD_SIGNAL = "SIGCONT"
SWARM_NAME_MAX = 64  # Swarm refuses a longer object name
DEFAULT_STOP_SIGNAL = "SIGTERM"
MAX_SERVICE_NAME = 63
NOT_A_MANAGER = (
    "the Docker engine is not a Swarm manager (swarm state: {state}); "
    "run `docker swarm init --advertise-addr 127.0.0.1` on this host for a one-node Swarm, "
    "or `docker swarm join ...` as a manager, or run faaso on a manager node "
    "(or use `backend: docker`)"
)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _message(exc: aiodocker.DockerError) -> str:
    return str(exc.message).strip()


def health_command(path: str, port: int = FUNCTION_PORT) -> list[str]:
    """The health check run inside each task: GET ``path`` on the task's own port, 200 or not.

    Written by hand because an image need not have curl: bash's ``/dev/tcp`` (faaso's runtimes
    are Debian-based) is tried first, then wget (busybox images), then curl. An image with none
    of them is reported healthy once it runs; faaso also probes each task itself before it gets
    requests.
    """
    request = f"GET {path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n"
    url = f"http://127.0.0.1:{port}{path}"
    bash = (
        f"exec 3<>/dev/tcp/127.0.0.1/{port} && printf '{request}' >&3 && "
        'read -r _ code _ <&3 && [ "$code" = 200 ]'
    )
    script = (
        f"if command -v bash >/dev/null 2>&1; then bash -c {shlex.quote(bash)}; "
        f"elif command -v wget >/dev/null 2>&1; then wget -q -O /dev/null {shlex.quote(url)}; "
        f"elif command -v curl >/dev/null 2>&1; then curl -fsS -o /dev/null {shlex.quote(url)}; "
        "else exit 0; fi"
    )
    return ["CMD-SHELL", script]


class SwarmOrchestrator:
    """Functions as services of the Swarm this engine manages."""

    def __init__(self, docker: aiodocker.Docker, owner: str) -> None:
        self._docker = docker
        self.owner = owner
        self.prefix = f"faaso-{owner[:8]}"
        self._log = get_logger("faaso.swarm")
        self._names: dict[str, str] = {}  # service name -> function
        self.node_id = ""  # this engine's node: its tasks are the ones 127.0.0.1 reaches
        self._stop_signals: dict[str, str] = {}  # image -> its own stop signal

    # -- naming ------------------------------------------------------------------------------

    def service_name(self, function: str) -> str:
        name = f"{self.prefix}-{function}"
        if len(name) > MAX_SERVICE_NAME:  # a long function name: a hash of it, still unique
            name = f"{self.prefix}-{hashlib.sha256(function.encode()).hexdigest()[:16]}"
        self._names[name] = function
        return name

    def secret_name(self, ref: SecretRef) -> str:
        """``<prefix>-<name>-<version>``, within Swarm's 64 characters: a name too long for
        that is replaced by a hash of it."""
        room = SWARM_NAME_MAX - len(self.prefix) - 2 - 12
        part = (
            ref.name if len(ref.name) <= room else hashlib.sha256(ref.name.encode()).hexdigest()[:8]
        )
        return f"{self.prefix}-{part}-{ref.version[:12]}"

    # -- the Orchestrator protocol -----------------------------------------------------------

    async def check(self) -> None:
        try:
            info = await self._docker.system.info()
        except aiodocker.DockerError as exc:
            raise BackendError(f"cannot ask the engine about its Swarm: {_message(exc)}") from exc
        swarm = info.get("Swarm") or {}
        state = str(swarm.get("LocalNodeState") or "inactive")
        if state != "active" or not swarm.get("ControlAvailable"):
            role = "a worker" if state == "active" else state
            raise BackendError(NOT_A_MANAGER.format(state=role))
        self.node_id = str(swarm.get("NodeID") or "")

    async def deploy(self, spec: ServiceSpec) -> None:
        secrets = [await self._ensure_secret(ref) for ref in spec.secrets]
        body = self._service_spec(spec, secrets)
        headers = registry_auth_headers(spec.image, spec.registry_auth)
        if headers:  # the credentials are proven (and the digest pinned) before any node pulls
            pinned = await self._pinned(spec.function, spec.image, headers)
            body["TaskTemplate"]["ContainerSpec"]["Image"] = pinned
        found = await self._find(spec.function)
        try:
            if found is None:
                await self._docker._query_json(
                    "services/create", method="POST", data=json.dumps(body), headers=headers
                )
                self._log.info(
                    "service.created",
                    function=spec.function,
                    image=spec.image,
                    registry_auth=bool(headers),
                )
            else:
                await self._update(found, body, headers)
                self._log.info(
                    "service.updated",
                    function=spec.function,
                    image=spec.image,
                    registry_auth=bool(headers),
                )
        except aiodocker.DockerError as exc:
            raise BackendError(
                f"cannot deploy {spec.function!r} as a Swarm service: {_message(exc)}"
            ) from exc
        await self._prune_secrets()

    async def scale(self, function: str, replicas: int) -> None:
        for attempt in range(3):  # another writer may have updated it meanwhile: read again
            found = await self._find(function)
            if found is None:
                return
            body = dict(found["Spec"])
            body["Mode"] = {"Replicated": {"Replicas": replicas}}
            try:
                await self._update(found, body)
                return
            except aiodocker.DockerError as exc:
                if "update out of sequence" in _message(exc) and attempt < 2:
                    continue
                raise BackendError(f"cannot scale {function!r}: {_message(exc)}") from exc

    async def service(self, function: str) -> ServiceState | None:
        found = await self._find(function)
        if found is None:
            return None
        try:
            tasks = await self._docker.tasks.list(filters={"service": [str(found["ID"])]})
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return None
            raise BackendError(f"cannot list the tasks of {function!r}: {_message(exc)}") from exc
        return self._state(found, [self._task(t, function) for t in tasks])

    async def services(self) -> list[ServiceState]:
        try:
            found = await self._docker.services.list(
                filters={"label": [f"{LABEL_OWNER}={self.owner}"]}
            )
        except aiodocker.DockerError as exc:
            raise BackendError(f"cannot list services: {_message(exc)}") from exc
        return [self._state(s, []) for s in found]

    async def remove(self, function: str) -> None:
        state = await self.service(function)
        if state is not None:
            try:
                await self._docker.services.delete(state.id)
                self._log.info("service.removed", function=function)
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise BackendError(f"cannot remove {function!r}: {_message(exc)}") from exc
            # Swarm's own stop only holds them (HOLD_SIGNAL): stop them now.
            await asyncio.gather(*(self.stop_task(t) for t in state.tasks))
        await self._prune_secrets()

    async def stop_task(self, task: Task) -> None:
        if not task.container_id or (self.node_id and task.node != self.node_id):
            return
        container = self._docker.containers.container(task.container_id)
        try:
            signal = await self._stop_signal(container)
            await container.kill(signal=signal)
            self._log.info("task.stopped", task=task.name, signal=signal)
        except aiodocker.DockerError as exc:
            if exc.status not in (404, 409):  # gone, or not running: stopped already
                raise BackendError(f"cannot stop task {task.name}: {_message(exc)}") from exc

    async def events(self) -> AsyncIterator[ServiceEvent]:
        filters = {"type": ["service", "container", "secret"]}
        # aclosing: when this generator is closed, the stream's task stops now, not at GC.
        async with contextlib.aclosing(engine_events(self._docker, filters)) as stream:
            async for item in stream:
                event = self._event(item)
                if event is not None:
                    yield event

    async def inspect(self, instance_id: str) -> Instance | None:
        try:
            info = await self._docker.tasks.inspect(instance_id)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return None
            raise BackendError(f"cannot inspect task {instance_id[:12]}: {_message(exc)}") from exc
        labels = ((info.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}
        task = self._task(info, str(labels.get(LABEL_SERVICE, "")))
        return task_instance(task, str(labels.get(LABEL_SERVICE, "")))

    async def logs(
        self, instance_id: str, *, follow: bool, since: float | None, tail: int | None
    ) -> AsyncIterator[tuple[str, str]]:
        params: dict[str, Any] = {
            "stdout": "true",
            "stderr": "true",
            "timestamps": "true",
            "follow": "true" if follow else "false",
            "tail": str(tail) if tail is not None else "all",
        }
        if since is not None:
            params["since"] = f"{since:.9f}"
        cm = self._docker._query(f"tasks/{instance_id}/logs", params=params)
        try:
            if follow:
                async with cm as response:
                    pending = ""
                    async for chunk in multiplexed_result_stream(response):  # type: ignore[no-untyped-call]
                        pending += str(chunk)
                        *lines, pending = pending.split("\n")
                        for line in lines:
                            yield _split_timestamp(line)
                    if pending:
                        yield _split_timestamp(pending)
            else:
                async with cm as response:
                    listed = await multiplexed_result_list(response)  # type: ignore[no-untyped-call]
                for line in "".join(str(c) for c in listed).splitlines():
                    yield _split_timestamp(line)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return
            raise BackendError(
                f"cannot read the logs of task {instance_id[:12]}: {_message(exc)}"
            ) from exc

    async def close(self) -> None:
        await self._docker.close()

    # -- helpers -----------------------------------------------------------------------------

    async def _stop_signal(self, container: aiodocker.containers.DockerContainer) -> str:
        """The stop signal of the container's image (the service's own is HOLD_SIGNAL)."""
        info = await container.show()
        image = str(info.get("Image") or "")
        if image not in self._stop_signals:
            try:
                found = await self._docker.images.inspect(image)
                config = found.get("Config") or {}
                self._stop_signals[image] = str(config.get("StopSignal") or DEFAULT_STOP_SIGNAL)
            except aiodocker.DockerError:
                return DEFAULT_STOP_SIGNAL
        return self._stop_signals[image]

    async def _find(self, function: str) -> dict[str, Any] | None:
        filters = {"label": [f"{LABEL_OWNER}={self.owner}", f"{LABEL_FUNCTION}={function}"]}
        try:
            found = await self._docker.services.list(filters=filters)
        except aiodocker.DockerError as exc:
            raise BackendError(f"cannot list services: {_message(exc)}") from exc
        return dict(found[0]) if found else None

    async def _pinned(self, function: str, image: str, headers: dict[str, str]) -> str:
        """``image@digest`` as the registry reports it with these credentials (what
        ``docker service create --with-registry-auth`` does), so every node runs the same image.
        Raises BackendError when the registry refuses them or has no such image."""
        if "@" in image:
            return image
        try:
            found = await self._docker._query_json(f"distribution/{image}/json", headers=headers)
        except aiodocker.DockerError as exc:
            raise BackendError(
                f"cannot deploy {function!r}: the registry did not give {image} with the "
                f"credentials given: {_message(exc)}"
            ) from exc
        digest = str((found.get("Descriptor") or {}).get("digest") or "")
        return f"{image}@{digest}" if digest else image

    async def _update(
        self, found: dict[str, Any], body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        """Without credentials (a scale, a faaso of the cluster that was not given them) the
        engine keeps those the service has (``registryAuthFrom=spec``, its default)."""
        version = int((found.get("Version") or {}).get("Index") or 0)
        await self._docker._query_json(
            f"services/{found['ID']}/update",
            method="POST",
            params={"version": version},
            data=json.dumps(body),
            headers=headers or None,
        )

    def _service_spec(
        self, spec: ServiceSpec, secrets: list[tuple[str, SecretRef]]
    ) -> dict[str, Any]:
        container_labels = {
            **spec.labels,
            LABEL_SERVICE: spec.function,
            LABEL_OPENFAAS_FUNCTION: spec.function,
            LABEL_FINGERPRINT: spec.fingerprint,
        }
        health = spec.health
        container: dict[str, Any] = {
            "Image": spec.image,
            "Env": [f"{k}={v}" for k, v in sorted(spec.env.items())],
            "Labels": container_labels,
            "Healthcheck": {
                "Test": health_command(health.path),
                "Interval": _ns(health.interval),
                "Timeout": _ns(health.timeout),
                "Retries": health.retries,
                "StartPeriod": _ns(health.start_period),
            },
            "StopGracePeriod": _ns(spec.stop_grace),
            "StopSignal": HOLD_SIGNAL,
        }
        if spec.read_only_root:
            container["ReadOnly"] = True
            container["Mounts"] = [
                {"Type": "tmpfs", "Target": "/tmp", "TmpfsOptions": {"SizeBytes": TMP_SIZE}}
            ]
        if secrets:
            container["Secrets"] = [
                {
                    "SecretID": secret_id,
                    "SecretName": ref.object_name or self.secret_name(ref),
                    "File": {"Name": ref.target, "UID": "0", "GID": "0", "Mode": 0o444},
                }
                for secret_id, ref in secrets
            ]
        resources: dict[str, Any] = {}
        for key, limits in (("Limits", spec.limits), ("Reservations", spec.reservations)):
            part: dict[str, Any] = {}
            if limits.memory:
                part["MemoryBytes"] = limits.memory
            if limits.cpus:
                part["NanoCPUs"] = int(limits.cpus * 1e9)
            if part:
                resources[key] = part
        return {
            "Name": self.service_name(spec.function),
            "Labels": {
                **spec.record,
                LABEL_MANAGED: "true",
                LABEL_OWNER: self.owner,
                LABEL_FUNCTION: spec.function,
                LABEL_FINGERPRINT: spec.fingerprint,
                LABEL_OPENFAAS_FUNCTION: spec.function,
            },
            "TaskTemplate": {
                "ContainerSpec": container,
                "Resources": resources,
                # Swarm restarts what dies (faaso's own backoff is the plain-Docker backend's)
                "RestartPolicy": {"Condition": "any", "Delay": _ns(1), "MaxAttempts": 0},
                "LogDriver": {"Name": "json-file", "Options": {"max-size": "10m", "max-file": "2"}},
            },
            "Mode": {"Replicated": {"Replicas": spec.replicas}},
            # The new task first; it must be healthy (a task with a health check only runs
            # once it passed) and stay up for Monitor; a failure rolls the service back.
            "UpdateConfig": {
                "Parallelism": 1,
                "Delay": 0,
                "FailureAction": "rollback",
                "Monitor": _ns(5),
                "MaxFailureRatio": 0,
                "Order": "start-first",
            },
            "RollbackConfig": {
                "Parallelism": 1,
                "Delay": 0,
                "FailureAction": "pause",
                "Monitor": _ns(5),
                "MaxFailureRatio": 0,
                "Order": "start-first",
            },
            "EndpointSpec": {
                "Mode": "vip",
                "Ports": [{"Protocol": "tcp", "TargetPort": FUNCTION_PORT, "PublishMode": "host"}],
            },
        }

    async def _ensure_secret(self, ref: SecretRef) -> tuple[str, SecretRef]:
        if ref.object_id:  # a cluster's shared version: made when the secret was created
            return ref.object_id, ref
        name = self.secret_name(ref)
        try:
            found = await self._docker.secrets.list(filters={"name": [name]})
            for secret in found:
                if (secret.get("Spec") or {}).get("Name") == name:
                    return str(secret["ID"]), ref
            try:
                value = await asyncio.to_thread(Path(ref.source).read_bytes)
            except OSError as exc:
                raise BackendError(f"cannot read secret {ref.name!r}: {exc}") from exc
            created = await self._docker.secrets.create(
                name,
                base64.b64encode(value).decode(),
                b64=True,
                labels={LABEL_OWNER: self.owner, LABEL_SECRET: ref.name, LABEL_MANAGED: "true"},
            )
            self._log.info("secret.version_created", secret=ref.name, version=ref.version[:12])
            return str(created["ID"]), ref
        except aiodocker.DockerError as exc:
            raise BackendError(f"cannot create Swarm secret {ref.name!r}: {_message(exc)}") from exc

    async def _prune_secrets(self) -> None:
        """Remove secret versions of ours that no service uses (Swarm refuses one in use).
        A cluster's shared secret keeps its newest version: it is the secret itself."""
        try:
            found = await self._docker.secrets.list(
                filters={"label": [f"{LABEL_OWNER}={self.owner}"]}
            )
            services = await self._docker.services.list()
        except aiodocker.DockerError:
            return
        used = {
            str(s.get("SecretID"))
            for svc in services
            for s in ((svc.get("Spec") or {}).get("TaskTemplate") or {})
            .get("ContainerSpec", {})
            .get("Secrets")
            or []
        }
        versions = [v for v in (version_of(f) for f in found) if v is not None]
        used |= {v.id for v in newest(versions).values()}
        for secret in found:
            if str(secret["ID"]) not in used:
                with contextlib.suppress(aiodocker.DockerError):
                    await self._docker.secrets.delete(str(secret["ID"]))

    def _state(self, found: Mapping[str, Any], tasks: list[Task]) -> ServiceState:
        spec = found.get("Spec") or {}
        labels = spec.get("Labels") or {}
        function = str(labels.get(LABEL_FUNCTION, ""))
        self._names[str(spec.get("Name", ""))] = function
        replicated = (spec.get("Mode") or {}).get("Replicated") or {}
        container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
        update = found.get("UpdateStatus") or {}
        return ServiceState(
            function=function,
            id=str(found["ID"]),
            fingerprint=str(labels.get(LABEL_FINGERPRINT, "")),
            replicas=int(replicated.get("Replicas") or 0),
            image=str(container.get("Image", "")).split("@")[0],
            tasks=tuple(tasks),
            update_state=update.get("State"),
            update_message=update.get("Message"),
            created=found.get("CreatedAt"),
            labels={str(k): str(v) for k, v in labels.items()},
        )

    def _task(self, info: Mapping[str, Any], function: str) -> Task:
        status = info.get("Status") or {}
        labels = ((info.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}
        endpoint = None
        node = str(info.get("NodeID") or "")
        local = not self.node_id or node == self.node_id
        ports = (status.get("PortStatus") or {}).get("Ports") or []
        for port in ports if local else []:
            if port.get("TargetPort") == FUNCTION_PORT and port.get("PublishedPort"):
                endpoint = Endpoint(DIAL_HOST, int(port["PublishedPort"]))
                break
        exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
        state = str(status.get("State", ""))
        slot = info.get("Slot")
        return Task(
            id=str(info["ID"]),
            name=f"{function}.{slot}" if slot is not None else f"{function}.{str(info['ID'])[:12]}",
            state=state,
            desired_state=str(info.get("DesiredState", "")),
            endpoint=endpoint,
            error=str(status["Err"]) if status.get("Err") else None,
            message=str(status["Message"]) if status.get("Message") else None,
            exit_code=int(exit_code) if state in ("failed", "complete") and exit_code else None,
            created=info.get("CreatedAt"),
            fingerprint=str(labels.get(LABEL_FINGERPRINT, "")),
            node=node,
            container_id=str((status.get("ContainerStatus") or {}).get("ContainerID") or ""),
        )

    def _event(self, item: dict[str, Any]) -> ServiceEvent | None:
        actor = item.get("Actor") or {}
        attrs = actor.get("Attributes") or {}
        action = str(item.get("Action") or item.get("status") or "")
        if item.get("Type") == "secret":  # a cluster's secret made or removed (any member)
            if str(attrs.get("name", "")).startswith(self.prefix + "-"):
                return ServiceEvent("", SECRET_EVENT)
            return None
        if item.get("Type") == "service":
            name = str(attrs.get("name", ""))
            if not name.startswith(self.prefix + "-"):
                return None
            function = self._names.get(name, name[len(self.prefix) + 1 :])
            return ServiceEvent(function, action)
        service = str(attrs.get("com.docker.swarm.service.name", ""))
        function = str(attrs.get(LABEL_SERVICE, ""))
        if function and service.startswith(self.prefix + "-"):
            return ServiceEvent(function, action.split(":")[0])
        return None


def registry_of(image: str) -> str | None:
    """The registry host of an image reference (``host[:port]/...``), or None for a reference
    to the engine's default registry (``name``, ``user/name``)."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def registry_auth_headers(image: str, registry_auth: str | None) -> dict[str, str]:
    """``X-Registry-Auth`` for the image's registry from base64 ``user:password`` (aiodocker
    composes the engine's JSON form); none without credentials."""
    if not registry_auth:
        return {}
    return {"X-Registry-Auth": compose_auth_header(registry_auth, registry_of(image))}


def _split_timestamp(line: str) -> tuple[str, str]:
    stamp, _, text = line.partition(" ")
    return stamp, text.rstrip("\r")
