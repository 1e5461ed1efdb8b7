"""The real proxy in front of real aiohttp servers on 127.0.0.1 (no Docker here)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from faaso.gateway.app import GatewayState, gateway_app
from faaso.spec.endpoint import Endpoint
from faaso.spec.routing import RouteTable
from tests.helpers import FastTestServer, eventually, server_app

Factory = Callable[..., Awaitable[TestServer]]


@pytest.fixture(params=["fast", "aiohttp"])
async def aiohttp_client(
    request: pytest.FixtureRequest, aiohttp_client: Any
) -> Callable[..., Awaitable[TestClient[Any, Any]]]:
    """Every gateway test runs twice: as ``faaso serve`` listens (the fast path first, aiohttp
    for the rest), and with aiohttp's server alone (``--no-fast-path``)."""

    async def make(app: web.Application | TestServer, **kwargs: Any) -> TestClient[Any, Any]:
        if request.param == "fast" and isinstance(app, web.Application):
            return await aiohttp_client(FastTestServer(app), **kwargs)  # type: ignore[no-any-return]
        return await aiohttp_client(app, **kwargs)  # type: ignore[no-any-return]

    return make


async def echo(request: web.Request) -> web.Response:
    """Says what it received: method, path, query, headers, body digest."""
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,
            "query": request.query_string,
            "headers": {k: v for k, v in request.headers.items()},
            "header_list": list(request.headers.items()),
            "length": len(body),
        },
        headers={
            "X-From": "backend",
            "Connection": "close, X-Hop",
            "X-Hop": "secret",
            "Keep-Alive": "timeout=5",
        },
    )


