"""The interface between faaso and whatever runs containers.

The supervisor and the proxy never speak Docker: the supervisor drives a :class:`Backend`
(plain Docker today, Docker Swarm services later) and the proxy only sees :class:`Endpoint`
objects in a pool. Every endpoint is on 127.0.0.1; an instance may also answer on a Unix
socket on the host (:attr:`Endpoint.unix`), a shorter way in than a published port.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from faaso.spec.endpoint import Endpoint
from faaso.spec.function import Limits

# Labels faaso puts on what it owns.
LABEL_FUNCTION = "faaso.function"
LABEL_OWNER = "faaso.owner"
LABEL_FINGERPRINT = "faaso.fingerprint"
LABEL_MANAGED = "faaso.managed"
FUNCTION_PORT = 8080


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """What to run for one instance of a function."""

    function: str
    image: str
    fingerprint: str  # changes whenever anything below changes
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    limits: Limits = field(default_factory=Limits)
    # (host file, path in the instance), mounted read-only
    mounts: tuple[tuple[str, str], ...] = ()
    read_only_root: bool = False


@dataclass(frozen=True, slots=True)
class Instance:
    """A running (or at least created) instance of a function."""

    id: str
    name: str
    function: str
    fingerprint: str
    endpoint: Endpoint | None
    running: bool = True
    paused: bool = False
    exit_code: int | None = None
    created: str | None = None  # RFC 3339, as the engine reports it


@dataclass(frozen=True, slots=True)
class BackendEvent:
    """Something happened to an instance: ``died`` (exit or OOM kill) or ``unhealthy``."""

    kind: str
    instance_id: str
    function: str
    exit_code: int | None = None


class Backend(Protocol):
    """Runs function instances. Implementations raise :class:`faaso.errors.BackendError`."""

    async def start(self, spec: InstanceSpec) -> Instance:
        """Create and start one instance; return it with its 127.0.0.1 endpoint."""

    async def stop(self, instance_id: str, timeout: float = 10.0) -> None:
        """Stop (SIGTERM, then SIGKILL after ``timeout``) and remove an instance. Idempotent."""

    async def pause(self, instance_id: str) -> None:
        """Freeze an instance: its memory is kept, it gets no CPU, it answers nothing."""

    async def unpause(self, instance_id: str) -> None:
        """Thaw a paused instance; it answers again at once."""

    async def cpu_seconds(self, instance_id: str) -> float | None:
        """CPU time the instance has used so far (seconds), or None when it is gone."""

    async def list_instances(self) -> list[Instance]:
        """Every instance this faaso owns, running or not."""

    async def inspect(self, instance_id: str) -> Instance | None:
        """One instance as it is now, or None when it no longer exists."""

    def events(self) -> AsyncIterator[BackendEvent]:
        """Events about this faaso's instances, as they happen.

        Ends or raises :class:`faaso.errors.BackendError` when the engine goes away; the caller
        reconnects by calling it again.
        """

    async def logs_tail(self, instance_id: str, lines: int = 20) -> list[str]:
        """The last lines an instance printed (stdout and stderr)."""

    def logs(
        self, instance_id: str, *, follow: bool, since: float | None, tail: int | None
    ) -> AsyncIterator[tuple[str, str]]:
        """(RFC 3339 timestamp, text) for each line an instance printed, oldest first;
        with ``follow``, new lines as they come, until the instance stops."""

    async def close(self) -> None:
        """Release the connection to the engine (instances keep running)."""


# -- the seam one level up: a whole function at a time ----------------------------------------
#
# An orchestrator (Docker Swarm) keeps replicas, heals and rolls updates itself, per function.
# faaso hands it the desired service (spec, image, replica count) and reads back what runs:
# the tasks, which of them are available (running and healthy), their 127.0.0.1 endpoints and
# their errors. The per-container :class:`Backend` above stays for plain Docker, where faaso's
# own controllers do that work.

LABEL_SERVICE = "faaso.service"  # on a service's containers: the function (never faaso.owner)
LABEL_OPENFAAS_FUNCTION = "com.openfaas.function"
# A service's record (ServiceSpec.record): where the function comes from, and for an API
# deployment the deployment itself and when it was first made.
LABEL_ORIGIN = "faaso.origin"  # file or api
LABEL_DEPLOYMENT = "faaso.deployment"  # the FunctionDeployment as compact JSON
LABEL_CREATED_AT = "faaso.created-at"  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """The health check the orchestrator runs inside each task."""

    path: str = "/_/health"
    interval: float = 2.0
    timeout: float = 1.0
    retries: int = 3
    start_period: float = 120.0


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A secret value made available to a function's tasks as a read-only file."""

    name: str  # the secret's name in faaso (and the file's name)
    version: str  # a digest of the value: each value gets its own orchestrator object
    source: str  # the host file holding the value ("" when the object exists: below)
    target: str  # the path in the task
    # A version that already is an orchestrator object (a cluster's shared secret, made when
    # the secret was created): its id and name; nothing is created from ``source``.
    object_id: str = ""
    object_name: str = ""


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What to run for one function: everything an orchestrator needs to keep it running."""

    function: str
    image: str
    fingerprint: str  # changes whenever anything below but the replica count changes
    replicas: int
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    limits: Limits = field(default_factory=Limits)
    reservations: Limits = field(default_factory=Limits)
    read_only_root: bool = False
    health: HealthCheck = field(default_factory=HealthCheck)
    secrets: tuple[SecretRef, ...] = ()
    stop_grace: float = 10.0  # seconds between SIGTERM and SIGKILL
    # Extra labels of the service itself: what a faaso of the same cluster needs to rebuild
    # the function (faaso.origin, and an API deployment's record); not in the fingerprint.
    record: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # base64 "user:password" for the registry of ``image`` (sent as X-Registry-Auth so the
    # nodes can pull; never part of the spec Swarm shows)
    registry_auth: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Task:
    """One task (replica) of a service, as the orchestrator reports it."""

    id: str
    name: str  # <function>.<slot>
    state: str  # new, pending, assigned, preparing, starting, running, failed, rejected ...
    desired_state: str  # running, shutdown ...
    endpoint: Endpoint | None = None
    error: str | None = None
    message: str | None = None
    exit_code: int | None = None
    created: str | None = None  # RFC 3339
    fingerprint: str = ""
    node: str = ""  # the node that runs it; only tasks on faaso's own node get an endpoint
    container_id: str = ""  # its container, once it has one

    @property
    def available(self) -> bool:
        """Running, healthy (a task with a health check runs only once it passed it), and meant
        to stay so."""
        return self.state == "running" and self.desired_state == "running"


@dataclass(frozen=True, slots=True)
class ServiceState:
    """One function's service as it is now."""

    function: str
    id: str
    fingerprint: str
    replicas: int  # desired
    image: str
    tasks: tuple[Task, ...] = ()
    update_state: str | None = None  # updating, completed, rollback_started, rollback_completed ...
    update_message: str | None = None
    created: str | None = None
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def available(self) -> list[Task]:
        return [t for t in self.tasks if t.available and t.endpoint is not None]

    def errors(self) -> list[str]:
        """What went wrong with tasks that should run: the newest first, each message once."""
        seen: list[str] = []
        for task in sorted(self.tasks, key=lambda t: t.created or "", reverse=True):
            if task.error and task.error not in seen:
                seen.append(task.error)
        return seen


