"""Admission: may this invocation go to the function now, and to which instance?

Written once for every caller: the fast path, the aiohttp path and programmatic callers (an
async worker invoking a function without an HTTP request of its own). For a function name it
answers a :class:`Lease` (an instance to send to, counted in flight until ``finish``) or a
:class:`Refusal` (429: too many in flight; 503: no ready instance), and counts the invocation
in the metrics either way.

Holding: while a function is expected back (``FunctionPool.holding``), a request waits for an
instance instead of getting a 503, within the function's timeout. That decision is made in
:meth:`Admission.should_hold` and the wait in :meth:`Admission.hold`, nowhere else: a hook that
wakes a function at zero replicas belongs there. :meth:`Admission.try_admit` never waits; it
answers :data:`HOLD` when the caller would have to, so the fast path (which cannot wait inside
a protocol callback) can hand the request to :meth:`Admission.admit`, which does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from faaso.gateway.messages import (
    RETRY_AFTER_WAKE,
    msg_not_ready,
    msg_too_many,
    msg_wake_timed_out,
)
from faaso.gateway.metrics import Metrics
from faaso.gateway.pools import FunctionPool, Member, Pools


@dataclass(frozen=True, slots=True)
class Refusal:
    """The proxy answers for the function: ``status`` with ``message`` (JSON error body)."""

    status: int
    message: str
    function: str
    retry_after: str | None = None  # Retry-After, when trying again soon will likely work


class Hold:
    """Not now: :meth:`Admission.admit` would wait for an instance."""

    __slots__ = ()


HOLD: Final = Hold()


class Lease:
    """One admitted invocation: an instance to send it to, counted in flight until
    :meth:`finish`. ``deadline`` (monotonic) is when the function's timeout runs out, counted
    from admission (a held request has spent part of it already)."""

    __slots__ = (
        "_done",
        "_metrics",
        "deadline",
        "function",
        "member",
        "pool",
        "started",
        "timeout",
        "woken",
    )

    def __init__(
        self,
        function: str,
        pool: FunctionPool,
        member: Member,
        started: float,
        timeout: float,
        metrics: Metrics | None,
    ) -> None:
        self.function = function
        self.pool = pool
        self.member = member
        self.started = started
        self.timeout = timeout
        self.deadline = started + timeout
        self._metrics = metrics
        self._done = False
        # How this invocation's function was woken from zero ("paused" or "cold"), if it was.
        self.woken: str | None = None
        member.inflight += 1

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def retry_elsewhere(self, tried: set[str]) -> Member | None:
        """After a refused connection (nothing was sent): move to the least busy member not in
        ``tried``, or None when there is none (the lease stays where it was)."""
        other = self.pool.pick_other(tried)
        if other is not None:
            self.member.inflight -= 1
            other.inflight += 1
            self.member = other
        return other

    def finish(self, status: int) -> None:
        """The invocation ended with ``status`` (499: the client left); counted once."""
        if self._done:
            return
        self._done = True
        self.member.inflight -= 1
        if self._metrics is not None:
            self._metrics.finished(self.function, status, time.monotonic() - self.started)


class Admission:
    """Admission for every function, reading the current limits through callables so that a
    reload swaps what they return."""

    def __init__(
        self,
        pools: Pools,
        timeout_of: Callable[[str], float],
        max_inflight_of: Callable[[str], int | None],
        metrics: Metrics | None,
    ) -> None:
        self.pools = pools
        self.timeout_of = timeout_of
        self.max_inflight_of = max_inflight_of
        self.metrics = metrics

    def should_hold(self, pool: FunctionPool) -> bool:
        """Whether a request for a function with no member waits (instead of a 503)."""
        return pool.holding

    async def hold(self, pool: FunctionPool, timeout: float) -> tuple[Member | None, str | None]:
        """Wake the function if it is at zero (the pool's ``wake``, set by the control plane:
        every request that arrives meanwhile joins the same start), then wait for a member
        while the pool holds, up to ``timeout``. Returns the member (None: give up) and how the
        function was woken (None when it was not at zero)."""
        woken = pool.wake() if pool.wake is not None else None
        return await pool.wait_member(timeout), woken

    def try_admit(self, function: str) -> Lease | Refusal | Hold:
        """Admission without waiting: :data:`HOLD` means "call :meth:`admit`", and nothing
        was counted yet."""
        pool = self.pools.get(function)
        member = pool.pick()
        if member is None and self.should_hold(pool):
            return HOLD
        return self._decide(function, pool, member, time.monotonic())

    async def admit(self, function: str) -> Lease | Refusal:
        """Admission, holding the caller while the function is expected back."""
        decided = self.try_admit(function)
        if not isinstance(decided, Hold):
            return decided
        started = time.monotonic()
        pool = self.pools.get(function)
        member, woken = await self.hold(pool, self.timeout_of(function))
        if member is None:
            member = pool.pick()  # holding may have ended with a member
        decided = self._decide(function, pool, member, started, woken)
        if isinstance(decided, Lease):
            decided.woken = woken
        return decided

    def _decide(
        self,
        function: str,
        pool: FunctionPool,
        member: Member | None,
        started: float,
        woken: str | None = None,
    ) -> Lease | Refusal:
        metrics = self.metrics
        if metrics is not None:
            metrics.started(function)
        limit = self.max_inflight_of(function)
        refusal: Refusal | None = None
        if limit is not None and pool.inflight() >= limit:
            refusal = Refusal(429, msg_too_many(function, limit), function)
        elif member is None and woken is not None:  # the wake did not finish in time
            refusal = Refusal(503, msg_wake_timed_out(function, woken), function, RETRY_AFTER_WAKE)
        elif member is None:
            refusal = Refusal(503, msg_not_ready(function), function)
        else:
            timeout = self.timeout_of(function)
            if started + timeout <= time.monotonic():
                refusal = Refusal(503, msg_not_ready(function), function)
            else:
                return Lease(function, pool, member, started, timeout, metrics)
        if metrics is not None:
            metrics.finished(function, refusal.status, time.monotonic() - started)
        return refusal
