"""The access log on both front-ends: one line per request with method, path, function,
status, duration and call id; nothing at all when it is off. Real aiohttp functions on
127.0.0.1, the real fast path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer

from faaso.gateway.access_log import EVENT, AccessLog
from faaso.gateway.app import GatewayState, gateway_app
from faaso.spec.endpoint import Endpoint
from faaso.spec.routing import RouteTable
from tests.helpers import FastTestServer, port_of

Factory = Callable[..., Awaitable[TestServer]]


async def _gateway(
    aiohttp_client: Any, aiohttp_server: Factory, fast: bool, log: AccessLog | None
) -> Any:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(text="ok", status=201 if request.method == "POST" else 200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    backend = await aiohttp_server(app)
    state = GatewayState(RouteTable({"/f": "f", "/idle": "idle"}, {"f", "idle"}))
    state.pools.get("f").add("f-0", Endpoint("127.0.0.1", port_of(backend)))
    state.access_log = log
    gateway = gateway_app(state)
    return await aiohttp_client(FastTestServer(gateway) if fast else TestServer(gateway))


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
async def test_one_line_per_request(
    aiohttp_client: Any, aiohttp_server: Factory, fast: bool
) -> None:
    with structlog.testing.capture_logs() as lines:
        client = await _gateway(aiohttp_client, aiohttp_server, fast, AccessLog())
        ok = await client.post("/f/x?secret=1", data=b"{}", headers={"X-Call-Id": "call-1"})
        assert ok.status == 201
        missing = await client.get("/nowhere")
        assert missing.status == 404
        idle = await client.get("/function/idle")
        assert idle.status == 503
        health = await client.get("/healthz")
        assert health.status == 200
    access = [line for line in lines if line["event"] == EVENT]
    for line in access:
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
        assert line["log_level"] == "info"
    got = [(x["method"], x["path"], x["function"], x["status"], x["call_id"]) for x in access]
    assert got[0] == ("POST", "/f/x", "f", 201, "call-1")  # the query string is left out
    assert got[1] == ("GET", "/nowhere", None, 404, None)
    assert got[2][:4] == ("GET", "/function/idle", "idle", 503)
    assert got[2][4]  # the refusal's call id, as its answer carries it
    assert got[3] == ("GET", "/healthz", None, 200, None)
    assert len(got) == 4


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
async def test_off_by_default(aiohttp_client: Any, aiohttp_server: Factory, fast: bool) -> None:
    with structlog.testing.capture_logs() as lines:
        client = await _gateway(aiohttp_client, aiohttp_server, fast, None)
        assert (await client.get("/f")).status == 200
        assert (await client.get("/healthz")).status == 200
    assert [line for line in lines if line["event"] == EVENT] == []
