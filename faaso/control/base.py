"""What every function controller keeps the same way, whatever runs its instances.

:class:`ControllerBase` is the base of :class:`faaso.control.controller.FunctionController`
(faaso's own containers on plain Docker) and :class:`faaso.control.service.ServiceController`
(one Swarm service): the replica count and why it was set, the wake from zero a request
starts, the "converged" signal a rollout waits for, how a new spec moves the count, and the
status the API and UI read. Each
subclass reconciles in its own loop, woken by ``_wake``, and sets ``_converged`` when what runs
matches the spec.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from structlog.typing import FilteringBoundLogger

from faaso.gateway.pools import FunctionPool
from faaso.spec.function import FunctionSpec
from faaso.spec.status import SETTLED, FunctionStatus, Phase


class ControllerBase:
    """One function's replica count, the events its controller's loop runs on, its status."""

    spec: FunctionSpec
    image: str
    phase: Phase
    error: str | None
    rollout_error: str | None
    restarts: int
    last_exit_code: int | None
    last_logs: list[str]
    autoscaler_view: dict[str, object] | None
    _log: FilteringBoundLogger
    _pool: FunctionPool

    def _init_replicas(self, spec: FunctionSpec) -> None:
        self._wake = asyncio.Event()  # the reconcile loop: look again now
        self._converged = asyncio.Event()  # what runs matches the spec (or it gave up)
        self._closing = False
        self.replicas = spec.replicas
        self.scaled_because = "deployed"
        self.scaled_at = time.time()
        self.waking: str | None = None  # "paused" or "cold" while a request wakes it from zero
        # Told (function, count) when a request woke it from zero (the supervisor's hook).
        self.on_woken: Callable[[str, int], None] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def paused_count(self) -> int:
        return 0

    def status(self) -> FunctionStatus:
        return FunctionStatus(
            function=self.name,
            phase=self.phase,
            replicas=self.replicas,
            available=len(self._pool),
            image=self.image,
            error=self.error,
            rollout_error=self.rollout_error,
            restarts=self.restarts,
            last_exit_code=self.last_exit_code,
            last_logs=tuple(self.last_logs),
            paused=self.paused_count(),
            scaled_because=self.scaled_because,
            scaled_at=self.scaled_at,
            autoscaler=self.autoscaler_view,
        )

    async def wait_converged(self, timeout: float) -> bool:
        """Wait until the running instances match the spec (or the controller gave up)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._converged.wait()
        return self._converged.is_set() and self.phase in SETTLED

    def set_replicas(self, replicas: int, why: str) -> None:
        """The count to run from now on (the API, the autoscaler, a wake, the config)."""
        if replicas == self.replicas:
            return
        self._log.info("function.scale", replicas_from=self.replicas, replicas_to=replicas, why=why)
        self.replicas = replicas
        self.scaled_because = why
        self.scaled_at = time.time()
        self._converged.clear()
        self._wake.set()

    def _rescale_for(self, previous: FunctionSpec, spec: FunctionSpec) -> None:
        """A new spec: its replicas when the configured ones changed, else the count the
        autoscaler chose, kept within the new bounds."""
        if spec.replicas != previous.replicas or spec.scale != previous.scale:
            self.set_replicas(spec.replicas, "the configured replicas changed")
        elif self.replicas > 0:
            self.set_replicas(spec.scale.clamp(self.replicas), "the scale bounds changed")

    def wake(self) -> str | None:
        """A request found no instance: start one if the function is at zero (the gateway's
        pool calls this). Every request that arrives meanwhile joins the same start. Returns
        how it wakes (``paused`` or ``cold``), or None when it is not at zero (healing)."""
        if self._closing:
            return None
        if self.replicas > 0:
            return self.waking
        self.waking = self._wake_kind()
        self.set_replicas(max(1, self.spec.scale.min), f"woken by a request ({self.waking})")
        if self.on_woken is not None:
            self.on_woken(self.name, self.replicas)
        return self.waking

    def _wake_kind(self) -> str:
        """How a wake from zero starts: ``cold`` unless a subclass has paused instances."""
        return "cold"
