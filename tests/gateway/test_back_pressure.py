"""A client that does not read its answers is never buffered for without bound, on the fast
path or after its connection was handed to aiohttp, and back-pressure never outlives the
exchange it was for. Real sockets with small kernel buffers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from faaso.gateway.fast.relay import FrontConnection
from faaso.spec.endpoint import Endpoint
from tests.helpers import (
    fast_of,
    poll,
    raw_function,
    read_request,
    slow_reader,
    small_send_buffer,
)

Factory = Callable[..., Awaitable[TestServer]]


async def test_pipelined_404s_respect_back_pressure(start: Any) -> None:
    """A client that pipelines requests to unknown paths and never reads must not make the
    proxy buffer the answers without bound (~9 bytes out for every byte in)."""
    client = await start({"f": []})
    fast = fast_of(client)
    reader, writer = await slow_reader(client.port)
    assert await poll(lambda: bool(fast.connections), 2)
    front = next(iter(fast.connections))
    transport = front.transport
    assert transport is not None
    try:
        writer.write(b"GET /x HTTP/1.1\r\n\r\n" * 100_000)  # 1.9 MB of requests
        grew = await poll(lambda: transport.get_write_buffer_size() > 1024 * 1024, 3)
        assert not grew, f"{transport.get_write_buffer_size()} bytes of 404s buffered"
    finally:
        writer.transport.abort()


async def test_upstream_connection_released_while_paused(start: Any) -> None:
    """When the last bytes of a response both complete it and fill the client's buffer, the
    upstream connection is paused (back-pressure) and then returned to the pool still paused:
    the next request on it never sees its answer (504)."""
    front_box: list[FrontConnection] = []
    final_sent = asyncio.Event()

    def front_buffered() -> int:
        if not front_box or front_box[0].transport is None:
            return 0
        return front_box[0].transport.get_write_buffer_size()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                request = await read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if not request.startswith(b"GET /big "):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
                continue
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            piece = b"x" * 4096
            deadline = time.monotonic() + 10
            # Fill the client's socket until the proxy has to buffer (but is not paused yet).
            while front_buffered() == 0 and time.monotonic() < deadline:
                writer.write(b"1000\r\n" + piece + b"\r\n")
                await writer.drain()
                await poll(lambda: front_buffered() > 0, 0.01)
            last = b"y" * 100_000  # one read, past the 64 KiB high-water mark
            writer.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(last), last))
            await writer.drain()
            final_sent.set()

    server, endpoint = await raw_function(answer)
    async with server:
        client = await start({"f": [endpoint]}, timeout=2.0)
        fast = fast_of(client)
        reader, writer = await slow_reader(client.port)
        assert await poll(lambda: bool(fast.connections), 2)
        front_box.append(next(iter(fast.connections)))
        small_send_buffer(front_box[0])
        writer.write(b"GET /f/big HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await poll(final_sent.is_set, 10), "the function did not get to its last chunk"
        assert await poll(lambda: fast.pools.get("f").inflight() == 0, 10), "not relayed"
        paused = [c for conns in fast.upstreams._idle.values() for c in conns if c._paused]
        writer.transport.abort()
        # The next request takes the most recently pooled connection.
        resp = await client.get("/f/next")
        assert resp.status == 200, (resp.status, await resp.text(), len(paused))


async def test_handoff_while_writing_paused_keeps_back_pressure(
    start: Any, aiohttp_server: Factory
) -> None:
    """A fast exchange whose last write passes the client's high-water mark ends with the
    transport paused; the next pipelined request is handed to aiohttp, which was never told
    (pause_writing went to the fast path's protocol), so it writes without back-pressure and
    a large response is buffered whole for a client that does not read."""
    done = asyncio.Event()

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"y" * 100_000)

    async def stream(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b"z" * 65536
        for _ in range(256):  # 16 MiB
            await response.write(chunk)
        await response.write_eof()
        done.set()
        return response

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_post("/stream", stream)
    backend = await aiohttp_server(app)
    assert backend.port is not None
    client = await start({"f": [Endpoint("127.0.0.1", backend.port)]}, timeout=30.0)
    fast = fast_of(client)
    reader, writer = await slow_reader(client.port)
    assert await poll(lambda: bool(fast.connections), 2)
    front = next(iter(fast.connections))
    small_send_buffer(front)
    transport = front.transport
    assert transport is not None
    try:
        body = b"b" * 70_000  # over 64 KiB: handed to aiohttp
        writer.write(
            b"GET /f/big HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /f/stream HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b"
            % (len(body), body)
        )
        await poll(done.is_set, 5)
        buffered = transport.get_write_buffer_size()
        assert buffered < 4 * 1024 * 1024, f"{buffered} bytes buffered for one client"
    finally:
        writer.transport.abort()
