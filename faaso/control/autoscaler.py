"""The built-in autoscaler: replicas follow each function's load, and idle functions go to zero.

No Prometheus or AlertManager is needed: the load is measured in the process. Every
``SAMPLE_INTERVAL`` each function gets one sample of its load, by its policy's ``type``:

- ``rps``: requests started per second since the previous sample (the gateway's counter);
- ``capacity``: requests in flight now, over all replicas;
- ``cpu``: CPU use in percent of one core, summed over its instances (the engine's stats,
  read at each decision).

Every ``tick`` (2 s) a decision is made, in Knative's shape (see :mod:`faaso.spec.scaling`):
``desired = ceil(load / (target x target_proportion))`` from the stable window's average, or from
the panic window's when that is at least ``panic_threshold`` times what the ready replicas carry
(panic: no scale-down until a whole stable window has passed without that). A scale-down waits
until the higher count has not been wanted for ``scale_down_delay``, and removes at most a factor
of ``max_scale_down_rate`` per tick. The result is clamped to ``min..max``; ``min == max`` leaves
the count alone. Each change is logged (function, from, to, why), shown in the function's status
(``autoscaler``) and exported as metrics.

Scale to zero (``zero: true``): after ``zero_duration`` with no request started, none in flight
and nothing ``pending`` (the hook for queued asynchronous invocations: a callable
``pending(function) -> int``, 0 by default), the function goes to zero replicas; its instances
are paused. After ``remove_after`` more seconds at zero they are removed. A function scaled to 0
through the API takes the same second step. A request wakes it (see
:meth:`faaso.control.controller.FunctionController.wake`).

``POST /system/alert`` (AlertManager's webhook) lands in :meth:`Autoscaler.alert`: firing adds
``ceil(max x factor / 100)`` replicas up to max and holds them as a floor; resolved returns to min.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily, Metric
from structlog.typing import FilteringBoundLogger

from faaso.backends.base import Backend
from faaso.control.service import AnyController
from faaso.errors import FaasoError, NotFoundError
from faaso.guard import TaskGuard
from faaso.spec.scaling import ScalePolicy, ScaleType

SAMPLE_INTERVAL = 0.25  # seconds between load samples (decisions come every policy.tick)
KEEP_DECISIONS = 50  # the last changes kept per function, for the UI (newest last)


@dataclass(slots=True)
class _State:
    """What the autoscaler remembers about one function."""

    samples: deque[tuple[float, float]] = field(default_factory=deque)  # (time, load)
    wanted: deque[tuple[float, int]] = field(default_factory=deque)  # (time, desired): delay
    last_count: int = 0  # the gateway's started-requests counter at the last sample
    last_sample: float = 0.0
    last_decision: float = 0.0
    last_activity: float = field(default_factory=time.monotonic)
    zero_since: float | None = None
    panic_since: float | None = None
    cpu_total: float | None = None  # CPU seconds of its instances at the last decision
    cpu_at: float = 0.0
    cpu_percent: float = 0.0
    floor: int = 0  # held by a firing alert
    set_by_us: int | None = None  # the replicas we last set (anything else came from outside)
    desired: int = 0
    stable_load: float = 0.0
    panic_load: float = 0.0
    decision: dict[str, object] = field(default_factory=dict)
    decisions: deque[dict[str, object]] = field(
        default_factory=lambda: deque(maxlen=KEEP_DECISIONS)
    )
    ticks: int = 0  # decisions made (each tick), for the status
    # When the autoscaler first saw the function (its start, or faaso's): the load it has seen is
    # less than a stable window, so it does not scale down before one has passed.
    first_seen: float = field(default_factory=time.monotonic)


def _average(samples: deque[tuple[float, float]], since: float) -> float:
    values = [v for t, v in samples if t >= since]
    return sum(values) / len(values) if values else 0.0


class Autoscaler:
    def __init__(
        self,
        controllers: Callable[[], list[AnyController]],
        started: Callable[[str], int],
        backend: Backend,
        log: FilteringBoundLogger,
        *,
        pending: Callable[[str], int] = lambda _function: 0,
    ) -> None:
        self._controllers = controllers
        self._started = started  # requests started per function (a counter)
        self._backend = backend
        self._log = log
        # Hook for the async job queue: jobs waiting for a function keep it from idling.
        self.pending = pending
        self._states: dict[str, _State] = {}
        self._guard = TaskGuard(log)  # a crash of the loop is logged, the loop restarted

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._guard.spawn("autoscaler", self._run)

    async def close(self) -> None:
        await self._guard.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.step(time.monotonic())
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end autoscaling: log, go on next tick
                self._log.exception("autoscaler.crashed")
            await asyncio.sleep(SAMPLE_INTERVAL)  # the sampling period itself

    # -- what others read --------------------------------------------------------------------

    def status(self, function: str) -> dict[str, object] | None:
        state = self._states.get(function)
        if state is None:
            return None
        return {
            "desired": state.desired,
            "stable_load": round(state.stable_load, 3),
            "panic_load": round(state.panic_load, 3),
            "panicking": state.panic_since is not None,
            "alert_floor": state.floor,
            "last_decision": state.decision or None,
            "ticks": state.ticks,
        }

    def decisions(self, function: str) -> list[dict[str, object]]:
        """The function's last changes of replicas (from, to, why, at: Unix time), oldest
        first; at most ``KEEP_DECISIONS``."""
        state = self._states.get(function)
        return list(state.decisions) if state is not None else []

    def metrics(self) -> list[Metric]:
        desired = GaugeMetricFamily(
            "faaso_autoscaler_desired_replicas",
            "Replicas the autoscaler wants for each function",
            labels=["function_name"],
        )
        load = GaugeMetricFamily(
            "faaso_autoscaler_observed_load",
            "Load the autoscaler sees (stable window average), in the unit of its scale type",
            labels=["function_name", "type"],
        )
        for controller in self._controllers():
            state = self._states.get(controller.name)
            if state is None:
                continue
            desired.add_metric([controller.name], float(state.desired))
            load.add_metric([controller.name, str(controller.spec.scale.type)], state.stable_load)
        return [desired, load]

    # -- POST /system/alert ------------------------------------------------------------------

    def alert(self, function: str, firing: bool) -> int:
        """Firing: add ceil(max x factor / 100) replicas (up to max), held as a floor while it
        fires; resolved: back to min. Returns the new replicas. Raises NotFoundError."""
        controller = next((c for c in self._controllers() if c.name == function), None)
        if controller is None:
            raise NotFoundError(f"function {function!r} does not exist")
        policy = controller.spec.scale
        state = self._states.setdefault(function, _State())
        if firing:
            step = math.ceil(policy.max * policy.factor / 100)
            replicas = min(policy.max, max(controller.replicas, 1) + step)
            state.floor = replicas
            why = f"alert firing: +{step} (max {policy.max} x factor {policy.factor:g}%)"
        else:
            replicas = policy.min
            state.floor = 0
            state.wanted.clear()
            why = "alert resolved: back to min"
        self._set(controller, state, replicas, why, time.monotonic())
        return replicas

    # -- one step ----------------------------------------------------------------------------

    async def step(self, now: float) -> None:
        """Sample every function; decide for those whose tick has come."""
        controllers = self._controllers()
        names = {c.name for c in controllers}
        for name in [n for n in self._states if n not in names]:
            del self._states[name]
        for controller in controllers:
            state = self._states.get(controller.name)
            if state is None:
                state = self._states[controller.name] = _State(
                    last_count=self._started(controller.name), last_sample=now, last_activity=now
                )
            self._sample(controller, state, now)
            if now - state.last_decision >= controller.spec.scale.tick:
                state.last_decision = now
                try:
                    await self._decide(controller, state, now)
                except FaasoError as exc:
                    self._log.warning(
                        "autoscaler.decision_failed", function=controller.name, error=str(exc)
                    )

    def _sample(self, controller: AnyController, state: _State, now: float) -> None:
        policy = controller.spec.scale
        count = self._started(controller.name)
        requests = count - state.last_count
        elapsed = now - state.last_sample
        inflight = controller.inflight()
        state.last_count, state.last_sample = count, now
        if requests > 0 or inflight > 0 or self.pending(controller.name) > 0:
            state.last_activity = now
        if policy.type is ScaleType.RPS:
            load = requests / elapsed if elapsed > 0 else 0.0
        elif policy.type is ScaleType.CAPACITY:
            load = float(inflight)
        else:
            load = state.cpu_percent
        state.samples.append((now, load))
        while state.samples and state.samples[0][0] < now - policy.stable_window:
            state.samples.popleft()

    async def _cpu(self, controller: AnyController, state: _State, now: float) -> None:
        readings = await asyncio.gather(
            *(self._backend.cpu_seconds(i.id) for i in controller.instances()),
            return_exceptions=True,
        )
        total = sum(r for r in readings if isinstance(r, float))
        if state.cpu_total is not None and now > state.cpu_at and total >= state.cpu_total:
            state.cpu_percent = 100.0 * (total - state.cpu_total) / (now - state.cpu_at)
        state.cpu_total, state.cpu_at = total, now

    async def _decide(self, controller: AnyController, state: _State, now: float) -> None:
        state.ticks += 1
        try:
            await self._decide_now(controller, state, now)
        finally:
            controller.autoscaler_view = self.status(controller.name)

    async def _decide_now(self, controller: AnyController, state: _State, now: float) -> None:
        policy = controller.spec.scale
        current = controller.replicas
        if current != state.set_by_us:
            # Someone else set it (the API, a file edit, a wake; or the deploy, on the first
            # tick): the scale-down delay holds it. An API scale answers before its instances
            # start, so this must hold from the first tick on.
            state.wanted.append((now, current))
            state.set_by_us = current
        if current == 0:
            self._at_zero(controller, state, now)
            return
        state.zero_since = None
        if policy.zero and now - state.last_activity >= policy.zero_duration:
            idle = now - state.last_activity
            self._set(controller, state, 0, f"idle for {idle:.0f} s: scale to zero (paused)", now)
            state.zero_since = now
            return
        if controller.idle_paused() and now - state.last_activity >= policy.remove_after:
            controller.remove_paused()  # paused ones left from a wake (not the spare), idle
        if not policy.autoscaling:
            state.desired = current
            return
        if policy.type is ScaleType.CPU:
            await self._cpu(controller, state, now)
        desired, why = self._desired(controller, policy, state, now)
        state.desired = desired
        if desired != current:
            self._set(controller, state, desired, why, now)

    def _desired(
        self, controller: AnyController, policy: ScalePolicy, state: _State, now: float
    ) -> tuple[int, str]:
        current = controller.replicas
        per = policy.per_replica
        unit = str(policy.type)
        state.stable_load = _average(state.samples, now - policy.stable_window)
        state.panic_load = _average(state.samples, now - policy.panic_window)
        want_stable = math.ceil(state.stable_load / per - 1e-9)
        want_panic = math.ceil(state.panic_load / per - 1e-9)
        ready = max(controller.ready_count(), 1)
        if state.panic_load / per >= policy.panic_threshold * ready:
            if state.panic_since is None:
                self._log.info(
                    "autoscaler.panic", function=controller.name, load=round(state.panic_load, 2)
                )
            state.panic_since = now
        elif state.panic_since is not None and now - state.panic_since >= policy.stable_window:
            state.panic_since = None
        if state.panic_since is not None:
            desired = max(want_panic, current)
            why = (
                f"panic: {state.panic_load:.1f} {unit} over {policy.panic_window:g} s "
                f"/ {per:g} per replica"
            )
        else:
            desired = want_stable
            why = (
                f"{state.stable_load:.1f} {unit} over {policy.stable_window:g} s "
                f"/ {per:g} per replica"
            )
        state.wanted.append((now, desired))
        while state.wanted and state.wanted[0][0] < now - policy.scale_down_delay:
            state.wanted.popleft()
        if desired < current:
            delayed = max(w for _, w in state.wanted)
            bounded = math.ceil(current / policy.max_scale_down_rate)
            if delayed > desired or bounded > desired:
                # A hold keeps what runs at most: a higher count wanted in the delay (an
                # override that was just reset, say) never takes it back up.
                desired = min(current, max(delayed, bounded))
                why += f" (scale-down held by its delay and bound: {desired})"
        scaled_at = controller.scaled_at
        by_hand = not (controller.scaled_because or "").startswith("autoscaler:")
        if (
            desired < current
            and by_hand
            and scaled_at is not None
            and time.time() - scaled_at < policy.stable_window
        ):
            # A scale by hand (the API, an alert, a wake) holds for one stable window before
            # the load may take it down again: `faaso scale f 2` is not undone at the next tick.
            desired = current
            why += f" (held: scaled by hand less than {policy.stable_window:g} s ago)"
        elif desired < current and now - state.first_seen < policy.stable_window:
            # Just started watching (faaso restarted, the function is new): less than a stable
            # window of load is known, so what runs (an adopted count, say) is kept for now.
            desired = current
            why += f" (held: watched for less than {policy.stable_window:g} s)"
        if state.floor > desired:
            desired = state.floor
            why += f" (alert floor {state.floor})"
        clamped = policy.clamp(desired)
        if clamped != desired:
            why += f" (clamped to {policy.min}..{policy.max})"
        return clamped, why

    def _at_zero(self, controller: AnyController, state: _State, now: float) -> None:
        state.desired = 0
        if state.zero_since is None:
            state.zero_since = now
        paused = controller.paused_count()
        if paused and now - state.zero_since >= controller.spec.scale.remove_after:
            controller.remove_paused()

    def _set(
        self, controller: AnyController, state: _State, replicas: int, why: str, now: float
    ) -> None:
        before = controller.replicas
        state.decision = {
            "from": before,
            "to": replicas,
            "why": why,
            "at": round(time.time(), 3),
        }
        state.decisions.append(state.decision)
        state.desired = replicas
        state.set_by_us = replicas
        if replicas == 0:
            state.zero_since = now
        self._log.info(
            "autoscaler.decision",
            function=controller.name,
            replicas_from=before,
            replicas_to=replicas,
            why=why,
        )
        controller.set_replicas(replicas, f"autoscaler: {why}")
