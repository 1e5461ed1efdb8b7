"""The fast path's own cases: what it relays itself, what it hands to aiohttp, and functions
that answer in unusual but legal (or broken) ways. Real sockets on 127.0.0.1 throughout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from faaso.gateway.app import STATE, GatewayState, gateway_app
from faaso.server.serve import ServerOptions, serve
from faaso.spec.endpoint import Endpoint
from faaso.spec.routing import RouteTable
from tests.helpers import (
    answer_once,
    eventually,
    exchange,
    free_port,
    port_of,
    raw_function,
    read_request,
)

Factory = Callable[..., Awaitable[TestServer]]

# -- a gateway in front of scripted functions -------------------------------------------------


async def test_pipelined_requests_answered_in_order(start: Any, aiohttp_server: Factory) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=request.path + ":" + (await request.text()))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    backend = await aiohttp_server(app)
    client = await start({"f": [Endpoint("127.0.0.1", port_of(backend))]})
    raw = (
        b"GET /f/one HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /f/two HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
        b"GET /f/three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    data = await exchange(client.port, raw, 3)
    bodies = [part.split(b"\r\n\r\n", 1)[1][:20] for part in data.split(b"HTTP/1.1 ")[1:]]
    assert [b.split(b"HTTP")[0] for b in bodies] == [b"/one:", b"/two:body", b"/three:"]


async def test_close_delimited_response_is_rechunked(start: Any) -> None:
    """A function that ends its body by closing (no length): the client gets it all, chunked,
    and the connection to the client stays usable."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await writer.drain()
        writer.write(b"part two")

    server, endpoint = await raw_function(answer)
    async with server:
        client = await start({"f": [endpoint]})
        for _ in range(2):  # same client connection twice
            resp = await client.get("/f/x")
            assert resp.status == 200
            assert resp.headers["Transfer-Encoding"] == "chunked"
            assert await resp.text() == "part one, part two"


@pytest.mark.parametrize("status", [204, 304])
async def test_bodiless_statuses_keep_the_connection(start: Any, status: int) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            if b"/again" in request:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            else:
                writer.write(f'HTTP/1.1 {status} X\r\nETag: "a"\r\n\r\n'.encode())
            await writer.drain()

    server, endpoint = await raw_function(answer)
    async with server:
        client = await start({"f": [endpoint]})
        raw = b"GET /f/x HTTP/1.1\r\nHost: x\r\n\r\nGET /f/again HTTP/1.1\r\nHost: x\r\n\r\n"
        data = await exchange(client.port, raw, 2)
        assert data.startswith(f"HTTP/1.1 {status} X\r\n".encode())
        assert data.endswith(b"\r\n\r\nok")


async def test_malformed_response_is_502(start: Any) -> None:
    server, endpoint = await raw_function(answer_once(b"SPDY/9 nonsense\r\n\r\n"))
    async with server:
        client = await start({"f": [endpoint]})
        resp = await client.get("/f/x")
        assert resp.status == 502
        assert resp.headers["X-OpenFaaS-Internal"] == "proxy"
        assert "malformed" in (await resp.json())["error"]