async def stream_hash(request: web.Request) -> web.Response:
    """Reads the body in chunks, never whole, and answers its size and sha256."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        digest.update(chunk)
        size += len(chunk)
    return web.json_response(
        {
            "size": size,
            "sha256": digest.hexdigest(),
            "chunked": request.headers.get("Transfer-Encoding"),
        }
    )


def backend_app(
    extra: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] | None = None,
) -> web.Application:
    app = web.Application(client_max_size=64 * 2**20)
    for path, handler in (extra or {}).items():
        app.router.add_route("*", path, handler)
    app.router.add_route("*", "/hash", stream_hash)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def start_gateway(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    routes: dict[str, str],
    endpoints: dict[str, list[Endpoint]],
    timeout: float = 30.0,
    header_timeout: float = 15.0,
) -> tuple[TestClient[Any, Any], GatewayState]:
    state = GatewayState(RouteTable(routes, set(endpoints)))
    for name, eps in endpoints.items():
        for i, ep in enumerate(eps):
            state.pools.get(name).add(f"{name}-{i}", ep)
    state.timeout_of = lambda _name: timeout
    client = await aiohttp_client(gateway_app(state, header_timeout=header_timeout))
    return client, state


def endpoint_of(server: TestServer) -> Endpoint:
    assert server.port is not None
    return Endpoint("127.0.0.1", server.port)


@pytest.fixture
async def backend(aiohttp_server: Factory) -> TestServer:
    return await aiohttp_server(backend_app())


@pytest.fixture
async def gateway(aiohttp_client: Any, backend: TestServer) -> TestClient[Any, Any]:
    client, _ = await start_gateway(
        aiohttp_client,
        {"/sum": "sum", "/api": "api"},
        {"sum": [endpoint_of(backend)], "api": [endpoint_of(backend)], "idle": []},
    )
    return client


async def test_route_subpath_and_query(gateway: TestClient[Any, Any]) -> None:
    resp = await gateway.get("/sum/a/b?x=1&y=%20z")
    assert resp.status == 200
    seen = await resp.json()
    assert seen["method"] == "GET"
    assert seen["path"] == "/a/b"
    assert seen["raw_path"] == "/a/b?x=1&y=%20z"
    resp = await gateway.get("/sum?a=2&b=3")
    assert (await resp.json())["raw_path"] == "/?a=2&b=3"


async def test_encoded_path_is_passed_as_is(gateway: TestClient[Any, Any]) -> None:
    resp = await gateway.get("/sum/a%2Fb")
    assert (await resp.json())["raw_path"] == "/a%2Fb"


async def test_openfaas_function_path(gateway: TestClient[Any, Any]) -> None:
    resp = await gateway.post("/function/sum/deep/path?q=1", data=b"abc")
    seen = await resp.json()
    assert (seen["method"], seen["path"], seen["query"], seen["length"]) == (
        "POST",
        "/deep/path",
        "q=1",
        3,
    )
    resp = await gateway.get("/function/sum.openfaas-fn")
    assert (await resp.json())["path"] == "/"


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_all_methods(gateway: TestClient[Any, Any], method: str) -> None:
    resp = await gateway.request(method, "/sum/m", data=b"x" if method != "GET" else None)
    assert resp.status == 200
    assert (await resp.json())["method"] == method


async def test_head(gateway: TestClient[Any, Any]) -> None:
    resp = await gateway.head("/sum/x")
    assert resp.status == 200
    assert await resp.read() == b""


async def test_unknown_path_is_json_404(gateway: TestClient[Any, Any]) -> None:
    for path in ("/nope", "/function/nope", "/summary"):
        resp = await gateway.get(path)
        assert resp.status == 404, path
        assert resp.headers["X-OpenFaaS-Internal"] == "proxy"
        assert "no function" in (await resp.json())["error"]


async def test_no_live_instance_is_json_503(gateway: TestClient[Any, Any]) -> None:
    resp = await gateway.get("/function/idle")
    assert resp.status == 503
    body = await resp.json()
    assert body["function"] == "idle" and "no ready instance" in body["error"]
    assert resp.headers["X-OpenFaaS-Internal"] == "proxy"


async def test_headers_hop_by_hop_and_forwarded(gateway: TestClient[Any, Any]) -> None:
    resp = await gateway.get(
        "/sum/h",
        headers={
            "Host": "example.test:8080",
            "Connection": "keep-alive, X-Private",
            "X-Private": "drop me",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic x",
            "X-Custom": "kept",
            "X-Forwarded-For": "10.1.2.3",
            "User-Agent": "tester/1",
        },
    )
    seen = (await resp.json())["headers"]
    for dropped in ("X-Private", "Keep-Alive", "TE", "Proxy-Authorization"):
        assert dropped not in seen, dropped
    assert seen["X-Custom"] == "kept"
    assert seen["Host"] == "example.test:8080"
    assert seen["X-Forwarded-For"] == "10.1.2.3, 127.0.0.1"
    assert seen["X-Forwarded-Host"] == "example.test:8080"
    assert seen["X-Forwarded-Proto"] == "http"
    # end-to-end headers pass unchanged; the proxy adds no User-Agent of its own
    assert seen["User-Agent"] == "tester/1"
    # and hop-by-hop headers of the response are dropped too
    assert resp.headers["X-From"] == "backend"
    assert "X-Hop" not in resp.headers
    assert "Keep-Alive" not in resp.headers


async def test_repeated_headers_survive(gateway: TestClient[Any, Any]) -> None:
    resp = await gateway.get("/sum/h", headers=[("X-Multi", "a"), ("X-Multi", "b")])
    pairs = (await resp.json())["header_list"]
    assert [v for k, v in pairs if k == "X-Multi"] == ["a", "b"]


async def _chunks(total: int, size: int = 1 << 20) -> AsyncIterator[bytes]:
    block = bytes(range(256)) * (size // 256)
    sent = 0
    while sent < total:
        part = block[: min(size, total - sent)]
        sent += len(part)
        yield part


@pytest.mark.parametrize("with_length", [True, False])
async def test_streams_a_50_mib_upload(gateway: TestClient[Any, Any], with_length: bool) -> None:
    total = 50 * 2**20
    expected = hashlib.sha256()
    async for part in _chunks(total):
        expected.update(part)
    headers = {"Content-Length": str(total)} if with_length else {}
    resp = await gateway.post("/sum/hash", data=_chunks(total), headers=headers)
    body = await resp.json()
    assert resp.status == 200
    assert body["size"] == total
    assert body["sha256"] == expected.hexdigest()
    assert (body["chunked"] == "chunked") is (not with_length)


async def test_streams_response_as_produced(aiohttp_server: Factory, aiohttp_client: Any) -> None:
    """The first chunk reaches the client before the function writes the second."""
    release = asyncio.Event()

    async def producer(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write(b'{"n": 1}\n')
        await asyncio.wait_for(release.wait(), 10)
        await resp.write(b'{"n": 2}\n')
        await resp.write_eof()
        return resp

    server = await aiohttp_server(backend_app({"/stream": producer}))
    client, _ = await start_gateway(aiohttp_client, {"/s": "s"}, {"s": [endpoint_of(server)]})
    resp = await client.get("/s/stream")
    assert resp.status == 200
    first = await asyncio.wait_for(resp.content.readline(), 5)
    assert json.loads(first) == {"n": 1}
    release.set()
    assert json.loads(await resp.content.readline()) == {"n": 2}


async def test_large_download_intact(aiohttp_server: Factory, aiohttp_client: Any) -> None:
    payload = hashlib.sha256(b"seed").digest() * (3 * 2**20 // 32)

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=payload, content_type="application/octet-stream")

    server = await aiohttp_server(backend_app({"/big": big}))
    client, _ = await start_gateway(aiohttp_client, {"/b": "b"}, {"b": [endpoint_of(server)]})
    resp = await client.get("/b/big")
    assert resp.headers["Content-Length"] == str(len(payload))
    assert await resp.read() == payload


async def test_refused_connection_is_502(aiohttp_client: Any) -> None:
    from tests.helpers import free_port

    client, _ = await start_gateway(
        aiohttp_client, {"/gone": "gone"}, {"gone": [Endpoint("127.0.0.1", free_port())]}
    )
    resp = await client.get("/gone")
    assert resp.status == 502
    assert resp.headers["X-OpenFaaS-Internal"] == "proxy"
    assert "cannot connect" in (await resp.json())["error"]


async def test_slow_function_is_504(aiohttp_server: Factory, aiohttp_client: Any) -> None:
    never = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    server = await aiohttp_server(backend_app({"/hang": hang}))
    client, _ = await start_gateway(
        aiohttp_client, {"/h": "h"}, {"h": [endpoint_of(server)]}, timeout=0.3
    )
    resp = await client.get("/h/hang")
    assert resp.status == 504
    assert "timeout" in (await resp.json())["error"]


async def test_least_inflight_balancing(aiohttp_server: Factory, aiohttp_client: Any) -> None:
    """With one replica busy, new requests go to the idle one."""
    gate = asyncio.Event()
    hits: dict[str, int] = {"a": 0, "b": 0}

    def make(name: str) -> web.Application:
        async def handler(request: web.Request) -> web.Response:
            hits[name] += 1
            if request.path == "/slow":
                await asyncio.wait_for(gate.wait(), 10)
            return web.Response(text=name)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        return app

    a = await aiohttp_server(make("a"))
    b = await aiohttp_server(make("b"))
    client, state = await start_gateway(
        aiohttp_client, {"/f": "f"}, {"f": [endpoint_of(a), endpoint_of(b)]}
    )
    slow = asyncio.create_task(client.get("/f/slow"))
    pool = state.pools.get("f")
    # poll with a deadline until the slow request is in flight
    async with asyncio.timeout(5):
        while sum(m.inflight for m in pool.members()) < 1:
            await asyncio.sleep(0.005)  # poll with a deadline
    busy = next(m for m in pool.members() if m.inflight == 1)
    answers = set()
    for _ in range(5):
        resp = await client.get("/f/fast")
        answers.add(await resp.text())
    idle_name = "b" if busy.endpoint == endpoint_of(a) else "a"
    assert answers == {idle_name}
    gate.set()
    resp = await slow
    assert resp.status == 200


async def test_healthz(aiohttp_client: Any) -> None:
    state = GatewayState(RouteTable({}, set()))
    client = await aiohttp_client(gateway_app(state))
    resp = await client.get("/healthz")
    assert resp.status == 200
    state.not_ready = lambda: [{"function": "sum", "phase": "building"}]
    resp = await client.get("/healthz")
    assert resp.status == 503
    assert (await resp.json())["not_ready"] == [{"function": "sum", "phase": "building"}]


async def test_client_error_is_not_a_crash(gateway: TestClient[Any, Any]) -> None:
    """A client that disconnects mid-upload leaves the proxy serving."""
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    writer.write(b"POST /sum/hash HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc")
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    resp = await gateway.get("/sum/ok")
    assert resp.status == 200


async def test_long_header_limits(gateway: TestClient[Any, Any]) -> None:
    resp = await gateway.get("/sum/x", headers={"X-Big": "a" * 20000})
    assert resp.status in (400, 431)
    resp = await gateway.get("/sum/x", headers={"X-Ok": "a" * 8000})
    assert resp.status == 200


async def test_pool_size_free_of_leaks(gateway: TestClient[Any, Any]) -> None:
    """In-flight counters return to zero after a mix of outcomes."""
    await asyncio.gather(*(gateway.get(f"/sum/{i}") for i in range(20)))
    state_pools = server_app(gateway)
    assert state_pools is not None
    from faaso.gateway.app import STATE

    pool = state_pools[STATE].pools.get("sum")
    assert [m.inflight for m in pool.members()] == [0]


async def test_connector_reuses_connections(aiohttp_server: Factory, aiohttp_client: Any) -> None:
    peers: set[tuple[str, int]] = set()

    async def who(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.add(request.transport.get_extra_info("peername"))
        return web.Response(text="ok")

    server = await aiohttp_server(backend_app({"/who": who}))
    client, _ = await start_gateway(aiohttp_client, {"/w": "w"}, {"w": [endpoint_of(server)]})
    for _ in range(10):
        resp = await client.get("/w/who")
        assert await resp.text() == "ok"
    assert len(peers) == 1


async def test_max_inflight_answers_429_at_once(
    aiohttp_server: Factory, aiohttp_client: Any
) -> None:
    gate = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await asyncio.wait_for(gate.wait(), 10)
        return web.Response(text="done")

    server = await aiohttp_server(backend_app({"/slow": slow}))
    client, state = await start_gateway(aiohttp_client, {"/f": "f"}, {"f": [endpoint_of(server)]})
    state.max_inflight_of = lambda name: 1 if name == "f" else None
    first = asyncio.create_task(client.get("/f/slow"))
    pool = state.pools.get("f")
    async with asyncio.timeout(5):
        while pool.inflight() < 1:
            await asyncio.sleep(0.005)  # poll with a deadline until the first is in flight
    resp = await client.get("/f/other")
    assert resp.status == 429
    assert resp.headers["X-OpenFaaS-Internal"] == "proxy"
    assert "max_inflight" in (await resp.json())["error"]
    gate.set()
    assert (await first).status == 200
    resp = await client.get("/f/other")
    assert resp.status == 200


async def test_refused_connection_is_retried_on_another_replica(
    aiohttp_client: Any, backend: TestServer
) -> None:
    from tests.helpers import free_port

    dead = Endpoint("127.0.0.1", free_port())
    client, state = await start_gateway(
        aiohttp_client, {"/f": "f"}, {"f": [dead, endpoint_of(backend)]}
    )
    assert state.pools.get("f").pick().endpoint == dead  # type: ignore[union-attr]
    for _ in range(3):  # POST too: nothing was sent to the refusing one
        resp = await client.post("/f/x", data=b"payload")
        assert resp.status == 200
        assert (await resp.json())["length"] == 7


async def test_call_id_generated_passed_and_returned(gateway: TestClient[Any, Any]) -> None:
    resp = await gateway.get("/sum/h")
    seen = (await resp.json())["headers"]
    generated = resp.headers["X-Call-Id"]
    assert generated and seen["X-Call-Id"] == generated
    assert int(seen["X-Start-Time"]) > 0
    assert float(resp.headers["X-Duration-Seconds"]) >= 0
    resp = await gateway.get("/sum/h", headers={"X-Call-Id": "abc-123"})
    assert (await resp.json())["headers"]["X-Call-Id"] == "abc-123"
    assert resp.headers["X-Call-Id"] == "abc-123"


async def ws_echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("chat", "other"))
    await ws.prepare(request)
    async for message in ws:
        if message.type is aiohttp.WSMsgType.TEXT:
            if message.data == "bye":
                await ws.close(code=4001, message=b"bye")
                break
            await ws.send_str("echo:" + message.data)
        elif message.type is aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(message.data[::-1])
    return ws


async def test_websocket_proxied_both_ways(aiohttp_server: Factory, aiohttp_client: Any) -> None:
    server = await aiohttp_server(backend_app({"/ws": ws_echo}))
    client, state = await start_gateway(aiohttp_client, {"/f": "f"}, {"f": [endpoint_of(server)]})
    async with client.ws_connect("/f/ws", protocols=("chat",)) as ws:
        assert ws.protocol == "chat"
        await ws.send_str("hello")
        assert await ws.receive_str(timeout=5) == "echo:hello"
        await ws.send_bytes(b"\x01\x02\x03")
        assert await ws.receive_bytes(timeout=5) == b"\x03\x02\x01"
        assert state.pools.get("f").inflight() == 1  # an open websocket counts as in flight
        await ws.send_str("bye")  # the function closes: the client sees its close code
        message = await ws.receive(timeout=5)
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4001

    async def idle() -> bool:
        return state.pools.get("f").inflight() == 0

    await eventually(idle, 5, "the websocket to leave the in-flight count")
    # and a client that closes first closes the function's side too
    async with client.ws_connect("/f/ws") as ws:
        await ws.send_str("x")
        assert await ws.receive_str(timeout=5) == "echo:x"
    await eventually(idle, 5, "the websocket to leave the in-flight count")


async def test_websocket_to_a_plain_handler_is_502(gateway: TestClient[Any, Any]) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await gateway.ws_connect("/sum/not-a-websocket")
    assert info.value.status == 502
    assert info.value.headers is not None
    assert info.value.headers["X-OpenFaaS-Internal"] == "proxy"


async def test_client_gone_cancels_the_upstream_request(
    aiohttp_server: Factory, aiohttp_client: Any
) -> None:
    entered = asyncio.Event()
    cancelled = asyncio.Event()
    never = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        entered.set()
        try:
            await never.wait()  # held until the proxy drops the connection and this is cancelled
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return web.Response(text="too late")

    server = await aiohttp_server(backend_app({"/hang": hang}))
    client, state = await start_gateway(aiohttp_client, {"/h": "h"}, {"h": [endpoint_of(server)]})
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /h/hang HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await asyncio.wait_for(entered.wait(), 5)
    writer.close()
    await writer.wait_closed()
    await asyncio.wait_for(cancelled.wait(), 5)

    async def released() -> bool:
        return state.pools.get("h").inflight() == 0

    await eventually(released, 5, "the in-flight count to drop")

    async def counted() -> bool:
        text = state.metrics.render().decode()
        return 'gateway_function_invocation_total{code="499",function_name="h.openfaas-fn"}' in text

    await eventually(counted, 5, "the abandoned request to be counted as 499")


async def test_slow_headers_are_cut_off_while_others_are_served(
    aiohttp_client: Any, backend: TestServer
) -> None:
    """A client dribbling its headers is closed within the header timeout; others go on."""
    client, _ = await start_gateway(
        aiohttp_client, {"/f": "f"}, {"f": [endpoint_of(backend)]}, header_timeout=0.5
    )
    reader, writer = await asyncio.open_connection(client.host, client.port)
    request = b"GET /f/slow HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: y\r\n" * 1000
    closed = False
    served = 0
    try:
        async with asyncio.timeout(10):  # a deadline, far above the 0.5 s header timeout
            for byte in request:
                try:
                    writer.write(bytes([byte]))
                    await writer.drain()
                except ConnectionError:
                    closed = True
                    break
                if reader.at_eof():
                    closed = True
                    break
                try:  # wait a little for the server to speak (it only ever closes)
                    data = await asyncio.wait_for(reader.read(1), 0.02)
                except TimeoutError:
                    data = None
                if data == b"":
                    closed = True
                    break
                if served < 3:
                    resp = await client.get("/f/ok")
                    assert resp.status == 200
                    served += 1
    finally:
        writer.close()
    assert closed, "the server never closed a connection that sent headers too slowly"
    assert served == 3


async def test_hop_by_hop_in_any_case(gateway: TestClient[Any, Any]) -> None:
    resp = await gateway.get(
        "/sum/h",
        headers={
            "connection": "keep-alive, x-private",
            "X-PRIVATE": "drop me",
            "keep-alive": "timeout=5",
            "te": "trailers",
            "proxy-authorization": "Basic x",
            "x-kept": "yes",
        },
    )
    seen = {k.lower(): v for k, v in (await resp.json())["headers"].items()}
    for dropped in ("x-private", "keep-alive", "te", "proxy-authorization"):
        assert dropped not in seen, dropped
    assert seen["x-kept"] == "yes"


async def test_function_closing_without_an_answer_is_502(aiohttp_client: Any) -> None:
    from tests.helpers import raw_function, read_request

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)  # and close without a word

    server, endpoint = await raw_function(answer)
    async with server:
        client, state = await start_gateway(aiohttp_client, {"/f": "f"}, {"f": [endpoint]})
        resp = await client.post("/f/x", data=b"once")
        assert resp.status == 502
        assert resp.headers["X-OpenFaaS-Internal"] == "proxy"
        assert "closed the connection" in (await resp.json())["error"]
        assert state.pools.get("f").inflight() == 0
