"""One function on an orchestrator (Docker Swarm): the service is the controller's state.

The orchestrator keeps the replicas, heals them and rolls updates (start-first, rolled back on
failure); this controller only hands it the desired service and follows what runs:

- on start it adopts the function's service when its fingerprint matches (no redeploy, no cold
  start after a faaso restart), and otherwise deploys it (create, or a rolling update);
- a replica count (the spec's, an API scale, the autoscaler's, a wake from zero) is a scale of
  the service, not a rolling update;
- it follows the service's tasks (woken by the engine's events, and every ``POLL`` seconds
  since tasks on other nodes send no event here): a task that is running (healthy: Swarm runs
  a task with a health check only once it passed) and answers faaso's own probe joins the
  proxy's pool; one that is no longer meant to run, or stopped, leaves it;
- task errors (no such image, rejected, no suitable node) become the function's error and
  phase, so a deploy that can never run fails instead of waiting;
- a task Swarm stops (a rolling update, a scale-down) keeps serving until faaso stops it
  (the service's stop signal is a no-op, see the orchestrator): it leaves the pool as soon as
  Swarm no longer wants it, its requests in flight finish (bounded by the function's timeout),
  and only then is it sent its stop signal. A new task joins the pool only once faaso's own
  probe passed. So a rolling update loses no request, as on plain Docker.

In a cluster (``shared``: several faaso processes own the same services, docs/swarm.md) the
service's replica count is the truth: a count another member (or ``docker service scale``) set
is taken over, on adoption too, instead of being written back; and an API deployment's service
that disappears was removed through another member, so it is not created again (the cluster
sync then drops the function here as well).

Scale to zero has one step here: the replica count goes to 0 and the tasks stop (Swarm cannot
pause a task); a request wakes the function by scaling it back to ``min``.

It offers what the supervisor, the API and the autoscaler read of a controller (see
:class:`faaso.control.controller.FunctionController`), so they do not know which one runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
from collections.abc import Callable, Iterable
from typing import Protocol

from structlog.typing import FilteringBoundLogger

from faaso.backends.base import (
    LABEL_CREATED_AT,
    LABEL_DEPLOYMENT,
    LABEL_ORIGIN,
    BackendEvent,
    HealthCheck,
    Instance,
    Orchestrator,
    SecretRef,
    ServiceSpec,
    ServiceState,
    Task,
    task_instance,
)
from faaso.control.base import ControllerBase
from faaso.control.controller import (
    STOP_TIMEOUT,
    FunctionController,
    Prober,
    instance_fingerprint,
)
from faaso.errors import BackendError, FaasoError, NotFoundError
from faaso.gateway.pools import FunctionPool, Member, drain
from faaso.guard import TaskGuard
from faaso.spec.function import NAMESPACE, FunctionSpec
from faaso.spec.status import Phase
from faaso.state.secret_store import MOUNT_DIR, SecretStore

POLL = 1.0  # seconds between looks at the service's tasks when no event came
# task states after which a task will not run again
ENDED = frozenset({"complete", "shutdown", "failed", "rejected", "orphaned", "remove"})
FAILED_STATES = frozenset({"failed", "rejected"})
# this many failed tasks of the current spec, and none running: the function cannot start
FAIL_AFTER = 2
PullAuth = Callable[[FunctionSpec, str], str | None]  # (spec, image) -> base64 user:password
# tasks in these states may still have a running container (held by the no-op stop signal)
MAY_RUN = frozenset({"assigned", "accepted", "preparing", "ready", "starting", "running", "failed"})
# Mixed into the fingerprint: a service made by an older faaso (another service shape, such as
# no held stop signal) is updated on start rather than adopted.
SERVICE_SHAPE = "2"


class SecretVersions(Protocol):
    """The secrets a service mounts: a digest of their values for the fingerprint, and a
    reference to each. :class:`LocalSecrets` (the state directory's files) or, in a cluster,
    :class:`faaso.backends.swarm.secrets.SwarmSecrets` (versions every member sees)."""

    def digest(self, names: Iterable[str], namespace: str = NAMESPACE) -> str: ...

    def ref(self, name: str, namespace: str, target: str) -> SecretRef: ...


class LocalSecrets:
    """The state directory's secret files, made Swarm secrets when a service is deployed."""

    def __init__(self, store: SecretStore) -> None:
        self._store = store

    def digest(self, names: Iterable[str], namespace: str = NAMESPACE) -> str:
        return self._store.digest(names, namespace)

    def ref(self, name: str, namespace: str, target: str) -> SecretRef:
        """Raises NotFoundError."""
        return SecretRef(
            name=name,
            version=self._store.digest([name], namespace),
            source=str(self._store.path(name, namespace)),
            target=target,
        )


def service_fingerprint(image: str, spec: FunctionSpec, secrets: SecretVersions | None) -> str:
    """What a service must match to be adopted: the instances' fingerprint and the service's
    shape, and for an API deployment its record (annotations, labels... : what another faaso
    rebuilds it from)."""
    base = f"{instance_fingerprint(image, spec, secrets)[:20]}s{SERVICE_SHAPE}"
    if spec.deployment is None:
        return base
    return hashlib.sha256(f"{base}\0{spec.deployment}".encode()).hexdigest()[:24]


class ServiceController(ControllerBase):
    """Keeps one function's service as the spec says, and its pool as the tasks are."""

    def __init__(
        self,
        spec: FunctionSpec,
        image: str,
        *,
        orchestrator: Orchestrator,
        pool: FunctionPool,
        prober: Prober,
        log: FilteringBoundLogger,
        secrets: SecretVersions | None = None,
        shared: bool = False,
        pull_auth: PullAuth | None = None,
        on_gone: Callable[[], None] | None = None,
    ) -> None:
        self._secrets = secrets
        self._shared = shared  # a cluster of faaso processes owns the service (see above)
        self._pull_auth = pull_auth
        self._on_gone = on_gone  # shared: the service went away through another faaso
        self.spec = spec
        self.image = image
        self.fingerprint = service_fingerprint(image, spec, secrets)
        self._orchestrator = orchestrator
        self._pool = pool
        self._prober = prober
        self._log = log.bind(function=spec.name)
        self._guard = TaskGuard(self._log)
        self._init_replicas(spec)  # the count, the wake and converged events (ControllerBase)
        self._deployed: str | None = None  # the fingerprint the service has (as faaso set it)
        self._scaled: int | None = None  # the replica count the service has
        self._tasks: dict[str, Task] = {}  # the tasks of the last look, by id
        self._stopping: set[str] = set()  # tasks Swarm stopped that faaso drains and stops
        self._left: dict[str, Member] = {}  # out of the pool, maybe still busy, by task id
        self.phase = Phase.STARTING
        self.error: str | None = None
        self.rollout_error: str | None = None  # why the last rollout failed (then rolled back)
        self.restarts = 0
        self.last_exit_code: int | None = None
        self.last_logs: list[str] = []
        self.restart_delays: list[float] = []  # Swarm's restart policy chooses the delays
        self.autoscaler_view: dict[str, object] | None = None
        self.state: ServiceState | None = None

    # -- what others read --------------------------------------------------------------------

    def ready_count(self) -> int:
        return len(self._pool)

    def inflight(self) -> int:
        """Requests at its tasks, and held waiting for one (they keep it from idling)."""
        return self._pool.inflight() + self._pool.waiting

    def paused_count(self) -> int:
        return 0  # Swarm cannot pause a task

    def idle_paused(self) -> int:
        return 0  # nothing paused, so nothing for idling to remove

    def instances(self) -> list[Instance]:
        """The tasks meant to run (their logs, their CPU for the autoscaler)."""
        return [
            task_instance(t, self.name)
            for t in self._tasks.values()
            if t.desired_state == "running"
        ]

    def fingerprint_for(self, spec: FunctionSpec, image: str) -> str:
        return service_fingerprint(image, spec, self._secrets)

    # -- lifecycle ---------------------------------------------------------------------------

    async def adopt(self, candidates: list[Instance]) -> list[Instance]:
        """Plain-Docker containers are not this controller's: all of them are left over."""
        return candidates

    def start(self) -> None:
        self._pool.holding = True
        self._pool.wake = self.wake
        self._guard.spawn(f"service-{self.name}", self._run)

    def update(self, spec: FunctionSpec, image: str) -> None:
        previous = self.spec
        self.spec = spec
        self.image = image
        self.fingerprint = service_fingerprint(image, spec, self._secrets)
        self._rescale_for(previous, spec)
        self.error = None
        self._converged.clear()
        self._wake.set()

    async def close(self, *, drain_timeout: float = 30.0) -> None:
        """Stop following the service; it keeps running (Swarm holds it; a faaso that starts
        on the same state adopts it). :meth:`remove` removes it."""
        self._closing = True
        self._pool.holding = False
        self._pool.wake = None
        # Drains in progress end here too: their tasks stay held until Swarm's stop grace
        # period kills them, or the next faaso (which sees them unwanted) stops them.
        await self._guard.close()
        for member in self._pool.members():
            self._pool.remove(member.instance_id)
            self._left[member.instance_id] = member
        self.phase = Phase.STOPPED

    async def detach(self) -> None:
        """Leave the service running for the next faaso to adopt: what :meth:`close` does on
        Swarm anyway (the service outlives faaso)."""
        await self.close()

    async def remove(self) -> None:
        """Remove the service: the function is gone from the config. Requests in flight
        finish first (bounded by the function's timeout)."""
        await asyncio.gather(*(drain(m, self.spec.timeout) for m in self._left.values()))
        self._left.clear()
        try:
            await self._orchestrator.remove(self.name)
        except FaasoError as exc:
            self._log.warning("service.remove_failed", error=str(exc))

    # -- scaling -----------------------------------------------------------------------------

    def _follow(self, replicas: int) -> None:
        """Take the service's replica count as this controller's own."""
        if replicas != self.replicas:
            self.set_replicas(replicas, "the service's replica count was set elsewhere")
            self._scaled = replicas

    def remove_paused(self) -> None:
        """Nothing is paused on Swarm: a scale to zero stops the tasks at once."""

    def on_event(self, event: BackendEvent) -> None:
        """Something changed about the service or a task: look again now."""
        self._wake.set()

    # -- the loop ----------------------------------------------------------------------------

    def _service_spec(self) -> ServiceSpec:
        spec = self.spec
        env = dict(spec.env)
        if spec.env_process:
            env.setdefault("fprocess", spec.env_process)
        refs: tuple[SecretRef, ...] = ()
        if spec.secrets and self._secrets is not None:
            refs = tuple(
                self._secrets.ref(n, spec.namespace, f"{MOUNT_DIR}/{n}") for n in spec.secrets
            )
        record = {LABEL_ORIGIN: "file"}
        if spec.deployment is not None:
            record = {LABEL_ORIGIN: "api", LABEL_DEPLOYMENT: spec.deployment}
            if spec.created_at is not None:
                record[LABEL_CREATED_AT] = repr(spec.created_at)
        auth = spec.registry_auth
        if auth is None and self._pull_auth is not None:
            auth = self._pull_auth(spec, self.image)
        return ServiceSpec(
            function=spec.name,
            image=self.image,
            fingerprint=self.fingerprint,
            replicas=self.replicas,
            env=env,
            labels=spec.labels,
            limits=spec.limits,
            read_only_root=spec.read_only_root,
            health=HealthCheck(
                path=spec.health_path,
                interval=spec.health_interval,
                timeout=spec.health_timeout,
                retries=spec.health_failures,
                start_period=spec.startup_timeout,
            ),
            secrets=refs,
            record=record,
            registry_auth=auth,
            reservations=spec.requests,
            # room for faaso's drain of a stopped task (bounded by the timeout), then its stop
            stop_grace=spec.timeout + STOP_TIMEOUT,
        )

    async def _run(self) -> None:
        while not self._closing:
            try:
                await self._reconcile()
            except FaasoError as exc:  # the engine is away, or refused the spec: try again
                self.error = str(exc)
                self._log.warning("service.reconcile_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL):  # poll with a deadline (events wake it early)
                    await self._wake.wait()
            self._wake.clear()

    async def _reconcile(self) -> None:
        if self._deployed is None:  # first look: adopt the service when it matches
            found = await self._orchestrator.service(self.name)
            if found is not None and found.fingerprint == self.fingerprint:
                self._deployed, self._scaled = found.fingerprint, found.replicas
                self._log.info("service.adopted", replicas=found.replicas)
                if self._shared:  # the cluster's count, not this faaso's idea of it
                    self._follow(found.replicas)
        if self._deployed != self.fingerprint and self._shared:
            # Another member may have rolled the service to this fingerprint already (a secret
            # rotated there, an API update): take it as it is instead of updating it again.
            found = await self._orchestrator.service(self.name)
            if found is not None and found.fingerprint == self.fingerprint:
                self._deployed, self._scaled = found.fingerprint, found.replicas
                self._log.info("service.followed", fingerprint=found.fingerprint)
                self._follow(found.replicas)
        if self._deployed != self.fingerprint:
            try:
                service_spec = self._service_spec()
            except NotFoundError as exc:  # a secret it uses does not exist (here)
                self._fail(str(exc))
                raise
            try:
                await self._orchestrator.deploy(service_spec)
            except BackendError as exc:
                if self._shared and "out of sequence" in str(exc):
                    self._wake.set()  # another member updated it just now: look again
                    raise
                self._fail(str(exc))
                raise
            self._deployed, self._scaled = self.fingerprint, self.replicas
        elif self._scaled != self.replicas:
            await self._orchestrator.scale(self.name, self.replicas)
            self._scaled = self.replicas
        state = await self._orchestrator.service(self.name)
        if state is None and self._shared and self.spec.deployment is not None:
            # removed through another faaso of the cluster: not ours to bring back
            self.phase, self.error = Phase.STOPPED, "removed through another faaso of the cluster"
            self._pool.holding = False
            self._converged.set()  # not settled: a reload waiting for it rolls back at once
            if self._on_gone is not None:
                self._on_gone()
            return
        if state is None:  # removed behind faaso's back: deploy it again on the next look
            self._deployed = None
            self._wake.set()
            return
        if self._shared and self._scaled == self.replicas and state.replicas != self._scaled:
            self._scaled = state.replicas  # another faaso (or docker service scale) set it
            self._follow(state.replicas)
        self.state = state
        await self._sync(state)

    async def _sync(self, state: ServiceState) -> None:
        self._tasks = {t.id: t for t in state.tasks}
        live = {t.id: t for t in state.available()}
        for member in self._pool.members():
            if member.instance_id not in live:
                self._pool.remove(member.instance_id)
                self._left[member.instance_id] = member
                self._log.info("task.left_pool", task=member.instance_id[:12])
        for task in state.tasks:
            unwanted = task.desired_state in ENDED and task.state in MAY_RUN
            if unwanted and task.id not in self._stopping:
                self._stopping.add(task.id)
                self._guard.spawn(
                    f"stop-{task.name}",
                    functools.partial(self._drain_and_stop, task),
                    restart=False,
                )
        known = {t.id for t in state.tasks}
        self._stopping &= known  # a task is stopped once; its id goes with the task
        for gone in [i for i in self._left if i not in known]:
            del self._left[gone]
        for task in live.values():
            if task.id in self._pool or task.endpoint is None:
                continue
            instance = task_instance(task, self.name)
            if await self._prober.check(
                instance, self.spec.health_path, max(self.spec.health_timeout, 1.0)
            ):
                self._pool.add(task.id, task.endpoint)
                self._log.info("task.joined_pool", task=task.name, endpoint=task.endpoint.base_url)
        current = [t for t in state.tasks if t.fingerprint == self.fingerprint]
        failed = [t for t in current if t.state in FAILED_STATES]
        self.restarts = len([t for t in state.tasks if t.state in FAILED_STATES])
        if failed:
            newest = max(failed, key=lambda t: t.created or "")
            self.last_exit_code = newest.exit_code
        ready = [t for t in current if t.id in self._pool]
        self._set_phase(state, current, failed, ready)

    async def _drain_and_stop(self, task: Task) -> None:
        """A task Swarm stopped: out of the pool already; its requests finish, then it stops."""
        try:
            member = self._left.pop(task.id, None)
            if member is not None and not await drain(member, self.spec.timeout):
                self._log.warning("task.drain_timeout", task=task.name)
            await self._orchestrator.stop_task(task)
        except FaasoError as exc:  # Swarm's own kill after the grace period is the backstop
            self._log.warning("task.stop_failed", task=task.name, error=str(exc))

    def _set_phase(
        self, state: ServiceState, current: list[Task], failed: list[Task], ready: list[Task]
    ) -> None:
        rolling_back = (state.update_state or "").startswith("rollback")
        if self.replicas == 0:
            self.phase, self.error = Phase.SCALED_TO_ZERO, None
            self.waking = None
        elif len(ready) >= self.replicas and not rolling_back:
            self.phase, self.error = Phase.READY, None
            self.waking = None
        elif rolling_back:
            message = state.update_message or "the update failed and was rolled back"
            errors = [t.error for t in failed if t.error]
            self._fail(f"{message}: {errors[0]}" if errors else message)
            return
        elif len(failed) >= FAIL_AFTER and not ready:
            errors = [t.error or t.message or t.state for t in failed]
            newest = max(failed, key=lambda t: t.created or "")
            self._fail(newest.error or errors[0] or "tasks fail to start")
            return
        else:
            self.phase = Phase.DEGRADED if ready else Phase.STARTING
            if failed:
                self.error = next((t.error for t in failed if t.error), self.error)
            return
        self._converged.set()

    def _fail(self, error: str) -> None:
        if self.error != error or self.phase is not Phase.FAILED:
            self._log.error("function.failed", error=error)
        self.phase, self.error = Phase.FAILED, error
        self._converged.set()


AnyController = FunctionController | ServiceController
