"""The reverse proxy: one request in, one request to a function instance out, bodies streamed.

The proxy knows nothing of Docker. It resolves the path with the current route table, asks the
function's pool for the least busy live endpoint, and forwards the request over a shared,
keep-alive connection pool. Request and response bodies are streamed both ways (a 50 MiB upload
is never held in memory); small responses with a known length take a shorter path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from faaso.gateway.messages import (
    CALL_ID,
    CLIENT_GONE,
    COLD_START,
    DURATION,
    HOP_BY_HOP,
    RETRY_AFTER_WAKE,
    START_TIME,
    json_error,
    msg_cannot_connect,
    msg_not_ready,
    msg_not_routed,
    msg_timed_out,
    msg_too_many,
    msg_wake_timed_out,
    new_call_id,
)
from faaso.gateway.metrics import Metrics
from faaso.gateway.pools import Member, Pools
from faaso.spec.routing import Match, RouteTable

SMALL_BODY = 64 * 1024
CHUNK = 64 * 1024
# The client side of aiohttp makes its own handshake: these are not copied from the client's.
WS_HANDSHAKE = (
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Extensions",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Accept",
)


def _end_to_end(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """A copy of ``headers`` without hop-by-hop ones, nor those named in ``Connection``."""
    named = headers.get("Connection")
    drop = HOP_BY_HOP
    if named:
        drop = drop | {token.strip().lower() for token in named.split(",")}
    return CIMultiDict([(k, v) for k, v in headers.items() if k.lower() not in drop])


def upstream_headers(request: web.Request) -> CIMultiDict[str]:
    """The request's headers minus hop-by-hop ones, plus X-Forwarded-For/Host/Proto."""
    incoming = request.headers
    out = _end_to_end(incoming)
    peer = request.remote or ""
    previous = ", ".join(incoming.getall("X-Forwarded-For", ()))
    out["X-Forwarded-For"] = f"{previous}, {peer}" if previous else peer
    if "X-Forwarded-Host" not in incoming:
        host = incoming.get("Host")
        if host is not None:
            out["X-Forwarded-Host"] = host
    if "X-Forwarded-Proto" not in incoming:
        out["X-Forwarded-Proto"] = request.scheme
    return out


def downstream_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    return _end_to_end(headers)


