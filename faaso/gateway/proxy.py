"""The reverse proxy: one request in, one request to a function instance out, bodies streamed.

The proxy knows nothing of Docker. It resolves the path with the current route table, asks
:mod:`faaso.gateway.admission` (shared with the fast path) for an instance, rewrites headers
with :mod:`faaso.gateway.headers` and forwards the request over a shared, keep-alive connection
pool. Request and response bodies are streamed both ways (a 50 MiB upload
is never held in memory); small responses with a known length take a shorter path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from faaso.gateway.admission import Admission, Lease, Refusal
from faaso.gateway.headers import (
    call_id_of,
    connection_tokens,
    downstream_fields,
    raw_fields,
    upstream_fields,
)
from faaso.gateway.messages import (
    CALL_ID,
    CLIENT_GONE,
    COLD_START,
    INTERNAL_HEADER,
    START_TIME,
    error_body,
    log_proxy_error,
    msg_cannot_connect,
    msg_closed,
    msg_malformed,
    msg_not_routed,
    msg_timed_out,
)
from faaso.gateway.policy import SMALL_BODY
from faaso.spec.routing import Match, RouteTable

CHUNK = 64 * 1024
# The client side of aiohttp makes its own handshake: these are not copied from the client's.
WS_HANDSHAKE = (
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Extensions",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Accept",
)


def json_error(
    status: int, message: str, function: str | None, call_id: str | None, **extra: str
) -> web.Response:
    """A proxy-made error: JSON body, marked so clients can tell it from the function's own;
    a 5xx is logged with its call id."""
    log_proxy_error(status, message, function, call_id)
    headers = {INTERNAL_HEADER: "proxy"}
    if call_id is not None:
        headers[CALL_ID] = call_id
    return web.Response(
        body=error_body(message, function, **extra),
        status=status,
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def _text(value: bytes) -> str:
    # As aiohttp's server decodes header bytes, so its client writes them back the same.
    return value.decode("utf-8", "surrogateescape")


def _multidict(pairs: list[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    return CIMultiDict((_text(name), _text(value.strip(b" \t"))) for name, value in pairs)


def upstream_headers(request: web.Request) -> CIMultiDict[str]:
    """The request's headers as a function gets them (hop-by-hop out, ``X-Forwarded-*`` in),
    without the per-call ``X-Call-Id`` and ``X-Start-Time``: what an asynchronous job stores
    (its worker adds those when it runs the job)."""
    fields = raw_fields(request.raw_headers)
    _, _, pairs = upstream_fields(
        fields, connection_tokens(fields), (request.remote or "").encode(), request.scheme.encode()
    )
    headers = _multidict(pairs)
    headers.popall(CALL_ID, None)
    headers.popall(START_TIME, None)
    return headers


class Proxy:
    """Forwards requests to function instances, admitted by the shared :class:`Admission`.

    ``routes`` is a callable so that a reload can swap what it returns without the proxy
    holding a stale copy.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        admission: Admission,
        routes: Callable[[], RouteTable],
    ) -> None:
        self._session = session
        self._admission = admission
        self._routes = routes

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw_path, _, query = request.raw_path.partition("?")
        match = self._routes().resolve(raw_path)
        if match is None:
            return json_error(404, msg_not_routed(request.path), None, None, path=request.path)
        return await self.forward(request, match, query)

    async def forward(
        self, request: web.Request, match: Match, raw_query: str = ""
    ) -> web.StreamResponse:
        fields = raw_fields(request.raw_headers)
        decided = await self._admission.admit(match.function)
        if isinstance(decided, Refusal):
            response: web.StreamResponse = json_error(
                decided.status, decided.message, decided.function, call_id_of(fields)
            )
            if decided.retry_after is not None:
                response.headers["Retry-After"] = decided.retry_after
            return response
        lease = decided
        status = 500
        try:
            response = await self._forward(request, lease, match, raw_query, fields)
            status = response.status
            return response
        except asyncio.CancelledError:
            status = CLIENT_GONE  # the client left; the handler was cancelled
            raise
        finally:
            lease.finish(status)

    async def _forward(
        self,
        request: web.Request,
        lease: Lease,
        match: Match,
        raw_query: str,
        fields: list[tuple[bytes, bytes, bytes]],
    ) -> web.StreamResponse:
        function = match.function
        peer = (request.remote or "").encode()
        call_id, start, pairs = upstream_fields(
            fields, connection_tokens(fields), peer, request.scheme.encode()
        )
        headers = _multidict(pairs)
        target = match.path + ("?" + raw_query if raw_query else "")
        if _is_websocket(request):
            url = URL(lease.member.base_url + target, encoded=True)
            return await self._websocket(request, function, url, headers, lease.remaining())
        data = request.content if request.body_exists else None
        if request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
        timeout = aiohttp.ClientTimeout(total=max(lease.remaining(), 0.001))
        tried: set[str] = set()
        while True:
            member = lease.member
            # Still percent-encoded as the client sent it: the function sees the same bytes.
            url = URL(member.base_url + target, encoded=True)
            tried.add(member.instance_id)
            try:
                async with self._session.request(
                    request.method,
                    url,
                    headers=headers,
                    data=data,
                    allow_redirects=False,
                    timeout=timeout,
                ) as upstream:
                    response = await self._respond(
                        request, upstream, call_id, start, time.monotonic() - lease.started,
                        lease.woken,
                    )  # fmt: skip
                    return response
            except aiohttp.ClientConnectorError as exc:
                refused = exc
            except TimeoutError:
                return json_error(504, msg_timed_out(function, lease.timeout), function, call_id)
            except aiohttp.ClientResponseError as exc:
                return json_error(502, msg_malformed(function, exc.message), function, call_id)
            except (
                aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError,
                aiohttp.ClientPayloadError,
            ):
                return json_error(502, msg_closed(function), function, call_id)
            # Nothing was sent: any method may go to another instance, if there is one.
            if lease.retry_elsewhere(tried) is None:
                reason = refused.os_error.strerror or str(refused)
                return json_error(502, msg_cannot_connect(function, reason), function, call_id)

    async def _websocket(
        self,
        request: web.Request,
        function: str,
        url: URL,
        headers: CIMultiDict[str],
        budget: float,
    ) -> web.StreamResponse:
        """An upgraded connection: a websocket to the instance, relayed message by message.

        The function's timeout bounds the handshake only; the connection then lives as long as
        both ends keep it open, and counts as one request in flight (its lease) for its whole
        life.
        """
        protocols = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
        ]
        for name in WS_HANDSHAKE:
            headers.popall(name, None)
        call_id = headers[CALL_ID]
        try:
            async with asyncio.timeout(budget):
                upstream = await self._session.ws_connect(
                    url,
                    headers=headers,
                    protocols=[p for p in protocols if p],
                    max_msg_size=WS_MAX_MESSAGE,
                )
        except TimeoutError:
            message = f"function {function!r} did not accept the websocket within its timeout"
            return json_error(504, message, function, call_id)
        except aiohttp.WSServerHandshakeError as exc:
            message = f"function {function!r} refused the websocket upgrade ({exc.status})"
            return json_error(502, message, function, call_id)
        except aiohttp.ClientError as exc:
            message = f"cannot open a websocket to function {function!r}: {type(exc).__name__}"
            return json_error(502, message, function, call_id)
        async with upstream:
            downstream = web.WebSocketResponse(
                protocols=(upstream.protocol,) if upstream.protocol else (),
                max_msg_size=WS_MAX_MESSAGE,
            )
            downstream.headers[CALL_ID] = call_id
            downstream.headers[START_TIME] = headers[START_TIME]
            await downstream.prepare(request)
            await _relay_both(downstream, upstream)
        return downstream

    @staticmethod
    async def _respond(
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        call_id: str,
        start: bytes,
        duration: float,
        woken: str | None = None,
    ) -> web.StreamResponse:
        fields = raw_fields(upstream.raw_headers)
        headers = _multidict(
            downstream_fields(fields, connection_tokens(fields), call_id, start, duration)
        )
        if woken is not None:  # the request had to wake its function from zero
            headers[COLD_START] = woken
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