async def test_function_closing_mid_body_cuts_the_client(start: Any) -> None:
    server, endpoint = await raw_function(
        answer_once(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
    )
    async with server:
        client = await start({"f": [endpoint]})
        request = b"GET /f/x HTTP/1.1\r\nHost: x\r\n\r\n"
        data = await exchange(client.port, request)
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert data.endswith(b"only ten b")  # and then the connection closed: truncated


async def test_function_dropping_idle_connections(start: Any) -> None:
    """A function that closes each kept-alive connection after answering: every request still
    succeeds (a closed idle connection leaves the pool)."""
    connections = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    server, endpoint = await raw_function(answer)
    async with server:
        client = await start({"f": [endpoint]})
        for _ in range(5):
            resp = await client.get("/f/x")
            assert await resp.text() == "ok"
        assert connections == 5


async def test_handed_off_connection_keeps_working(start: Any, aiohttp_server: Factory) -> None:
    """A request the fast path leaves to aiohttp (a chunk extension) between two it relays:
    all three answered, in order, on the same client connection."""

    async def echo(request: web.Request) -> web.Response:
        return web.Response(text="got " + request.method)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    backend = await aiohttp_server(app)
    client = await start({"f": [Endpoint("127.0.0.1", port_of(backend))]})
    raw = (
        b"GET /f/a HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /f/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2;ext=1\r\nab\r\n0\r\n\r\n"
        b"GET /f/c HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    data = await exchange(client.port, raw, 3)
    assert data.count(b"HTTP/1.1 200 OK") == 3
    assert [part[-7:] for part in data.split(b"HTTP/1.1 ")[1:]] == [
        b"got GET",
        b"ot POST",
        b"got GET",
    ]


async def test_unknown_path_404_and_metrics_counted(start: Any, aiohttp_server: Factory) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    backend = await aiohttp_server(app)
    client = await start({"f": [Endpoint("127.0.0.1", port_of(backend))]})
    resp = await client.get("/nowhere")
    assert resp.status == 404
    assert resp.headers["X-OpenFaaS-Internal"] == "proxy"
    for _ in range(3):
        assert (await client.get("/f/x")).status == 200
    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_function_invocation_total{code="200",function_name="f.openfaas-fn"} 3.0' in (
        metrics
    )


async def test_shutdown_lets_a_request_in_flight_finish(aiohttp_server: Factory) -> None:
    """serve(): stop accepting, let the relayed request finish, then return."""
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        entered.set()
        await asyncio.wait_for(release.wait(), 10)
        return web.Response(text="finished")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", slow)
    backend = await aiohttp_server(app)
    state = GatewayState(RouteTable({"/f": "f"}, {"f"}))
    state.pools.get("f").add("f-0", Endpoint("127.0.0.1", port_of(backend)))
    stop = asyncio.Event()
    port = free_port()
    listening = asyncio.Event()
    server = asyncio.create_task(
        serve(
            gateway_app(state),
            ServerOptions(port=port, drain_timeout=10),
            stop=stop,
            on_listening=lambda _port: listening.set(),
        )
    )
    await asyncio.wait_for(listening.wait(), 10)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /f/slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await asyncio.wait_for(entered.wait(), 5)
    stop.set()

    async def refused() -> bool:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return True
        w.close()
        return False

    await eventually(refused, 5, "the listener to close")
    assert not server.done()
    release.set()
    answer = await asyncio.wait_for(reader.read(), 5)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close" in answer
    assert answer.endswith(b"finished")
    await asyncio.wait_for(server, 10)
    writer.close()


async def test_state_pools_in_flight_return_to_zero(start: Any) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    server, endpoint = await raw_function(answer)
    async with server:
        client = await start({"f": [endpoint]})
        results = await asyncio.gather(*(client.get(f"/f/{i}") for i in range(50)))
        assert {r.status for r in results} == {200}
        state = client.server.app[STATE]
        assert state.pools.get("f").inflight() == 0
        assert state.metrics.invocations("f") == 50


async def test_transfer_encoding_wins_over_a_stray_length(start: Any) -> None:
    """A function sending both: the client gets the chunked body and no Content-Length."""

    server, endpoint = await raw_function(
        answer_once(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        )
    )
    async with server:
        client = await start({"f": [endpoint]})
        resp = await client.get("/f/x")
        assert "Content-Length" not in resp.headers
        assert await resp.text() == "hello"


async def test_client_cannot_set_the_start_time(start: Any) -> None:
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    server, endpoint = await raw_function(answer)
    async with server:
        client = await start({"f": [endpoint]})
        resp = await client.get("/f/x", headers={"X-Start-Time": "1"})
        assert resp.status == 200
        assert seen[0].lower().count(b"x-start-time:") == 1
        assert b"X-Start-Time: 1\r\n" not in seen[0]
