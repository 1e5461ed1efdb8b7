"""Whatever a client or a function sends, each message the proxy relays keeps its own framing
and its one Host: a request body is never read as a second request, a response never runs into
the next one, and nothing that a head would refuse reaches the client in a trailer. Both
front-ends, real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from faaso.spec.endpoint import Endpoint
from tests.helpers import (
    answer_once,
    exchange,
    poll,
    raw_function,
    read_request,
)

Factory = Callable[..., Awaitable[TestServer]]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
async def test_connection_token_cannot_strip_request_content_length(
    start: Any, aiohttp_server: Factory, fast: bool
) -> None:
    """``Connection: Content-Length`` must not make the proxy forward a body without its
    length: the instance reads the body as a second request, smuggled past the proxy (its
    X-Forwarded-For, X-Start-Time, X-Call-Id are the attacker's), on a kept-alive connection
    the proxy shares between clients (its answer can go to someone else's request)."""
    seen: list[tuple[str, str, bytes, str | None]] = []

    async def record(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((request.method, request.path, body, request.headers.get("X-Forwarded-For")))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    backend = await aiohttp_server(app)
    assert backend.port is not None
    client = await start({"f": [Endpoint("127.0.0.1", backend.port)]}, fast=fast)
    smuggled = b"GET /admin HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
    raw = (
        b"POST /f/a HTTP/1.1\r\nHost: x\r\nConnection: Content-Length\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(smuggled), smuggled)
    )
    data = await exchange(client.port, raw)
    assert data.startswith(b"HTTP/1.1 200 OK")
    await poll(lambda: len(seen) >= 2, 1.0)
    assert [(m, p, b) for m, p, b, _ in seen] == [("POST", "/a", smuggled)], seen


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
async def test_function_connection_token_cannot_unframe_the_response(
    start: Any, fast: bool
) -> None:
    """A response relayed on a kept-alive client connection must carry its framing, whatever
    the function lists in ``Connection``; otherwise the next response is read as its body."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            writer.write(
                b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello"
            )
            await writer.drain()

    server, endpoint = await raw_function(answer)
    async with server:
        client = await start({"f": [endpoint]}, fast=fast)
        data = await exchange(client.port, b"GET /f/a HTTP/1.1\r\nHost: x\r\n\r\n")
        head = data.split(b"\r\n\r\n", 1)[0].lower()
        assert b"connection: close" not in head
        assert b"content-length: 5" in head or b"transfer-encoding: chunked" in head, head


async def test_chunked_trailers_with_bare_cr_are_not_relayed(start: Any) -> None:
    """Head fields with a bare CR are a malformed response; the same bytes in a trailer go to
    the client as they are (a response-splitting vector for clients that end lines at CR)."""

    server, endpoint = await raw_function(
        answer_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nok\r\n0\r\nX-T: a\rHTTP/1.1 200 OK\r\n\r\n"
        )
    )
    async with server:
        client = await start({"f": [endpoint]})
        data = await exchange(client.port, b"GET /f/a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"a\rHTTP" not in data


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
@pytest.mark.parametrize(
    "fields",
    [b"X-A: 1\r\n", b"Host: a\r\nHost: b\r\n", b"Host: a\r\nConnection: Host\r\n"],
    ids=["no-host", "two-hosts", "host-named-in-connection"],
)
async def test_host_is_checked_as_aiohttp_does(start: Any, fast: bool, fields: bytes) -> None:
    """aiohttp's server answers 400 to an HTTP/1.1 request without exactly one Host (RFC 9112
    3.2); the fast path's parser accepts it and relays it, with no Host (Node's http server,
    requireHostHeader on by default, then answers 400 itself) or with two."""
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()

    server, endpoint = await raw_function(answer)
    async with server:
        client = await start({"f": [endpoint]}, fast=fast)
        data = await exchange(client.port, b"GET /f/a HTTP/1.1\r\n" + fields + b"\r\n")
        if data.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")):
            return  # refused, as aiohttp does
        assert len(seen) == 1
        assert seen[0].lower().count(b"\r\nhost:") == 1, seen[0]