@dataclass(frozen=True, slots=True)
class ServiceEvent:
    """Something changed about a function's service or one of its tasks."""

    function: str
    kind: str  # the engine's action: create, update, remove, die, start, health_status ...


def task_instance(task: Task, function: str) -> Instance:
    """A task seen as an :class:`Instance` (what the logs API and the autoscaler read)."""
    return Instance(
        id=task.id,
        name=task.name,
        function=function,
        fingerprint=task.fingerprint,
        endpoint=task.endpoint,
        running=task.state == "running",
        exit_code=task.exit_code,
        created=task.created,
    )


class LogSource(Protocol):
    """What the API reads instances' logs from (a :class:`Backend` or an orchestrator's)."""

    async def inspect(self, instance_id: str) -> Instance | None: ...

    def logs(
        self, instance_id: str, *, follow: bool, since: float | None, tail: int | None
    ) -> AsyncIterator[tuple[str, str]]: ...


class Orchestrator(Protocol):
    """Runs whole functions (one service each). Implementations raise
    :class:`faaso.errors.BackendError`; a missing service is None or a no-op, never an error."""

    async def check(self) -> None:
        """Raise :class:`faaso.errors.BackendError`, saying what to run, when this engine
        cannot orchestrate (for Swarm: it is not a manager)."""

    async def deploy(self, spec: ServiceSpec) -> None:
        """Create the function's service, or update it in place (a rolling update)."""

    async def scale(self, function: str, replicas: int) -> None:
        """Set the replica count alone (no rolling update)."""

    async def service(self, function: str) -> ServiceState | None:
        """The function's service and its tasks, or None when there is none."""

    async def services(self) -> list[ServiceState]:
        """Every service this faaso owns (tasks left out)."""

    async def remove(self, function: str) -> None:
        """Remove the service and stop its tasks on faaso's node (see :meth:`stop_task`).
        Idempotent."""

    async def stop_task(self, task: Task) -> None:
        """Stop a task the orchestrator no longer wants, now: its function's own stop signal.

        The orchestrator's own stop of a task does not interrupt its serving (so that a rolling
        update or a scale-down loses no request): faaso takes the task out of the proxy's pool,
        lets its requests finish, then calls this. The orchestrator kills the task by itself
        after its stop grace period when no faaso does. A task that is gone, or not on faaso's
        node, is a no-op."""

    def events(self) -> AsyncIterator[ServiceEvent]:
        """Changes to this faaso's services and their tasks, as the engine sees them. Ends or
        raises :class:`faaso.errors.BackendError` when the engine goes away."""

    async def inspect(self, instance_id: str) -> Instance | None:
        """A task as an :class:`Instance` (for the logs API), or None when it is gone."""

    def logs(
        self, instance_id: str, *, follow: bool, since: float | None, tail: int | None
    ) -> AsyncIterator[tuple[str, str]]:
        """(RFC 3339 timestamp, text) for each line a task printed, oldest first."""

    async def close(self) -> None:
        """Release the connection (services keep running)."""
