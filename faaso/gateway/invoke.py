"""A programmatic invocation through the data plane: what the asynchronous workers call.

Same admission as a proxied request: the function's pool picks the member with the fewest
requests in flight (held while the pool is ``holding``), ``max_inflight`` answers 429, the
member's in-flight count and the gateway's metrics see the call, a refused connection goes to
another member. The answer is read whole (a job's response is stored, not streamed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from faaso.gateway.messages import (
    CALL_ID,
    HOP_BY_HOP,
    START_TIME,
    msg_cannot_connect,
    msg_not_ready,
    msg_timed_out,
    msg_too_many,
)
from faaso.gateway.metrics import Metrics
from faaso.gateway.pools import Pools

MAX_RESPONSE = 16 * 2**20  # a stored response larger than this is cut and the job failed


@dataclass(frozen=True, slots=True)
class Invocation:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    duration: float
    internal: str | None = None  # set when faaso answered for the function (why)


def _strip(headers: Sequence[tuple[str, str]]) -> CIMultiDict[str]:
    named = {
        t.strip().lower() for k, v in headers if k.lower() == "connection" for t in v.split(",")
    }
    drop = HOP_BY_HOP | named | {"content-length", "host"}
    return CIMultiDict([(k, v) for k, v in headers if k.lower() not in drop])


class Invoker:
    """Invokes functions through the gateway's pools with its own keep-alive client session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        pools: Pools,
        metrics: Metrics | None = None,
        max_inflight_of: Callable[[str], int | None] = lambda _name: None,
    ) -> None:
        self._session = session
        self._pools = pools
        self._metrics = metrics
        self._max_inflight_of = max_inflight_of

    def ready(self, function: str) -> bool:
        """Whether the function has a live member (or one is on its way)."""
        pool = self._pools.get(function)
        return len(pool) > 0 or pool.holding

    def wake(self, function: str) -> bool:
        """Start a function that is at zero (its pool's ``wake``, set by the control plane).
        True when a start was begun or joined."""
        wake = self._pools.get(function).wake
        return wake is not None and wake() is not None

    async def invoke(
        self,
        function: str,
        method: str,
        path: str,
        query: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        timeout: float,
        call_id: str,
    ) -> Invocation:
        started = time.monotonic()
        metrics = self._metrics
        if metrics is not None:
            metrics.started(function)
        result = Invocation(500, (), b"", 0.0, "faaso failed the call")
        try:
            result = await self._invoke(
                function, method, path, query, headers, body, timeout, call_id, started
            )
            return result
        finally:
            if metrics is not None:
                metrics.finished(function, result.status, time.monotonic() - started)

    async def _invoke(
        self,
        function: str,
        method: str,
        path: str,
        query: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        timeout: float,
        call_id: str,
        started: float,
    ) -> Invocation:
        def internal(status: int, why: str) -> Invocation:
            return Invocation(status, (), b"", time.monotonic() - started, why)

        pool = self._pools.get(function)
        limit = self._max_inflight_of(function)
        if limit is not None and pool.inflight() >= limit:
            return internal(429, msg_too_many(function, limit))
        budget = timeout
        member = pool.pick()
        if member is None and pool.holding:
            member = await pool.wait_member(budget)
            budget -= time.monotonic() - started
        if member is None or budget <= 0:
            return internal(503, msg_not_ready(function))
        out = _strip(headers)
        out[CALL_ID] = call_id
        out[START_TIME] = str(time.time_ns())
        client_timeout = aiohttp.ClientTimeout(total=budget)
        tried: set[str] = set()
        while True:
            url = URL(member.base_url + path + ("?" + query if query else ""), encoded=True)
            tried.add(member.instance_id)
            member.inflight += 1
            try:
                async with self._session.request(
                    method,
                    url,
                    headers=out,
                    data=body if body or method not in ("GET", "HEAD") else None,
                    allow_redirects=False,
                    timeout=client_timeout,
                ) as upstream:
                    data = await upstream.content.read(MAX_RESPONSE + 1)
                    if len(data) > MAX_RESPONSE:
                        return internal(502, f"function {function!r} answered over 16 MiB")
                    kept = tuple(
                        (k, v)
                        for k, v in upstream.headers.items()
                        if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"
                    )
                    return Invocation(upstream.status, kept, data, time.monotonic() - started)
            except aiohttp.ClientConnectorError as exc:
                refused = exc
            except TimeoutError:
                return internal(504, msg_timed_out(function))
            except (
                aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError,
                aiohttp.ClientPayloadError,
            ) as exc:
                return internal(
                    502, f"function {function!r} closed the connection: {exc.__class__.__name__}"
                )
            finally:
                member.inflight -= 1
            other = pool.pick_other(tried)
            if other is None:
                return internal(
                    502, msg_cannot_connect(function, refused.os_error.strerror or str(refused))
                )
            member = other
