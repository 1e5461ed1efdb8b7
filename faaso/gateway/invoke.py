"""A programmatic invocation through the data plane: what the asynchronous workers call.

The same :class:`~faaso.gateway.admission.Admission` as a proxied request: the function's pool
picks the member with the fewest requests in flight (held while the pool is ``holding``, a
function at zero woken), ``max_inflight`` answers 429, the lease counts the call in flight and
in the gateway's metrics, a refused connection goes to another member. The answer is read whole
(a job's response is stored, not streamed).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from faaso.gateway.admission import Admission, Lease, Refusal
from faaso.gateway.messages import (
    CALL_ID,
    HOP_BY_HOP,
    START_TIME,
    msg_cannot_connect,
    msg_closed,
    msg_timed_out,
)

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
    """Invokes functions through the gateway's admission with its own keep-alive session."""

    def __init__(self, session: aiohttp.ClientSession, admission: Admission) -> None:
        self._session = session
        self._admission = admission

    def ready(self, function: str) -> bool:
        """Whether the function has a live member (or one is on its way)."""
        pool = self._admission.pools.get(function)
        return len(pool) > 0 or pool.holding

    def wake(self, function: str) -> bool:
        """Start a function that is at zero (its pool's ``wake``, set by the control plane).
        True when a start was begun or joined."""
        wake = self._admission.pools.get(function).wake
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
        """One call; ``timeout`` bounds it on top of the function's own timeout."""
        started = time.monotonic()
        decided = await self._admission.admit(function)
        if isinstance(decided, Refusal):
            return Invocation(decided.status, (), b"", time.monotonic() - started, decided.message)
        lease = decided
        result = Invocation(500, (), b"", 0.0, "faaso failed the call")
        try:
            result = await self._call(lease, method, path, query, headers, body, timeout, call_id)
            return result
        finally:
            lease.finish(result.status)

    async def _call(
        self,
        lease: Lease,
        method: str,
        path: str,
        query: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        timeout: float,
        call_id: str,
    ) -> Invocation:
        function = lease.function

        def internal(status: int, why: str) -> Invocation:
            return Invocation(status, (), b"", time.monotonic() - lease.started, why)

        budget = min(timeout, lease.remaining())
        if budget <= 0:
            return internal(504, msg_timed_out(function, lease.timeout))
        out = _strip(headers)
        out[CALL_ID] = call_id
        out[START_TIME] = str(time.time_ns())
        client_timeout = aiohttp.ClientTimeout(total=budget)
        tried: set[str] = set()
        while True:
            member = lease.member
            url = URL(member.base_url + path + ("?" + query if query else ""), encoded=True)
            tried.add(member.instance_id)
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
                    duration = time.monotonic() - lease.started
                    return Invocation(upstream.status, kept, data, duration)
            except aiohttp.ClientConnectorError as exc:
                refused = exc
            except TimeoutError:
                return internal(504, msg_timed_out(function, lease.timeout))
            except (
                aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError,
                aiohttp.ClientPayloadError,
            ):
                return internal(502, msg_closed(function))
            # Nothing was sent: any method may go to another instance, if there is one.
            if lease.retry_elsewhere(tried) is None:
                return internal(
                    502, msg_cannot_connect(function, refused.os_error.strerror or str(refused))
                )