class Proxy:
    """Forwards requests to function instances.

    ``routes`` and ``timeouts`` are callables so that a reload can swap what they return without
    the proxy holding a stale copy.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        pools: Pools,
        routes: Callable[[], RouteTable],
        timeout_of: Callable[[str], float],
        metrics: Metrics | None = None,
        max_inflight_of: Callable[[str], int | None] = lambda _name: None,
    ) -> None:
        self._max_inflight_of = max_inflight_of
        self._metrics = metrics
        self._session = session
        self._pools = pools
        self._routes = routes
        self._timeout_of = timeout_of
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw_path, _, query = request.raw_path.partition("?")
        match = self._routes().resolve(raw_path)
        if match is None:
            return json_error(404, msg_not_routed(request.path), path=request.path)
        return await self.forward(request, match, query)

    async def forward(
        self, request: web.Request, match: Match, raw_query: str = ""
    ) -> web.StreamResponse:
        metrics = self._metrics
        if metrics is None:
            return await self._forward(request, match, raw_query)
        started = time.monotonic()
        metrics.started(match.function)
        status = 500
        try:
            response = await self._forward(request, match, raw_query)
            status = response.status
            return response
        except asyncio.CancelledError:
            status = CLIENT_GONE  # the client left; the handler was cancelled
            raise
        finally:
            metrics.finished(match.function, status, time.monotonic() - started)

    async def _forward(
        self, request: web.Request, match: Match, raw_query: str
    ) -> web.StreamResponse:
        started = time.monotonic()
        pool = self._pools.get(match.function)
        budget = self._timeout_of(match.function)
        limit = self._max_inflight_of(match.function)
        if limit is not None and pool.inflight() >= limit:
            return json_error(
                429,
                msg_too_many(match.function, limit),
                function=match.function,
            )
        member = pool.pick()
        woken: str | None = None  # scaling: how this request's function was woken, if it was
        if member is None and pool.holding:
            # Its instance died and a replacement is on its way, or it is at zero and this
            # request wakes it (scaling): hold, within the timeout.
            member, woken = await pool.hold(budget)
            budget -= time.monotonic() - started
        if member is None or budget <= 0:
            if woken is not None:  # scaling: the wake did not finish in time
                response = json_error(
                    503, msg_wake_timed_out(match.function, woken), function=match.function
                )
                response.headers["Retry-After"] = RETRY_AFTER_WAKE
                return response
            return json_error(503, msg_not_ready(match.function), function=match.function)
        headers = upstream_headers(request)
        call_id = headers.get(CALL_ID) or new_call_id()
        headers[CALL_ID] = call_id
        headers[START_TIME] = str(time.time_ns())
        if _is_websocket(request):
            url = URL(
                member.base_url + match.path + ("?" + raw_query if raw_query else ""), encoded=True
            )
            return await self._websocket(request, match.function, member, url, headers, budget)
        data = request.content if request.body_exists else None
        timeout = self._timeouts.get(budget)
        if timeout is None:
            if len(self._timeouts) > 1024:  # budgets cut by a wait are all different
                self._timeouts.clear()
            timeout = self._timeouts[budget] = aiohttp.ClientTimeout(total=budget)
        tried: set[str] = set()
        while True:
            # Still percent-encoded as the client sent it: the function sees the same bytes.
            url = URL(
                member.base_url + match.path + ("?" + raw_query if raw_query else ""), encoded=True
            )
            tried.add(member.instance_id)
            member.inflight += 1
            try:
                async with self._session.request(
                    request.method,
                    url,
                    headers=headers,
                    data=data,
                    allow_redirects=False,
                    timeout=timeout,
                ) as upstream:
                    extra = {CALL_ID: call_id, DURATION: f"{time.monotonic() - started:.6f}"}
                    if woken is not None:  # scaling
                        extra[COLD_START] = woken
                    return await self._respond(request, upstream, extra)
            except aiohttp.ClientConnectorError as exc:
                refused = exc
            except TimeoutError:
                return json_error(
                    504,
                    msg_timed_out(match.function),
                    function=match.function,
                )
            except (
                aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError,
                aiohttp.ClientPayloadError,
            ) as exc:
                return json_error(
                    502,
                    f"function {match.function!r} closed the connection: {exc.__class__.__name__}",
                    function=match.function,
                )
            finally:
                member.inflight -= 1
            # Nothing was sent: any method may go to another instance, if there is one.
            other = pool.pick_other(tried)
            if other is None:
                reason = refused.os_error.strerror or str(refused)
                return json_error(
                    502,
                    msg_cannot_connect(match.function, reason),
                    function=match.function,
                )
            member = other

    async def _websocket(
        self,
        request: web.Request,
        function: str,
        member: Member,
        url: URL,
        headers: CIMultiDict[str],
        budget: float,
    ) -> web.StreamResponse:
        """An upgraded connection: a websocket to the instance, relayed message by message.

        The function's timeout bounds the handshake only; the connection then lives as long as
        both ends keep it open, and counts as one request in flight for its whole life.
        """
        protocols = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
        ]
        for name in WS_HANDSHAKE:
            headers.popall(name, None)
        member.inflight += 1
        try:
            try:
                async with asyncio.timeout(budget):
                    upstream = await self._session.ws_connect(
                        url,
                        headers=headers,
                        protocols=[p for p in protocols if p],
                        max_msg_size=WS_MAX_MESSAGE,
                    )
            except TimeoutError:
                return json_error(
                    504,
                    f"function {function!r} did not accept the websocket within its timeout",
                    function=function,
                )
            except aiohttp.WSServerHandshakeError as exc:
                return json_error(
                    502,
                    f"function {function!r} refused the websocket upgrade ({exc.status})",
                    function=function,
                )
            except aiohttp.ClientError as exc:
                return json_error(
                    502,
                    f"cannot open a websocket to function {function!r}: {exc.__class__.__name__}",
                    function=function,
                )
            async with upstream:
                downstream = web.WebSocketResponse(
                    protocols=(upstream.protocol,) if upstream.protocol else (),
                    max_msg_size=WS_MAX_MESSAGE,
                )
                downstream.headers[CALL_ID] = headers[CALL_ID]
                await downstream.prepare(request)
                await _relay_both(downstream, upstream)
            return downstream
        finally:
            member.inflight -= 1

    @staticmethod
    async def _respond(
        request: web.Request, upstream: aiohttp.ClientResponse, extra: dict[str, str]
    ) -> web.StreamResponse:
        headers = downstream_headers(upstream.headers)
        headers.update(extra)
        length = upstream.content_length
        if length is not None and length <= SMALL_BODY:
            body = await upstream.read()
            return web.Response(
                status=upstream.status, reason=upstream.reason, headers=headers, body=body
            )
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=headers
        )
        if length is not None:
            response.content_length = length
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, TimeoutError):
            # Headers are sent: the only honest thing left is to cut the connection.
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        return response


WS_MAX_MESSAGE = 16 * 2**20

_WS = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


def _is_websocket(request: web.Request) -> bool:
    upgrade = request.headers.get("Upgrade")
    return upgrade is not None and upgrade.lower() == "websocket" and request.method == "GET"


async def _relay(source: _WS, sink: _WS) -> None:
    """Copies messages from ``source`` to ``sink`` until ``source`` closes, then closes ``sink``
    with the same code."""
    async for message in source:
        if message.type is aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type is aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        elif message.type is aiohttp.WSMsgType.ERROR:
            break
    await sink.close(code=source.close_code or aiohttp.WSCloseCode.OK)


async def _relay_both(
    client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse
) -> None:
    """Both directions at once; when either side closes, the other is closed with its code."""
    tasks = (
        asyncio.create_task(_relay(client, upstream)),
        asyncio.create_task(_relay(upstream, client)),
    )
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
