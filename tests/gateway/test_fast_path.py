"""The fast path's own cases: what it relays itself, what it hands to aiohttp, and functions
that answer in unusual but legal (or broken) ways. Real sockets on 127.0.0.1 throughout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from faaso.gateway.app import STATE
from faaso.spec.endpoint import Endpoint
from tests.helpers import (
    answer_once,
    exchange,
    fast_of,
    port_of,
    raw_function,
    read_request,
    read_response,
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


async def test_chunked_posts_stay_on_the_fast_path(start: Any) -> None:
    """A pooled client connection sending chunked POST bodies (as the OpenFaaS gateway does)
    is relayed by the fast path request after request; the function gets each body whole,
    with its length."""
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                seen.append(await read_request(reader))
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    server, endpoint = await raw_function(answer)
    async with server:
        client = await start({"f": [endpoint]})
        fast = fast_of(client)
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        try:
            for i in range(3):
                writer.write(
                    b"POST /f/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3\r\nabc\r\n%x\r\n%b\r\n0\r\n\r\n" % (i + 1, b"d" * (i + 1))
                )
                answer_bytes = await asyncio.wait_for(read_response(reader), 10)
                assert answer_bytes.startswith(b"HTTP/1.1 200 OK\r\n")
                assert len(fast.connections) == 1  # still the fast path's (not handed off)
        finally:
            writer.close()
        assert [r.split(b"\r\n\r\n", 1)[1] for r in seen] == [b"abcd", b"abcdd", b"abcddd"]
        for request in seen:
            lowered = request.lower()
            assert b"transfer-encoding" not in lowered
            assert b"content-length: " in lowered


async def test_head_stays_on_the_fast_path(start: Any, aiohttp_server: Factory) -> None:
    """HEAD is relayed by the fast path: the answer has the GET's length and no body, and the
    connection goes on with the next request."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello " + request.method)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hello)
    backend = await aiohttp_server(app)
    client = await start({"f": [Endpoint("127.0.0.1", port_of(backend))]})
    fast = fast_of(client)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(b"HEAD /f/a HTTP/1.1\r\nHost: x\r\n\r\n")
        head_answer = await asyncio.wait_for(read_response(reader, to_head=True), 10)
        assert head_answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Content-Length: 10\r\n" in head_answer
        assert head_answer.endswith(b"\r\n\r\n")
        assert len(fast.connections) == 1
        writer.write(b"GET /f/b HTTP/1.1\r\nHost: x\r\n\r\n")
        get_answer = await asyncio.wait_for(read_response(reader), 10)
        assert get_answer.endswith(b"\r\n\r\nhello GET")
        assert len(fast.connections) == 1
    finally:
        writer.close()
