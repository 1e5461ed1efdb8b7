"""One function's controller: keeps ``replicas`` healthy instances of its current image running.

It is a small reconcile loop. Whatever happens (an instance died, failed its probes, the spec
changed, a backoff expired) only wakes the loop, which then compares what runs with what should
run and acts:

- missing instances are started, health-checked, and only then put in the pool;
- instances of an older spec are replaced by a rolling update: the new ones start and pass
  their health check, then the old ones leave the pool, drain, and stop;
- extra instances (scale down) leave the pool, drain, and stop.

A dead instance leaves the pool at once. The first replacement starts at once; instances that
die young again and again are restarted with exponential backoff (capped), and the function is
reported as crash-looping with its restarts, last exit code and last log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import stat
import time
from dataclasses import dataclass, field

import aiohttp
from structlog.typing import FilteringBoundLogger

from faaso.backends.base import Backend, BackendEvent, Instance, InstanceSpec
from faaso.control.base import ControllerBase
from faaso.errors import BackendError, FaasoError, UnrunnableError
from faaso.gateway.pools import FunctionPool, drain
from faaso.guard import TaskGuard
from faaso.spec.endpoint import Endpoint
from faaso.spec.function import FunctionSpec
from faaso.spec.status import Phase
from faaso.state.secret_store import SecretDigests, SecretStore

STOP_TIMEOUT = 10.0
DRAIN_TIMEOUT = 30.0
SPARE_RETRY = 30.0  # seconds before another try at a spare that could not be made


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    stable_after: float = 10.0  # an instance that lived this long resets the backoff
    crash_loop_after: int = 3  # this many young deaths in a row is a crash loop


def instance_fingerprint(image: str, spec: FunctionSpec, secrets: SecretDigests | None) -> str:
    """Whether a running instance still matches: image, run settings and secret values."""
    secret_digest = (
        secrets.digest(spec.secrets, spec.namespace) if secrets is not None and spec.secrets else ""
    )
    raw = f"{image}\0{spec.run_fingerprint()}\0{secret_digest}".encode()
    return hashlib.sha256(raw).hexdigest()[:24]


def pool_endpoint(endpoint: Endpoint) -> Endpoint:
    """What the pool gets for a healthy instance: its Unix socket only if it made one.

    Called when the instance is first found healthy. A runtime that honours ``FAASO_SOCKET``
    listens there before it answers on TCP, so the socket exists by then; one that ignores it
    (say, a user's own Dockerfile) is reached over TCP alone.
    """
    if endpoint.unix is None:
        return endpoint
    try:
        is_socket = stat.S_ISSOCK(os.stat(endpoint.unix).st_mode)
    except OSError:
        is_socket = False
    return endpoint if is_socket else dataclasses.replace(endpoint, unix=None)


@dataclass(slots=True, eq=False)
class Tracked:
    instance: Instance
    started_at: float = field(default_factory=time.monotonic)
    ready: bool = False
    paused: bool = False  # frozen by the engine: scaled to zero (first step) or a spare
    probe_failures: int = 0


class Prober:
    """HTTP health checks against an instance's 127.0.0.1 endpoint."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def check(self, instance: Instance, path: str, timeout: float) -> bool:
        if instance.endpoint is None:
            return False
        url = instance.endpoint.base_url + path
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                await r.read()
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False


class FunctionController(ControllerBase):
    def __init__(
        self,
        spec: FunctionSpec,
        image: str,
        *,
        backend: Backend,
        pool: FunctionPool,
        prober: Prober,
        log: FilteringBoundLogger,
        policy: RestartPolicy | None = None,
        secrets: SecretStore | None = None,
    ) -> None:
        self._secrets = secrets
        self.spec = spec
        self.image = image
        self.fingerprint = instance_fingerprint(image, spec, secrets)
        self._backend = backend
        self._pool = pool
        self._prober = prober
        self._log = log.bind(function=spec.name)
        self._policy = policy or RestartPolicy()
        self._tracked: dict[str, Tracked] = {}
        self._init_replicas(spec)  # the count, the wake and converged events (ControllerBase)
        self._guard = TaskGuard(self._log)  # the reconcile and probe loops
        # removing dead containers, by instance id; each returns (exit code, last output)
        self._cleanups: dict[str, asyncio.Task[tuple[int | None, list[str]]]] = {}
        # what the last dead instances left (exit code, last output), read before removal
        self._last_words: dict[str, tuple[int | None, list[str]]] = {}
        self._young_deaths = 0
        self._not_before = 0.0  # backoff: no start before this monotonic time
        # An instance could not start as specified (UnrunnableError): no more attempts until the
        # spec changes (update) or a secret it needs is created (a refresh is an update).
        self._blocked = False
        self.phase = Phase.STARTING
        self.error: str | None = None
        self.rollout_error: str | None = None  # why the last rollout failed (then rolled back)
        self.restarts = 0
        self.last_exit_code: int | None = None
        self.last_logs: list[str] = []
        self.restart_delays: list[float] = []  # the backoff chosen at each restart, newest last
        # scaling: ``replicas`` is the count wanted now. The spec's count (file or API) sets
        # it; the autoscaler and a wake move it (set_replicas); 0 is "at zero".
        self._remove_paused = False
        self._spare_not_before = 0.0
        self.autoscaler_view: dict[str, object] | None = None  # written by the autoscaler

    # -- what others read --------------------------------------------------------------------

    def ready_count(self) -> int:
        return sum(1 for t in self._tracked.values() if t.ready)

    def inflight(self) -> int:
        """Requests in flight to this function now: at its instances, and held waiting for one
        (a wake from zero, a replacement): those keep it from idling and count as load."""
        return self._pool.inflight() + self._pool.waiting

    def paused_count(self) -> int:
        return sum(1 for t in self._tracked.values() if t.paused)

    def idle_paused(self) -> int:
        """Paused instances beyond the spare the function keeps (what idling may remove)."""
        if self.replicas == 0:
            return self.paused_count()
        return max(0, self.paused_count() - self._spares_wanted())

    def _spares_wanted(self) -> int:
        return 1 if self.spec.scale.spare else 0

    def instances(self) -> list[Instance]:
        return [t.instance for t in self._tracked.values()]

    # -- lifecycle ---------------------------------------------------------------------------

    async def adopt(self, candidates: list[Instance]) -> list[Instance]:
        """Take over healthy instances of this exact spec; return the ones not taken.

        Running ones are health-checked and join the pool. Paused ones (a function at zero, or
        a spare, when faaso stopped) are kept paused, up to what the function can use: its
        replicas (one at zero, for the wake) and its spare. They cannot answer a probe while
        frozen; a thawed process is exactly as it was, and the periodic probes watch it then.
        """
        rest: list[Instance] = []
        for instance in sorted(candidates, key=lambda i: i.paused):  # running ones first
            taken = sum(1 for t in self._tracked.values() if t.ready)
            if (
                instance.paused
                and len(self._tracked) < max(self.replicas, 1) + self._spares_wanted()
                and instance.fingerprint == self.fingerprint
                and instance.running
                and instance.endpoint is not None
            ):
                self._tracked[instance.id] = Tracked(instance, paused=True)
                self._log.info("instance.adopted", container=instance.name, paused=True)
                continue
            if (
                taken < self.replicas
                and not instance.paused
                and instance.fingerprint == self.fingerprint
                and instance.running
                and instance.endpoint is not None
                and await self._prober.check(
                    instance, self.spec.health_path, max(self.spec.health_timeout, 1.0)
                )
            ):
                self._tracked[instance.id] = Tracked(instance, ready=True)
                endpoint = pool_endpoint(instance.endpoint)
                self._pool.add(instance.id, endpoint)
                self._log.info(
                    "instance.adopted",
                    container=instance.name,
                    endpoint=endpoint.base_url,
                    unix=endpoint.unix,
                )
            else:
                rest.append(instance)
        return rest

    def start(self) -> None:
        # Always holding: a request for a function at zero waits for the wake it starts.
        self._pool.holding = True
        self._pool.wake = self.wake
        self._guard.spawn(f"controller-{self.name}", self._run)
        self._guard.spawn(f"probe-{self.name}", self._probe_loop)

    def update(self, spec: FunctionSpec, image: str) -> None:
        """New desired state: the loop rolls instances over if the fingerprint changed."""
        previous = self.spec
        self.spec = spec
        self.image = image
        self.fingerprint = instance_fingerprint(image, spec, self._secrets)
        self._rescale_for(previous, spec)
        self._converged.clear()
        self._young_deaths = 0
        self._not_before = 0.0
        self._blocked = False
        self._wake.set()

    async def detach(self) -> None:
        """Stop reconciling and probing, and leave every instance running (a restart of faaso
        that keeps its containers: the next start adopts them)."""
        self._closing = True
        self._pool.holding = False
        self._pool.wake = None
        await self._guard.close()
        await asyncio.gather(*self._cleanups.values(), return_exceptions=True)
        self.phase = Phase.STOPPED

    async def close(self, *, drain_timeout: float = DRAIN_TIMEOUT) -> None:
        """Stop reconciling; take every instance out of the pool, drain it, stop it."""
        self._closing = True
        self._pool.holding = False
        self._pool.wake = None
        await self._guard.close()
        await asyncio.gather(*self._cleanups.values(), return_exceptions=True)
        await self._retire(list(self._tracked.values()), "shutdown", drain_timeout)
        self.phase = Phase.STOPPED

    # -- scaling -----------------------------------------------------------------------------

    def set_replicas(self, replicas: int, why: str) -> None:
        """Run ``replicas`` instances from now on (0: scale to zero, pausing them first)."""
        if replicas > 0:
            self._remove_paused = False
        super().set_replicas(replicas, why)

    def remove_paused(self) -> None:
        """Scale to zero, second step: remove the paused instances (memory given back)."""
        if not self._remove_paused and self.paused_count():
            self._log.info("function.remove_paused", paused=self.paused_count())
        self._remove_paused = True
        self._wake.set()

    def _wake_kind(self) -> str:
        return "paused" if self.paused_count() else "cold"

    # -- events ------------------------------------------------------------------------------

    def on_event(self, event: BackendEvent) -> None:
        tracked = self._tracked.get(event.instance_id)
        if tracked is None or self._closing:
            return
        self._instance_down(tracked, event.kind, event.exit_code)

    def _instance_down(self, tracked: Tracked, reason: str, exit_code: int | None) -> None:
        """Out of the pool at once, then replaced by the loop."""
        instance = tracked.instance
        self._pool.remove(instance.id)
        self._tracked.pop(instance.id, None)
        self.restarts += 1
        if exit_code is not None:
            self.last_exit_code = exit_code
        lived = time.monotonic() - tracked.started_at
        if lived < self._policy.stable_after:
            self._young_deaths += 1
        else:
            self._young_deaths = 1
        delay = self._backoff_delay()
        self._not_before = time.monotonic() + delay
        self.restart_delays = [*self.restart_delays[-19:], delay]
        self._log.warning(
            "instance.down",
            container=instance.name,
            reason=reason,
            exit_code=exit_code,
            lived_seconds=round(lived, 2),
            restart_in=round(delay, 2),
            restarts=self.restarts,
        )
        self._converged.clear()
        self._wake.set()
        task = asyncio.create_task(self._collect_and_remove(instance, exit_code))
        self._cleanups[instance.id] = task
        task.add_done_callback(lambda _t: self._cleanups.pop(instance.id, None))

    async def _collect_and_remove(
        self, instance: Instance, exit_code: int | None
    ) -> tuple[int | None, list[str]]:
        """Read what a dead instance left (exit code, last output), then remove it."""
        logs: list[str] = []
        try:
            logs = await self._backend.logs_tail(instance.id, 20)
            if logs:
                self.last_logs = logs
            if exit_code is None:
                gone = await self._backend.inspect(instance.id)
                if gone is not None and gone.exit_code is not None:
                    exit_code = self.last_exit_code = gone.exit_code
            self._last_words[instance.id] = (exit_code, logs)
            while len(self._last_words) > 16:  # only the newest are asked for
                del self._last_words[next(iter(self._last_words))]
            await self._backend.stop(instance.id, timeout=0)
        except FaasoError as exc:
            self._log.warning("instance.cleanup_failed", container=instance.name, error=str(exc))
        return exit_code, logs

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            self._wake.clear()
            wait_for: float | None = None
            try:
                wait_for = await self._reconcile()
            except asyncio.CancelledError:
                raise
            except FaasoError as exc:
                self.error = str(exc)
                self._log.error("function.reconcile_failed", error=str(exc))
                wait_for = self._backoff_after_failure()
            except Exception as exc:  # a bug here must not end supervision
                self.error = f"{type(exc).__name__}: {exc}"
                self._log.exception("function.reconcile_crashed")
                wait_for = self._backoff_after_failure()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_for):
                    await self._wake.wait()

    def _backoff_delay(self) -> float:
        """0 for the first young death, then base, 2*base, 4*base... up to the cap."""
        if self._young_deaths < 2:
            return 0.0
        exponent = min(self._young_deaths - 2, 16)
        return float(min(self._policy.backoff_base * (1 << exponent), self._policy.backoff_cap))

    def _backoff_after_failure(self) -> float:
        self._young_deaths += 1
        delay = self._backoff_delay()
        self._not_before = time.monotonic() + delay
        self._set_phase()
        return delay

    async def _reconcile(self) -> float | None:
        """One pass. Returns how long to sleep at most before the next pass (None: until woken)."""
        target = self.replicas
        current = [t for t in self._tracked.values() if t.instance.fingerprint == self.fingerprint]
        old = [t for t in self._tracked.values() if t.instance.fingerprint != self.fingerprint]
        paused = [t for t in current if t.paused]
        active = [t for t in current if not t.paused]
        if target == 0:
            # At zero: out of the pool, drained, then frozen (memory kept, no CPU); removed
            # only when asked to (after the longer idle time), or at once if a pause fails.
            if active:
                await self._park(active)
            if old:
                await self._retire(old, "replaced by a newer spec", DRAIN_TIMEOUT)
            if self._remove_paused:
                gone = [t for t in self._tracked.values() if t.paused]
                if gone:
                    await self._retire(gone, "idle at zero: removed", 0.0)
            self.error = None
            self._set_phase()
            self._converged.set()
            return None
        missing = target - len(active)
        if missing > 0 and paused:
            # A paused instance answers tens of milliseconds after it is thawed: use those first.
            thawed = await asyncio.gather(*(self._thaw(t) for t in paused[:missing]))
            missing -= sum(thawed)
        if missing > 0 and self._blocked:
            # Starting it again would fail the same way: wait for a new spec (or a secret).
            self._set_phase()
            self._converged.set()
            return None
        if missing > 0:
            wait = self._not_before - time.monotonic()
            if wait > 0:
                self._set_phase()
                return wait
            results = await asyncio.gather(
                *(self._launch() for _ in range(missing)), return_exceptions=True
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            for failure in failures:
                if isinstance(failure, asyncio.CancelledError):
                    raise failure
            unrunnable = [f for f in failures if isinstance(f, UnrunnableError)]
            if unrunnable:
                self.error = str(unrunnable[0])
                self._blocked = True
                self._log.error(
                    "function.unrunnable",
                    error=self.error,
                    note="not retried until the function's settings change",
                )
                self._set_phase()
                self._converged.set()  # settled, as far as it can get: wait_converged says no
                return None
            if failures:
                first = failures[0]
                self.error = str(first)
                self._log.error("instance.start_failed", error=str(first), failed=len(failures))
                return self._backoff_after_failure()
        elif missing < 0:
            # The newest go first (as Kubernetes does): the oldest are warm, and keep their logs.
            extra = sorted(active, key=lambda t: t.started_at, reverse=True)[:-missing]
            await self._retire(extra, "scaled down", DRAIN_TIMEOUT)
        if self._remove_paused:
            paused_now = [t for t in self._tracked.values() if t.paused]
            # the newest current one stays when the function keeps a spare
            paused_now.sort(
                key=lambda t: (t.instance.fingerprint == self.fingerprint, t.started_at)
            )
            spares = paused_now[: max(0, len(paused_now) - self._spares_wanted())]
            if spares:
                await self._retire(spares, "idle spare: removed", 0.0)
        # Read again: the awaits above (launches, thaws) may have seen the spec change (a
        # rollback), so the instances that were current at the start of the pass may be the
        # ones to keep now, and the ones just started the ones to go.
        old = [t for t in self._tracked.values() if t.instance.fingerprint != self.fingerprint]
        if old and len(self._ready_current()) >= target:
            await self._retire(old, "replaced by a newer spec", DRAIN_TIMEOUT)
        if len(self._ready_current()) >= target and not old:
            self.error = None
        if len(self._pool):
            self.waking = None  # woken: later requests find an instance
        self._set_phase()
        if self.phase is Phase.READY:
            self._converged.set()
            if not old:
                return await self._keep_spare()
        return None

    async def _keep_spare(self) -> float | None:
        """With ``scale.spare``: one more healthy container, paused, ready to replace one that
        dies. Made only once the function serves; a death meanwhile is handled right after."""
        current = [
            t
            for t in self._tracked.values()
            if t.paused and t.instance.fingerprint == self.fingerprint
        ]
        if len(current) >= self._spares_wanted() or time.monotonic() < self._spare_not_before:
            return None
        fingerprint = self.fingerprint
        began = time.monotonic()
        try:
            instance = await self._backend.start(self._instance_spec())
        except FaasoError as exc:
            self._log.warning("instance.spare_failed", error=str(exc))
            self._spare_not_before = time.monotonic() + SPARE_RETRY
            return SPARE_RETRY
        tracked = Tracked(instance)
        try:
            await self._wait_healthy(tracked, watched=False)
            await self._backend.pause(instance.id)
        except BaseException as exc:
            with contextlib.suppress(FaasoError):
                await asyncio.shield(self._backend.stop(instance.id, timeout=0))
            if not isinstance(exc, FaasoError):
                raise
            self._log.warning("instance.spare_failed", container=instance.name, error=str(exc))
            self._spare_not_before = time.monotonic() + SPARE_RETRY
            return SPARE_RETRY
        if fingerprint != self.fingerprint or self._closing:  # the spec changed meanwhile
            with contextlib.suppress(FaasoError):
                await self._backend.stop(instance.id, timeout=0)
            return 0.0
        tracked.paused = True
        self._tracked[instance.id] = tracked
        self._log.info(
            "instance.spare_ready",
            container=instance.name,
            seconds=round(time.monotonic() - began, 3),
        )
        return None

    async def _park(self, victims: list[Tracked]) -> None:
        """Scale to zero, first step: out of the pool, drain, pause (retire if it cannot)."""
        members = []
        for tracked in victims:
            tracked.ready = False
            member = self._pool.remove(tracked.instance.id)
            if member is not None:
                members.append(member)
        await asyncio.gather(*(drain(m, DRAIN_TIMEOUT) for m in members))
        results = await asyncio.gather(
            *(self._backend.pause(t.instance.id) for t in victims), return_exceptions=True
        )
        failed = []
        for tracked, result in zip(victims, results, strict=True):
            if isinstance(result, BaseException):
                self._log.warning(
                    "instance.pause_failed", container=tracked.instance.name, error=str(result)
                )
                failed.append(tracked)
            else:
                tracked.paused = True
                self._log.info("instance.paused", container=tracked.instance.name)
        if failed:
            await self._retire(failed, "could not be paused", 0.0)

    async def _thaw(self, tracked: Tracked) -> bool:
        """Unpause an instance and put it back in the pool once it answers; False if it fails."""
        instance = tracked.instance
        began = time.monotonic()
        try:
            await self._backend.unpause(instance.id)
            tracked.paused = False
            # No health check first: a thawed process is exactly as it was when it was frozen,
            # healthy and listening; the periodic probes watch it from here on.
        except FaasoError as exc:
            self._log.warning("instance.thaw_failed", container=instance.name, error=str(exc))
            await self._retire([tracked], "could not be woken", 0.0)
            return False
        if instance.id not in self._tracked:  # died meanwhile
            return False
        tracked.ready = True
        assert instance.endpoint is not None
        self._pool.add(instance.id, pool_endpoint(instance.endpoint))
        self._log.info(
            "instance.thawed",
            container=instance.name,
            seconds=round(time.monotonic() - began, 4),
        )
        return True

    def _ready_current(self) -> list[Tracked]:
        return [
            t
            for t in self._tracked.values()
            if t.ready and t.instance.fingerprint == self.fingerprint
        ]

    def _set_phase(self) -> None:
        ready = len(self._ready_current())
        if self.replicas == 0:
            paused = any(t.paused for t in self._tracked.values())
            self.phase = Phase.PAUSED if paused else Phase.SCALED_TO_ZERO
        elif self._blocked and ready < self.replicas:
            self.phase = Phase.FAILED
        elif self._young_deaths >= self._policy.crash_loop_after:
            self.phase = Phase.CRASH_LOOP
        elif ready >= self.replicas:
            self.phase = Phase.READY
        elif any(t.ready for t in self._tracked.values()):
            self.phase = Phase.DEGRADED
        else:
            self.phase = Phase.STARTING

    def fingerprint_for(self, spec: FunctionSpec, image: str) -> str:
        return instance_fingerprint(image, spec, self._secrets)

    def _instance_spec(self) -> InstanceSpec:
        spec = self.spec
        env = dict(spec.env)
        if spec.env_process:
            env["fprocess"] = spec.env_process
        mounts: tuple[tuple[str, str], ...] = ()
        if spec.secrets:
            if self._secrets is None:
                raise UnrunnableError(
                    f"function {spec.name} needs secrets, but none are configured"
                )
            missing = self._secrets.missing(spec.secrets, spec.namespace)
            if missing:
                listed = ", ".join(repr(m) for m in missing)
                fixes = "; ".join(f"faaso secret create {m} --value VALUE" for m in missing)
                raise UnrunnableError(
                    f"function {spec.name} needs the secret {listed}, which does not exist; "
                    f"create it with: {fixes} (it starts as soon as the secret exists)"
                    if len(missing) == 1
                    else f"function {spec.name} needs the secrets {listed}, which do not exist; "
                    f"create them with: {fixes} (it starts as soon as they exist)"
                )
            try:
                mounts = self._secrets.mounts(spec.secrets, spec.namespace)
            except FaasoError as exc:
                raise BackendError(f"function {spec.name}: {exc}") from exc
        return InstanceSpec(
            function=spec.name,
            image=self.image,
            fingerprint=self.fingerprint,
            env=env,
            labels=spec.labels,
            limits=spec.limits,
            mounts=mounts,
            read_only_root=spec.read_only_root,
        )

    async def _launch(self) -> None:
        instance = await self._backend.start(self._instance_spec())
        tracked = Tracked(instance)
        self._tracked[instance.id] = tracked
        self._log.info(
            "instance.started",
            container=instance.name,
            endpoint=instance.endpoint.base_url if instance.endpoint else None,
        )
        try:
            await self._wait_healthy(tracked)
        except BaseException:
            self._tracked.pop(instance.id, None)
            with contextlib.suppress(FaasoError):
                await asyncio.shield(self._backend.stop(instance.id, timeout=0))
            raise
        if instance.id not in self._tracked:  # died (event) while we waited
            raise BackendError(f"container {instance.name} died right after its health check")
        tracked.ready = True
        assert instance.endpoint is not None
        endpoint = pool_endpoint(instance.endpoint)
        self._pool.add(instance.id, endpoint)
        self._log.info(
            "instance.ready",
            container=instance.name,
            seconds=round(time.monotonic() - tracked.started_at, 3),
            unix=endpoint.unix,
        )

    async def _wait_healthy(self, tracked: Tracked, *, watched: bool = True) -> None:
        """Poll the health path until it answers 200; fail early if the container exits.

        ``watched``: the instance is tracked, so its death event drops it from ``_tracked``
        (checked at every poll); otherwise (a spare in the making) only every half second."""
        instance, spec = tracked.instance, self.spec
        deadline = time.monotonic() + spec.startup_timeout
        delay = 0.01
        next_liveness = time.monotonic() + 0.5
        while True:
            if await self._prober.check(instance, spec.health_path, max(spec.health_timeout, 1.0)):
                return
            now = time.monotonic()
            if (watched and instance.id not in self._tracked) or now >= next_liveness:
                next_liveness = now + 0.5
                exited = await self._exited(instance)
                if exited is not None:
                    code, tail = exited
                    raise BackendError(
                        f"container {instance.name} exited (code {code}) before it was healthy; "
                        "its last output:\n" + "\n".join("  | " + line for line in tail)
                    )
            if now >= deadline:
                raise BackendError(
                    f"container {instance.name} did not answer {spec.health_path} with 200 "
                    f"within {spec.startup_timeout:g} s"
                )
            await asyncio.sleep(delay)  # poll with backoff, bounded by the deadline
            delay = min(delay * 2, 0.05)  # fine-grained: a request may be waiting (a wake)

    async def _exited(self, instance: Instance) -> tuple[int | None, list[str]] | None:
        """(exit code, last output) of an instance that is no longer running, else None."""
        cleanup = self._cleanups.get(instance.id)
        if cleanup is not None:
            # Its death was seen (the engine's event) and its container is being removed:
            # what it left is read there, before the removal.
            await asyncio.shield(cleanup)
        if instance.id in self._last_words:
            return self._last_words.pop(instance.id)
        current = await self._backend.inspect(instance.id)
        if current is not None and current.running:
            return None
        code = current.exit_code if current else None
        if code is not None:
            self.last_exit_code = code
        tail = await self._backend.logs_tail(instance.id, 20)
        if tail:
            self.last_logs = tail
        return code, tail

    async def _probe_loop(self) -> None:
        """Periodic health checks of ready instances; N failures in a row take one out."""
        while not self._closing:
            await asyncio.sleep(self.spec.health_interval)  # the probe period itself
            spec = self.spec
            ready = [t for t in self._tracked.values() if t.ready]
            results = await asyncio.gather(
                *(
                    self._prober.check(t.instance, spec.health_path, spec.health_timeout)
                    for t in ready
                )
            )
            now = time.monotonic()
            for tracked, ok in zip(ready, results, strict=True):
                if tracked.instance.id not in self._tracked:
                    continue
                if ok:
                    tracked.probe_failures = 0
                    if now - tracked.started_at >= self._policy.stable_after:
                        self._young_deaths = 0
                    continue
                tracked.probe_failures += 1
                if tracked.probe_failures >= spec.health_failures:
                    self._instance_down(tracked, "failed its health checks", None)

    async def _retire(self, victims: list[Tracked], reason: str, drain_timeout: float) -> None:
        """Out of the pool first, then drain, then stop."""
        members = []
        for tracked in victims:
            self._tracked.pop(tracked.instance.id, None)
            member = self._pool.remove(tracked.instance.id)
            if member is not None:
                members.append(member)
            self._log.info("instance.retire", container=tracked.instance.name, reason=reason)
        await asyncio.gather(*(drain(m, drain_timeout) for m in members))
        results = await asyncio.gather(
            *(self._backend.stop(t.instance.id, timeout=STOP_TIMEOUT) for t in victims),
            return_exceptions=True,
        )
        for tracked, result in zip(victims, results, strict=True):
            if isinstance(result, BaseException):
                self._log.warning(
                    "instance.stop_failed", container=tracked.instance.name, error=str(result)
                )
