"""The supervisor: makes the running instances match the config.

For each function it gets an image (built or pulled by the image provider), adopts matching
instances left by an earlier run, starts the missing ones, waits until each answers its health
check, and only then puts it in the function's pool. It owns every instance it started or
adopted, and stops them all when it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import aiohttp
from structlog.typing import FilteringBoundLogger

from faaso.backend import Backend, Instance, InstanceSpec
from faaso.config import Config, FunctionSpec
from faaso.errors import BackendError, FaasoError
from faaso.pool import Pools

PROBE_TIMEOUT = 2.0
STOP_TIMEOUT = 10.0


class ImageProvider(Protocol):
    async def ensure(self, spec: FunctionSpec) -> str:
        """An image reference the backend can run for ``spec`` (built or pulled if needed)."""


class Phase(StrEnum):
    PENDING = "pending"
    BUILDING = "building"
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"


@dataclass(slots=True)
class FunctionStatus:
    name: str
    replicas: int
    phase: Phase = Phase.PENDING
    image: str | None = None
    error: str | None = None
    instances: dict[str, Instance] = field(default_factory=dict)

    def as_json(self, pools: Pools) -> dict[str, object]:
        return {
            "function": self.name,
            "phase": str(self.phase),
            "replicas": self.replicas,
            "available": len(pools.get(self.name)),
            "image": self.image,
            "error": self.error,
        }


def instance_fingerprint(image: str, spec: FunctionSpec) -> str:
    raw = f"{image}\0{spec.run_fingerprint()}".encode()
    return hashlib.sha256(raw).hexdigest()[:24]


class Supervisor:
    def __init__(
        self,
        backend: Backend,
        images: ImageProvider,
        pools: Pools,
        probe_session: aiohttp.ClientSession,
        log: FilteringBoundLogger,
    ) -> None:
        self._backend = backend
        self._images = images
        self._pools = pools
        self._probe = probe_session
        self._log = log
        self._status: dict[str, FunctionStatus] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._leftovers: dict[str, list[Instance]] = {}
        self._config: Config | None = None

    # -- what the app asks -------------------------------------------------------------------

    @property
    def config(self) -> Config | None:
        return self._config

    def statuses(self) -> list[FunctionStatus]:
        return [self._status[name] for name in sorted(self._status)]

    def not_ready(self) -> list[FunctionStatus]:
        return [s for s in self.statuses() if s.phase is not Phase.READY]

    def timeout_of(self, function: str) -> float:
        config = self._config
        spec = config.functions.get(function) if config else None
        return spec.timeout if spec else 30.0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, config: Config) -> None:
        """Adopt or clean up what an earlier run left, then bring every function up (background)."""
        self._config = config
        for spec in config.functions.values():
            self._status[spec.name] = FunctionStatus(spec.name, spec.replicas)
        for instance in await self._backend.list_instances():
            self._leftovers.setdefault(instance.function, []).append(instance)
        stale = [
            i
            for name, found in self._leftovers.items()
            if name not in config.functions
            for i in found
        ]
        await self._stop_all(stale, reason="not in the config")
        for spec in config.functions.values():
            self._spawn(self._bring_up(spec))

    async def close(self) -> None:
        """Cancel what is in progress, then stop every instance faaso owns."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        owned = [i for s in self._status.values() for i in s.instances.values()]
        owned += [i for found in self._leftovers.values() for i in found]
        for status in self._status.values():
            for instance_id in list(status.instances):
                self._pools.get(status.name).remove(instance_id)
        await self._stop_all(owned, reason="shutdown")

    async def wait_ready(self, timeout: float) -> bool:
        """Poll until every function is ready or failed; True when all are ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(s.phase in (Phase.READY, Phase.FAILED) for s in self._status.values()):
                break
            await asyncio.sleep(0.05)  # poll with a deadline
        return not self.not_ready()

    # -- internals ---------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _bring_up(self, spec: FunctionSpec) -> None:
        status = self._status[spec.name]
        log = self._log.bind(function=spec.name)
        try:
            status.phase = Phase.BUILDING
            image = await self._images.ensure(spec)
            status.image = image
            status.phase = Phase.STARTING
            fingerprint = instance_fingerprint(image, spec)
            leftovers = self._leftovers.pop(spec.name, [])
            keep = [
                i for i in leftovers if i.fingerprint == fingerprint and i.running and i.endpoint
            ][: spec.replicas]
            await self._stop_all([i for i in leftovers if i not in keep], reason="out of date")
            adopted = await asyncio.gather(*(self._adopt(spec, i, log) for i in keep))
            missing = spec.replicas - sum(adopted)
            instance_spec = InstanceSpec(
                function=spec.name,
                image=image,
                fingerprint=fingerprint,
                env=spec.env,
                labels=spec.labels,
                limits=spec.limits,
            )
            await asyncio.gather(*(self._launch(spec, instance_spec, log) for _ in range(missing)))
            status.phase = Phase.READY
            status.error = None
            log.info(
                "function.ready",
                replicas=spec.replicas,
                adopted=sum(adopted),
                endpoints=[m.base_url for m in self._pools.get(spec.name).members()],
            )
        except asyncio.CancelledError:
            raise
        except FaasoError as exc:
            status.phase = Phase.FAILED
            status.error = str(exc)
            log.error("function.failed", error=str(exc))
        except Exception as exc:  # a bug must not take the other functions down
            status.phase = Phase.FAILED
            status.error = f"{type(exc).__name__}: {exc}"
            log.exception("function.failed")

    async def _adopt(
        self, spec: FunctionSpec, instance: Instance, log: FilteringBoundLogger
    ) -> bool:
        assert instance.endpoint is not None
        if await self._probe_once(instance, spec):
            self._status[spec.name].instances[instance.id] = instance
            self._pools.get(spec.name).add(instance.id, instance.endpoint)
            log.info(
                "instance.adopted", container=instance.name, endpoint=instance.endpoint.base_url
            )
            return True
        await self._stop_all([instance], reason="adopted but unhealthy")
        return False

    async def _launch(
        self, spec: FunctionSpec, instance_spec: InstanceSpec, log: FilteringBoundLogger
    ) -> None:
        instance = await self._backend.start(instance_spec)
        status = self._status[spec.name]
        status.instances[instance.id] = instance
        log.info(
            "instance.started",
            container=instance.name,
            endpoint=instance.endpoint.base_url if instance.endpoint else None,
        )
        try:
            await self._wait_healthy(spec, instance)
        except BaseException:
            status.instances.pop(instance.id, None)
            with contextlib.suppress(FaasoError):
                await asyncio.shield(self._backend.stop(instance.id, timeout=0))
            raise
        assert instance.endpoint is not None
        self._pools.get(spec.name).add(instance.id, instance.endpoint)

    async def _probe_once(self, instance: Instance, spec: FunctionSpec) -> bool:
        if instance.endpoint is None:
            return False
        url = instance.endpoint.base_url + spec.health_path
        try:
            async with self._probe.get(
                url, timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
            ) as r:
                await r.read()
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def _wait_healthy(self, spec: FunctionSpec, instance: Instance) -> None:
        """Poll the health path until it answers 200; fail early if the container exits."""
        deadline = time.monotonic() + spec.startup_timeout
        delay = 0.02
        next_liveness = time.monotonic() + 1.0
        while True:
            if await self._probe_once(instance, spec):
                return
            now = time.monotonic()
            if now >= next_liveness:
                next_liveness = now + 1.0
                if not await self._is_running(instance.id):
                    tail = await self._backend.logs_tail(instance.id, 20)
                    raise BackendError(
                        f"container {instance.name} exited before it was healthy; its last "
                        "output:\n" + "\n".join("  | " + line for line in tail)
                    )
            if now >= deadline:
                raise BackendError(
                    f"container {instance.name} did not answer {spec.health_path} with 200 "
                    f"within {spec.startup_timeout:g} s"
                )
            await asyncio.sleep(delay)  # poll with backoff, bounded by the deadline
            delay = min(delay * 2, 0.25)

    async def _is_running(self, instance_id: str) -> bool:
        for instance in await self._backend.list_instances():
            if instance.id == instance_id:
                return instance.running
        return False

    async def _stop_all(self, instances: Iterable[Instance], reason: str) -> None:
        items = list(instances)
        if not items:
            return
        for instance in items:
            self._log.info(
                "instance.stop", container=instance.name, function=instance.function, reason=reason
            )
        results = await asyncio.gather(
            *(self._backend.stop(i.id, timeout=STOP_TIMEOUT) for i in items), return_exceptions=True
        )
        for instance, result in zip(items, results, strict=True):
            if isinstance(result, BaseException):
                self._log.warning(
                    "instance.stop_failed", container=instance.name, error=str(result)
                )
