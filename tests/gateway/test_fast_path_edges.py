"""Regression tests from a review of the fast path: each was written failing against a bug the
review found (smuggling through Connection tokens, back-pressure holes, deadlines, parity with
the aiohttp path) and guards its fix. Real sockets on 127.0.0.1, no mocks."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from faaso.gateway.app import GatewayState, gateway_app
from faaso.gateway.fast.relay import FAST_PATH, FastPath, FrontConnection
from faaso.spec.endpoint import Endpoint
from faaso.spec.routing import RouteTable
from tests.helpers import FastTestServer, answer_once, exchange, raw_function, read_request

Factory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def start(aiohttp_client: Any) -> Callable[..., Awaitable[Any]]:
    async def make(
        endpoints: dict[str, list[Endpoint]],
        *,
        fast: bool = True,
        timeout: float = 30.0,
        header_timeout: float = 15.0,
    ) -> Any:
        state = GatewayState(RouteTable({f"/{n}": n for n in endpoints}, set(endpoints)))
        for name, eps in endpoints.items():
            for i, ep in enumerate(eps):
                state.pools.get(name).add(f"{name}-{i}", ep)
        state.timeout_of = lambda _name: timeout
        app = gateway_app(state, header_timeout=header_timeout)
        return await aiohttp_client(FastTestServer(app) if fast else TestServer(app))

    return make


async def poll(check: Callable[[], bool], timeout: float) -> bool:
    """Poll ``check`` until it holds or the deadline passes; whether it held."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)  # poll with a deadline
    return True


def fast_of(client: Any) -> FastPath:
    fast: FastPath = client.server.app[FAST_PATH]
    return fast


async def slow_reader(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client connection with a tiny receive window that does not read until told to."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock, limit=1024)


def small_send_buffer(front: FrontConnection) -> None:
    """The proxy's socket to that client: a fixed, small kernel send buffer (no autotuning),
    so that the proxy has to buffer after a few KiB."""
    assert front.transport is not None
    front.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


# -- 1. request smuggling: a client-named Connection token strips Content-Length ----------------


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


# -- 2. a function's Connection token strips its response's Content-Length ----------------------


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


# -- 3. the keep-alive deadline is not re-armed after the proxy's own error replies ------------


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
async def test_keepalive_deadline_restarts_after_a_404(start: Any, fast: bool) -> None:
    """header_timeout is 'within 15 s of opening or of its previous response': a client that
    gets a 404 every 0.4 s must not be cut off at header_timeout after opening."""
    client = await start({"f": []}, fast=fast, header_timeout=1.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        began = time.monotonic()
        while time.monotonic() - began < 2.0:
            writer.write(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            assert head.startswith(b"HTTP/1.1 404"), (time.monotonic() - began, head)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            try:
                data = await asyncio.wait_for(reader.read(1), 0.4)
            except TimeoutError:
                continue  # quiet, and still open
            pytest.fail(f"closed {time.monotonic() - began:.2f} s after opening: {data!r}")
    finally:
        writer.close()


# -- 4. pipelined error replies ignore back-pressure: unbounded buffering -----------------------


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


# -- 5. a pooled upstream connection left paused -------------------------------------------------


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


# -- 6. a connection handed to aiohttp while the fast path had paused writing ------------------


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


# -- 7. trailer lines are relayed unchecked --------------------------------------------------


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


# -- 8. the fast path's 404 is not the aiohttp path's 404 ----------------------------------------


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
async def test_404_body_is_the_same_both_ways(start: Any, fast: bool) -> None:
    client = await start({"f": []}, fast=fast)
    resp = await client.get("/nowhere")
    assert resp.status == 404
    assert await resp.json() == {"error": "no function is routed at /nowhere", "path": "/nowhere"}


# -- 9. a request without Host reaches the function without Host -------------------------------


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


# -- 10. percent-encoded paths of the app's own routes -----------------------------------------


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
async def test_encoded_reserved_path_served_the_same_way(start: Any, fast: bool) -> None:
    """aiohttp routes /healthz, /metrics, /system on the decoded path; the fast path checks
    the raw path against them, so /%68ealthz is 200 with aiohttp and the proxy's 404 (or a
    function's answer under a '/' route) on the fast path."""
    client = await start({"f": []}, fast=fast)
    data = await exchange(client.port, b"GET /%68ealthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200"), data[:200]


# -- second review: coarse deadlines ---------------------------------------------------------


def tickers(fast: FastPath) -> int:
    """How many Deadlines._tick timers the loop has pending (there should be at most one)."""
    loop: Any = asyncio.get_running_loop()
    return sum(
        1
        for handle in loop._scheduled
        if not handle.cancelled() and handle._callback == fast.deadlines._tick
    )


async def test_deadlines_keep_a_single_ticker(start: Any) -> None:
    """A connection that re-registers from inside a tick (its slot came but its deadline had
    moved on, or its exchange timed out and the idle deadline was armed) makes ``watch``
    schedule a tick, since ``_tick`` cleared ``_handle``; ``_tick`` then schedules its own and
    overwrites the handle. Each such tick adds one more 20 Hz timer chain for as long as any
    deadline is pending: under steady keep-alive traffic they never stop multiplying."""
    client = await start({"f": []}, header_timeout=0.2)
    fast = fast_of(client)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    most = 0
    try:
        began = time.monotonic()
        while time.monotonic() - began < 1.5:
            # A 404 restarts the idle deadline: later than the slot already registered.
            writer.write(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            await poll(lambda: False, 0.1)  # a pause shorter than header_timeout
            most = max(most, tickers(fast))
    finally:
        writer.close()
    assert most <= 1, f"{most} Deadlines tick timers pending at once"


@pytest.mark.parametrize("how", ["closed", "handed-off"])
async def test_gone_connection_not_held_by_deadlines(
    start: Any, aiohttp_server: Factory, how: str
) -> None:
    """A closed (or handed-off) connection stays in its Deadlines slot until its deadline
    comes: the FrontConnection, its transport and whatever it had buffered are held for up
    to header_timeout (or the function's timeout) after the client left. The loop timers it
    replaced were cancelled, and so released, at once."""
    client = await start({"f": []}, header_timeout=15.0)
    fast = fast_of(client)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    assert await poll(lambda: bool(fast.connections), 2)
    ref = weakref.ref(next(iter(fast.connections)))
    if how == "closed":
        writer.write(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\nGET /x HTTP/1.1\r\n")
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()
    else:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await reader.read()  # aiohttp answered and closed
        writer.close()
    assert await poll(lambda: not fast.connections, 2)
    await poll(lambda: False, 0.2)  # let the transports finish closing
    gc.collect()
    holders = [s for s, bucket in fast.deadlines._slots.items() if ref() in bucket]
    assert ref() is None, f"connection still held by Deadlines slots {holders}"
