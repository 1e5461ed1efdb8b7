"""Shutdown of ``serve()``: the listener closes first, requests in flight on either front-end
may finish, and both drains run at once within the one ``--drain-timeout`` budget."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestServer

from faaso.gateway.app import GatewayState, gateway_app
from faaso.server.serve import ServerOptions, serve
from faaso.spec.endpoint import Endpoint
from faaso.spec.routing import RouteTable
from tests.helpers import eventually, free_port, port_of, read_response

Factory = Callable[..., Awaitable[TestServer]]


async def slow_backend(
    aiohttp_server: Factory,
) -> tuple[TestServer, asyncio.Event, asyncio.Event]:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        entered.set()
        await asyncio.wait_for(release.wait(), 20)
        return web.Response(text="finished")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", slow)
    return await aiohttp_server(app), entered, release


async def start_serving(
    backend: TestServer, drain_timeout: float
) -> tuple[int, asyncio.Event, asyncio.Task[None]]:
    state = GatewayState(RouteTable({"/f": "f"}, {"f"}))
    state.pools.get("f").add("f-0", Endpoint("127.0.0.1", port_of(backend)))
    stop = asyncio.Event()
    port = free_port()
    listening = asyncio.Event()
    server = asyncio.create_task(
        serve(
            gateway_app(state),
            ServerOptions(port=port, drain_timeout=drain_timeout),
            stop=stop,
            on_listening=lambda _port: listening.set(),
        )
    )
    await asyncio.wait_for(listening.wait(), 10)
    return port, stop, server


async def test_shutdown_lets_a_request_in_flight_finish(aiohttp_server: Factory) -> None:
    """serve(): stop accepting, let the relayed request finish, then return."""
    backend, entered, release = await slow_backend(aiohttp_server)
    port, stop, server = await start_serving(backend, drain_timeout=10)
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


async def test_both_drains_share_one_budget(aiohttp_server: Factory) -> None:
    """While a fast-path request is still in flight, aiohttp's connections are drained too
    (an idle one is closed at once), instead of waiting for the fast drain to end first and
    then getting a budget of their own."""
    backend, entered, release = await slow_backend(aiohttp_server)
    port, stop, server = await start_serving(backend, drain_timeout=30)
    fast_reader, fast_writer = await asyncio.open_connection("127.0.0.1", port)
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        # An idle keep-alive connection served by aiohttp (/healthz is the app's own).
        idle_writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(read_response(idle_reader), 5)).startswith(b"HTTP/1.1 ")
        fast_writer.write(b"GET /f/slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(entered.wait(), 5)
        stop.set()
        assert await asyncio.wait_for(idle_reader.read(), 10) == b""  # closed by the drain
        assert not server.done() and not release.is_set()  # the fast request is still on
        release.set()
        answer = await asyncio.wait_for(read_response(fast_reader), 5)
        assert answer.endswith(b"finished")
        await asyncio.wait_for(server, 10)
    finally:
        release.set()
        fast_writer.close()
        idle_writer.close()
