"""The supervisor: one controller per function, the engine's event stream, and reloads.

- ``start(config)`` cleans up what an earlier run left (adopting what still matches), then
  builds and starts every function in the background.
- A watcher follows the engine's events (die, oom, unhealthy) and hands each to its function's
  controller; when the engine goes away it reconnects with backoff and re-checks every instance.
- ``apply(config)`` reconfigures a running system as a diff. Images for new and changed functions
  are built first: a failing build changes nothing. New functions start and must be healthy
  before their routes go live; changed ones roll over (new instances healthy, then the old ones
  drain and stop; a rollout that fails is rolled back); the route table is swapped in one
  assignment; removed functions then drain and stop. Unchanged functions are not touched.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from structlog.typing import FilteringBoundLogger

from faaso.backends.base import Backend, BackendEvent, Instance, Orchestrator, ServiceEvent
from faaso.config.routes_file import Config
from faaso.control.controller import STOP_TIMEOUT, FunctionController, Prober, RestartPolicy
from faaso.control.hooks import RolloutHook, run_rollout_hook
from faaso.control.service import (
    AnyController,
    LocalSecrets,
    PullAuth,
    SecretVersions,
    ServiceController,
)
from faaso.errors import BackendError, FaasoError, ReloadError
from faaso.gateway.pools import Pools
from faaso.guard import TaskGuard
from faaso.spec.function import FunctionSpec
from faaso.spec.status import FunctionStatus, Phase
from faaso.state.secret_store import SecretStore

RECONNECT_MAX = 10.0


class ImageProvider(Protocol):
    async def ensure(self, spec: FunctionSpec) -> str:
        """An image reference the backend can run for ``spec`` (built or pulled if needed)."""


@dataclass(slots=True)
class Pending:
    """A function that has no controller yet: its image is being built, or could not be."""

    name: str
    replicas: int
    phase: Phase = Phase.BUILDING
    error: str | None = None

    def status(self) -> FunctionStatus:
        return FunctionStatus(self.name, self.phase, self.replicas, error=self.error)


class Supervisor:
    def __init__(
        self,
        backend: Backend,
        images: ImageProvider,
        pools: Pools,
        prober: Prober,
        log: FilteringBoundLogger,
        *,
        on_config: Callable[[Config], None] = lambda _config: None,
        policy: RestartPolicy | None = None,
        secrets: SecretStore | None = None,
        after_rollout: RolloutHook | None = None,
        orchestrator: Orchestrator | None = None,
        cluster: bool = False,
        pull_auth: PullAuth | None = None,
        service_secrets: SecretVersions | None = None,
    ) -> None:
        # With an orchestrator (Swarm) each function is a ServiceController on it; without,
        # faaso's own FunctionControllers run containers on ``backend``.
        self._orchestrator = orchestrator
        # ``cluster``: other faaso processes own the same services (docs/swarm.md): a service
        # this one does not know is theirs, never "stale"; the services' counts are followed.
        self._cluster = cluster
        self._pull_auth = pull_auth  # credentials for the registry of a service's image
        # Told about every event of this owner's services (the cluster sync: API deployments
        # made or removed through another faaso), and when a shared service went away.
        self.on_service_event: Callable[[ServiceEvent], None] | None = None
        # Told when a request woke a function from zero, with the count it woke to (the
        # desired state: an API scale to 0 ends there).
        self.on_woken: Callable[[str, int], None] | None = None
        self._after_rollout = after_rollout  # see faaso.control.hooks
        self._secrets = secrets
        # What services mount: the files of ``secrets``, or a cluster's versions in Swarm.
        self._service_secrets = service_secrets
        if service_secrets is None and secrets is not None:
            self._service_secrets = LocalSecrets(secrets)
        self._backend = backend
        self._images = images
        self._pools = pools
        self._prober = prober
        self._log = log
        self._on_config = on_config
        self._policy = policy or RestartPolicy()
        self._controllers: dict[str, AnyController] = {}
        self._pending: dict[str, Pending] = {}
        self._leftovers: dict[str, list[Instance]] = {}
        self._guard = TaskGuard(log)
        self._engine_seen = False  # the event stream was open once: a restart resyncs first
        self._apply_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()  # removed functions draining, stopping
        self.config: Config | None = None

    # -- what the app reads ------------------------------------------------------------------

    def statuses(self) -> list[FunctionStatus]:
        """Every function the supervisor knows, by name: running, starting, building, failed."""
        out = [c.status() for c in self._controllers.values()]
        out += [p.status() for p in self._pending.values() if p.name not in self._controllers]
        return sorted(out, key=lambda s: s.function)

    def not_ready(self) -> list[FunctionStatus]:
        return [s for s in self.statuses() if not s.ready]

    def controller(self, name: str) -> AnyController | None:
        return self._controllers.get(name)

    def controllers(self) -> list[AnyController]:
        return list(self._controllers.values())

    def max_inflight_of(self, function: str) -> int | None:
        controller = self._controllers.get(function)
        return controller.spec.max_inflight if controller is not None else None

    def timeout_of(self, function: str) -> float:
        controller = self._controllers.get(function)
        if controller is not None:
            return controller.spec.timeout
        spec = self.config.functions.get(function) if self.config else None
        return spec.timeout if spec else 30.0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, config: Config) -> None:
        """Adopt or clean up what an earlier run left, then bring every function up (background)."""
        self.config = config
        self._on_config(config)
        for instance in await self._backend.list_instances():
            self._leftovers.setdefault(instance.function, []).append(instance)
        stale = [
            i
            for name, found in self._leftovers.items()
            if name not in config.functions
            for i in found
        ]
        await self._stop_all(stale, reason="not in the config")
        for name in list(self._leftovers):
            if name not in config.functions:
                del self._leftovers[name]
        if self._orchestrator is not None:
            await self._remove_stale_services(config)
        for spec in config.functions.values():
            self._guard.spawn(f"bring-up-{spec.name}", self._bring_up_fn(spec), restart=False)
        self._guard.spawn("engine-watch", self._watch_engine)
        if self._orchestrator is not None:
            self._guard.spawn("service-watch", self._watch_services)

    async def close(self, *, keep_running: bool = False) -> None:
        """Cancel what is in progress, then drain and stop every instance faaso owns; with
        ``keep_running``, leave the instances running (the next start adopts them)."""
        await self._guard.close()
        await asyncio.gather(*self._retiring)  # removed functions: stopped either way
        if keep_running:
            await asyncio.gather(*(c.detach() for c in self._controllers.values()))
            self._leftovers.clear()
            return
        await asyncio.gather(*(c.close(drain_timeout=5.0) for c in self._controllers.values()))
        await self._stop_all(
            [i for found in self._leftovers.values() for i in found], reason="shutdown"
        )
        self._leftovers.clear()

    # -- bringing functions up ---------------------------------------------------------------

    def _bring_up_fn(self, spec: FunctionSpec) -> Callable[[], Coroutine[Any, Any, None]]:
        return lambda: self._bring_up(spec)

    async def _image_for(self, spec: FunctionSpec) -> str:
        pending = self._pending.setdefault(spec.name, Pending(spec.name, spec.replicas))
        pending.phase, pending.error = Phase.BUILDING, None
        try:
            image = await self._images.ensure(spec)
        except FaasoError as exc:
            pending.phase, pending.error = Phase.FAILED, str(exc)
            self._log.error("function.image_failed", function=spec.name, error=str(exc))
            raise
        del self._pending[spec.name]
        return image

    async def _bring_up(self, spec: FunctionSpec) -> None:
        try:
            image = await self._image_for(spec)
        except FaasoError:
            return
        controller = await self._new_controller(spec, image)
        controller.start()

    def _woken(self, function: str, replicas: int) -> None:
        if self.on_woken is not None:
            self.on_woken(function, replicas)

    async def _new_controller(self, spec: FunctionSpec, image: str) -> AnyController:
        controller: AnyController
        if self._orchestrator is not None:
            controller = ServiceController(
                spec,
                image,
                orchestrator=self._orchestrator,
                pool=self._pools.get(spec.name),
                prober=self._prober,
                log=self._log,
                secrets=self._service_secrets,
                shared=self._cluster,
                pull_auth=self._pull_auth,
                on_gone=lambda: self._service_event(ServiceEvent(spec.name, "gone")),
            )
        else:
            controller = FunctionController(
                spec,
                image,
                backend=self._backend,
                pool=self._pools.get(spec.name),
                prober=self._prober,
                log=self._log,
                policy=self._policy,
                secrets=self._secrets,
            )
        controller.on_woken = self._woken
        self._controllers[spec.name] = controller
        rest = await controller.adopt(self._leftovers.pop(spec.name, []))
        await self._stop_all(rest, reason="out of date")
        return controller

    # -- reload ------------------------------------------------------------------------------

    def refresh_soon(self, why: str) -> None:
        """Re-apply the running config in the background (a secret was created or changed:
        the functions that use it start or roll over). A failure is logged, and shown in the
        functions' status (``rollout_error``)."""

        async def refresh() -> None:
            try:
                await self.apply(None)
            except ReloadError as exc:
                self._log.error("refresh.failed", why=why, error=str(exc))

        self._guard.spawn(f"refresh ({why})", refresh, restart=False)

    def run_soon(self, name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work`` in the background, under the supervisor's guard (logged if it fails,
        cancelled on close): what an API call accepted and answered before it was done."""
        self._guard.spawn(name, work, restart=False)

    async def apply(
        self, new: Config | None, *, undo: Callable[[], None] | None = None
    ) -> dict[str, list[str]]:
        """Reconfigure to ``new`` (None: the running config again) as a diff.

        ``undo`` puts back what the caller changed outside the config (a secret's value) when
        the rollout fails; it runs before the controllers roll back, so that they roll back to
        what will stay (instances made meanwhile from the new value are then "old" and go).
        Raises :class:`ReloadError`; then nothing changed. Returns once the new instances are
        healthy and the routes swapped; removed functions drain and stop in the background, and
        a change of replicas alone is not waited for (the function's status shows it)."""
        async with self._apply_lock:
            old = self.config
            assert old is not None, "start() first"
            new = old if new is None else new
            running = "swarm" if self._orchestrator is not None else "docker"
            if new.backend is not None and new.backend != running:
                raise ReloadError(
                    f"backend: {new.backend} in the routes file, but faaso runs on {running}; "
                    "the backend changes only with a restart of faaso"
                )
            added = [n for n in new.functions if n not in old.functions]
            removed = [n for n in old.functions if n not in new.functions]

            # 1. images first, for every function (a cached one costs a hash and a lookup):
            #    a failing build changes nothing, and a new image is what "changed" means
            #    for a function whose folder was edited.
            specs = list(new.functions.values())
            results = await asyncio.gather(
                *(self._images.ensure(s) for s in specs), return_exceptions=True
            )
            images: dict[str, str] = {}
            for spec, result in zip(specs, results, strict=True):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                if isinstance(result, BaseException):
                    raise ReloadError(f"function {spec.name!r}: {result}") from result
                images[spec.name] = result
            changed = [n for n in new.functions if n not in added and self._differs(n, new, images)]
            rescaled = [n for n in changed if self._rescaled_only(n, new, images)]
            self._log.info(
                "reload.plan",
                added=added,
                removed=removed,
                changed=changed,
                routes_changed=dict(new.routes) != dict(old.routes),
            )

            # 2. new functions start; their routes go live only once they are healthy
            fresh = [await self._new_controller(new.functions[n], images[n]) for n in added]
            for controller in fresh:
                controller.start()
            # 3. changed functions roll over; unchanged ones are not touched
            previous = {
                n: (self._controllers[n].spec, self._controllers[n].image)
                for n in changed
                if n in self._controllers
            }
            for name in changed:
                existing = self._controllers.get(name)
                if existing is None:  # its first build had failed: start it now
                    started = await self._new_controller(new.functions[name], images[name])
                    started.start()
                else:
                    existing.update(new.functions[name], images[name])
            waiting = [self._controllers[n] for n in added + changed if n not in rescaled]
            ok = await asyncio.gather(
                *(c.wait_converged(c.spec.startup_timeout + 30) for c in waiting)
            )
            failed = [c for c, good in zip(waiting, ok, strict=True) if not good]
            if failed:
                # The cause, read before the rollback resets what the controllers show.
                causes = {c.name: c.error or f"still {c.phase} after the wait" for c in failed}
                for controller in failed:
                    controller.rollout_error = causes[controller.name]
                if undo is not None:
                    undo()
                await self._roll_back(fresh, previous)
                details = "; ".join(f"{n}: {why}" for n, why in causes.items())
                raise ReloadError(f"new instances did not become healthy ({details})")
            for controller in waiting:
                controller.rollout_error = None

            # 4. swap the route table in one assignment, then retire what is gone
            self.config = new
            self._on_config(new)
            gone = [self._controllers.pop(n) for n in removed if n in self._controllers]
            for name in removed:
                self._pending.pop(name, None)
                # A fresh pool for a function of the same name deployed next; the retiring
                # controller keeps the old one, to drain what is in flight there.
                self._pools.drop(name)
            for controller in gone:
                # Not under the guard: a shutdown waits for these instead of cancelling them.
                task = asyncio.create_task(self._retire_function(controller))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
            self._log.info("reload.done", added=added, removed=removed, changed=changed)
            if self._after_rollout is not None and (added or changed):
                hook, names = self._after_rollout, added + changed
                self._guard.spawn(
                    "after-rollout",
                    lambda: run_rollout_hook(hook, names, self._log),
                    restart=False,
                )
            return {"added": added, "removed": removed, "changed": changed}

    async def _retire_function(self, controller: AnyController) -> None:
        try:
            await self._retire(controller)
        except Exception:  # logged; the next start removes what is left ("not in the config")
            self._log.exception("function.retire_failed", function=controller.name)
        else:
            self._log.info("function.retired", function=controller.name)

    def _rescaled_only(self, name: str, new: Config, images: dict[str, str]) -> bool:
        """Only the replicas changed: the controller scales in the background."""
        controller = self._controllers.get(name)
        if controller is None:
            return False
        spec, image = new.functions[name], images[name]
        return (
            dataclasses.replace(controller.spec, replicas=spec.replicas) == spec
            and controller.image == image
            and controller.fingerprint == controller.fingerprint_for(spec, image)
        )

    def _differs(self, name: str, new: Config, images: dict[str, str]) -> bool:
        controller = self._controllers.get(name)
        if controller is None:  # its first build had failed: (re)start it
            return True
        spec, image = new.functions[name], images[name]
        return (
            controller.spec != spec
            or controller.image != image
            or controller.fingerprint != controller.fingerprint_for(spec, image)
        )

    @staticmethod
    async def _retire(controller: AnyController, drain_timeout: float | None = None) -> None:
        """A function leaves: its instances stop (a service is removed, not just left)."""
        if drain_timeout is None:
            await controller.close()
        else:
            await controller.close(drain_timeout=drain_timeout)
        if isinstance(controller, ServiceController):
            await controller.remove()

    async def _roll_back(
        self, fresh: list[AnyController], previous: dict[str, tuple[FunctionSpec, str]]
    ) -> None:
        for controller in fresh:
            self._controllers.pop(controller.name, None)
        await asyncio.gather(*(self._retire(c, 1.0) for c in fresh))
        for controller in fresh:
            self._pools.drop(controller.name)
        for name, (spec, image) in previous.items():
            self._controllers[name].update(spec, image)
        await asyncio.gather(*(self._controllers[n].wait_converged(30) for n in previous))

    # -- the engine's events -----------------------------------------------------------------

    async def _watch_engine(self) -> None:
        """Follow the engine's events. Losing the engine is expected (reconnect with backoff);
        anything else ends in the guard, which restarts this loop (and it resyncs first)."""
        delay = 0.5
        while True:
            try:
                if self._engine_seen:
                    await self._resync()
                    self._log.info("engine.reconnected")
                self._engine_seen = True
                async for event in self._backend.events():
                    delay = 0.5
                    controller = self._controllers.get(event.function)
                    if controller is not None:
                        controller.on_event(event)
            except BackendError as exc:
                self._log.warning("engine.events_lost", error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)  # reconnect backoff
            delay = min(delay * 2, RECONNECT_MAX)

    async def _remove_stale_services(self, config: Config) -> None:
        """Services of this faaso whose function is no longer in the config go. In a cluster a
        service this faaso does not know may be another member's: it stays (logged)."""
        assert self._orchestrator is not None
        for found in await self._orchestrator.services():
            if found.function not in config.functions and self._cluster:
                self._log.info(
                    "service.not_mine",
                    function=found.function,
                    note="not in this faaso's config; left to the cluster's other members",
                )
            elif found.function not in config.functions:
                self._log.info("service.stale", function=found.function, reason="not in the config")
                await self._orchestrator.remove(found.function)

    async def _watch_services(self) -> None:
        """The orchestrator's events wake the function's controller (which also polls)."""
        assert self._orchestrator is not None
        delay = 0.5
        while True:
            try:
                async for event in self._orchestrator.events():
                    delay = 0.5
                    self._service_event(event)
                    controller = self._controllers.get(event.function)
                    if controller is not None:
                        controller.on_event(BackendEvent(event.kind, "", event.function))
            except BackendError as exc:
                self._log.warning("swarm.events_lost", error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)  # reconnect backoff
            delay = min(delay * 2, RECONNECT_MAX)

    def _service_event(self, event: ServiceEvent) -> None:
        if self.on_service_event is not None:
            self.on_service_event(event)

    async def _resync(self) -> None:
        """After a gap in the event stream, find instances that died meanwhile.

        Raises :class:`BackendError` while the engine is still away."""
        alive = {i.id: i for i in await self._backend.list_instances()}
        for controller in list(self._controllers.values()):
            for instance in controller.instances():
                current = alive.get(instance.id)
                if current is None or not current.running:
                    controller.on_event(
                        BackendEvent(
                            "died",
                            instance.id,
                            controller.name,
                            current.exit_code if current else None,
                        )
                    )

    async def _stop_all(self, instances: Iterable[Instance], reason: str) -> None:
        items = list(instances)
        for instance in items:
            self._log.info(
                "instance.stop", container=instance.name, function=instance.function, reason=reason
            )
        results = await asyncio.gather(
            *(self._backend.stop(i.id, timeout=STOP_TIMEOUT) for i in items),
            return_exceptions=True,
        )
        for instance, result in zip(items, results, strict=True):
            if isinstance(result, BaseException):
                self._log.warning(
                    "instance.stop_failed", container=instance.name, error=str(result)
                )
