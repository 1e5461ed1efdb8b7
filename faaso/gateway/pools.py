"""Pools of live endpoints, one per function: what the proxy asks for a place to send a request.

Members are added by the function's controller only once healthy, and removed at once when they
die or are drained. ``pick()`` returns the member with the fewest requests in flight. While a
function is expected back (its only instance died and a replacement is starting), the pool is
``holding``: the proxy waits for a member instead of failing at once.

Scale from zero: the control plane injects a ``wake`` callable into each pool (the gateway never
imports the control plane). A request that finds no member calls :meth:`FunctionPool.hold`,
which calls ``wake()`` (starting, or joining, the one start of a function at zero) and then
waits for the pool's "not empty" event, within the request's budget.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from faaso.spec.endpoint import Endpoint


@dataclass(slots=True, eq=False)
class Member:
    instance_id: str
    endpoint: Endpoint
    base_url: str = field(init=False)
    inflight: int = 0

    def __post_init__(self) -> None:
        self.base_url = self.endpoint.base_url


class FunctionPool:
    """The live endpoints of one function."""

    __slots__ = ("_changed", "_holding", "_members", "name", "waiting", "wake")

    def __init__(self, name: str) -> None:
        self.name = name
        self._members: dict[str, Member] = {}
        # Set, and replaced by a fresh one, whenever a member joins or holding changes: what a
        # held request waits on.
        self._changed = asyncio.Event()
        self._holding = False
        self.waiting = 0  # requests held right now, waiting for a member
        # Set by the control plane: wakes the function if it is at zero; returns how
        # ("paused" or "cold"), or None when it is not at zero.
        self.wake: Callable[[], str | None] | None = None

    @property
    def holding(self) -> bool:
        """The function is expected back: a request waits for a member instead of a 503."""
        return self._holding

    @holding.setter
    def holding(self, value: bool) -> None:
        if value != self._holding:
            self._holding = value
            self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def add(self, instance_id: str, endpoint: Endpoint) -> Member:
        member = Member(instance_id, endpoint)
        self._members[instance_id] = member
        self._notify()
        return member

    def remove(self, instance_id: str) -> Member | None:
        return self._members.pop(instance_id, None)

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._members

    def inflight(self) -> int:
        """Requests in flight to this function, over all its members."""
        return sum(m.inflight for m in self._members.values())

    def members(self) -> list[Member]:
        return list(self._members.values())

    def pick(self) -> Member | None:
        """The member with the fewest requests in flight, or None when the pool is empty."""
        best: Member | None = None
        for member in self._members.values():
            if best is None or member.inflight < best.inflight:
                best = member
                if member.inflight == 0:
                    break
        return best

    def pick_other(self, tried: set[str]) -> Member | None:
        """The least busy member not in ``tried`` (a retry after a refused connection)."""
        best: Member | None = None
        for member in self._members.values():
            if member.instance_id in tried:
                continue
            if best is None or member.inflight < best.inflight:
                best = member
        return best

    async def wait_member(self, timeout: float) -> Member | None:
        """Wait up to ``timeout`` seconds for a member while ``holding``; None at once when
        holding ends without one (the function was scaled down or removed meanwhile)."""
        deadline = time.monotonic() + timeout
        while self._holding:
            member = self.pick()
            if member is not None:
                return member
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            changed = self._changed
            self.waiting += 1
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                return None
            finally:
                self.waiting -= 1
        return self.pick()

    async def hold(self, timeout: float) -> tuple[Member | None, str | None]:
        """For a request that found no member: wake the function if it is at zero, then wait
        (while ``holding``) up to ``timeout`` seconds. Returns the member (or None) and how the
        function was woken (None when it did not have to be)."""
        woken = self.wake() if self.wake is not None else None
        return await self.wait_member(timeout), woken


async def drain(member: Member, timeout: float) -> bool:
    """Wait until a member (already out of its pool) has no request in flight."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while member.inflight > 0:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(delay)  # poll with a deadline
        delay = min(delay * 2, 0.1)
    return True


class Pools:
    """Every function's pool, created on first use."""

    def __init__(self) -> None:
        self._pools: dict[str, FunctionPool] = {}

    def get(self, name: str) -> FunctionPool:
        pool = self._pools.get(name)
        if pool is None:
            pool = self._pools[name] = FunctionPool(name)
        return pool

    def drop(self, name: str) -> None:
        pool = self._pools.pop(name, None)
        if pool is not None:
            pool.holding = False  # requests held for it are answered now, not at their timeout
