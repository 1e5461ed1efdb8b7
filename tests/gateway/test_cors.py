"""CORS at the gateway, on both front-ends: preflights answered by the gateway (the function
never sees them) for routes, /function/ and /async-function/; Access-Control-Allow-Origin on the
answers to allowed origins, with Vary: Origin; a function without a policy untouched; plain
requests (no Origin) staying on the fast path. Real aiohttp functions on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from types import MappingProxyType
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from faaso.gateway.app import STATE
from faaso.spec.cors import CorsPolicy
from faaso.spec.endpoint import Endpoint
from tests.helpers import fast_of, port_of, read_response, server_app

Factory = Callable[..., Awaitable[TestServer]]
APP = "https://app.example.com"
POLICY = CorsPolicy(
    allow_origins=(APP,),
    allow_methods=("GET", "POST", "PUT"),
    allow_headers=("content-type", "x-token"),
    max_age=600,
    allow_credentials=True,
)


async def _function(aiohttp_server: Factory, seen: list[str]) -> Endpoint:
    """A function that records each request's method and answers with its own CORS header
    (which the gateway must replace when a policy applies)."""

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.method)
        return web.Response(
            text="hi " + request.method,
            headers={
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Credentials": "false",
                "Access-Control-Expose-Headers": "X-Call-Id",
                "Vary": "Accept-Encoding",
            },
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return Endpoint("127.0.0.1", port_of(await aiohttp_server(app)))


async def _gateway(start: Any, endpoint: Endpoint, fast: bool, **policies: CorsPolicy) -> Any:
    client = await start({"f": [endpoint], "g": [endpoint]}, fast=fast)
    server_app(client)[STATE].cors = MappingProxyType(policies)
    return client


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
@pytest.mark.parametrize("path", ["/f/x", "/function/f/x", "/async-function/f"])
async def test_preflight_answered_by_the_gateway(
    start: Any, aiohttp_server: Factory, fast: bool, path: str
) -> None:
    seen: list[str] = []
    client = await _gateway(start, await _function(aiohttp_server, seen), fast, f=POLICY)
    resp = await client.options(
        path,
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "X-Token, Content-Type",
        },
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert resp.headers["Access-Control-Allow-Methods"] == "GET, POST, PUT"
    assert resp.headers["Access-Control-Allow-Headers"] == "content-type, x-token"
    assert resp.headers["Access-Control-Max-Age"] == "600"
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert resp.headers["Vary"] == "Origin"
    assert seen == []  # the function never saw it


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
async def test_preflight_refused_says_why(start: Any, aiohttp_server: Factory, fast: bool) -> None:
    seen: list[str] = []
    client = await _gateway(start, await _function(aiohttp_server, seen), fast, f=POLICY)
    cases = [
        ({"Origin": "https://evil.example"}, "DELETE", "origin 'https://evil.example'"),
        ({"Origin": APP}, "DELETE", "method 'DELETE'"),
        ({"Origin": APP, "Access-Control-Request-Headers": "x-other"}, "GET", "x-other"),
    ]
    for headers, method, why in cases:
        resp = await client.options(
            "/f", headers={**headers, "Access-Control-Request-Method": method}
        )
        assert resp.status == 403
        assert "Access-Control-Allow-Origin" not in resp.headers
        assert resp.headers["Vary"] == "Origin"
        body = json.loads(await resp.text())
        assert why in body["error"]
        assert body["function"] == "f"
    assert seen == []


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
async def test_answers_carry_the_policy(start: Any, aiohttp_server: Factory, fast: bool) -> None:
    seen: list[str] = []
    client = await _gateway(start, await _function(aiohttp_server, seen), fast, f=POLICY)
    allowed = await client.post("/f/x", data=b"{}", headers={"Origin": APP})
    assert await allowed.text() == "hi POST"
    # the function's own "*" is replaced by the policy's origin
    assert allowed.headers.getall("Access-Control-Allow-Origin") == [APP]
    assert allowed.headers.getall("Access-Control-Allow-Credentials") == ["true"]
    assert allowed.headers["Access-Control-Expose-Headers"] == "X-Call-Id"  # the function's
    assert allowed.headers.getall("Vary") == ["Accept-Encoding", "Origin"]
    other = await client.get("/function/f", headers={"Origin": "https://evil.example"})
    assert await other.text() == "hi GET"
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Access-Control-Allow-Credentials" not in other.headers
    assert "Origin" in other.headers.getall("Vary")
    # without an Origin, the answer is the function's own
    plain = await client.get("/f")
    assert plain.headers["Access-Control-Allow-Origin"] == "*"
    assert plain.headers.getall("Vary") == ["Accept-Encoding"]
    assert seen == ["POST", "GET", "GET"]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
async def test_expose_headers_replace_the_functions_own(
    start: Any, aiohttp_server: Factory, fast: bool
) -> None:
    seen: list[str] = []
    exposing = CorsPolicy(allow_origins=(APP,), expose_headers=("X-Call-Id", "X-Duration-Seconds"))
    client = await _gateway(start, await _function(aiohttp_server, seen), fast, f=exposing)
    allowed = await client.get("/f/x", headers={"Origin": APP})
    assert allowed.headers.getall("Access-Control-Expose-Headers") == [
        "X-Call-Id, X-Duration-Seconds"
    ]
    assert allowed.headers.getall("Access-Control-Allow-Origin") == [APP]
    # another origin gets no CORS fields of the policy: the function's own expose list stays
    other = await client.get("/f/x", headers={"Origin": "https://evil.example"})
    assert other.headers.getall("Access-Control-Expose-Headers") == ["X-Call-Id"]
    assert "Access-Control-Allow-Origin" not in other.headers
    assert seen == ["GET", "GET"]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
async def test_any_origin_without_credentials(
    start: Any, aiohttp_server: Factory, fast: bool
) -> None:
    seen: list[str] = []
    anyone = CorsPolicy(allow_origins=("*",), allow_headers=("*",))
    client = await _gateway(start, await _function(aiohttp_server, seen), fast, f=anyone)
    resp = await client.options(
        "/f",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "x-anything",
        },
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.headers["Access-Control-Allow-Headers"] == "x-anything"
    assert "Access-Control-Allow-Credentials" not in resp.headers
    assert "Access-Control-Max-Age" not in resp.headers


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
async def test_function_without_a_policy_is_untouched(
    start: Any, aiohttp_server: Factory, fast: bool
) -> None:
    seen: list[str] = []
    client = await _gateway(start, await _function(aiohttp_server, seen), fast, f=POLICY)
    resp = await client.options(
        "/g", headers={"Origin": APP, "Access-Control-Request-Method": "PUT"}
    )
    assert resp.status == 200
    assert await resp.text() == "hi OPTIONS"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"  # the function's own
    assert seen == ["OPTIONS"]


async def test_plain_requests_stay_on_the_fast_path(start: Any, aiohttp_server: Factory) -> None:
    """With CORS on, a request without Origin is still relayed by the fast path (its connection
    stays the fast path's); one with an Origin for a function with a policy is handed to
    aiohttp, which answers it with the policy."""
    seen: list[str] = []
    client = await _gateway(start, await _function(aiohttp_server, seen), True, f=POLICY)
    fast = fast_of(client)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        for _ in range(3):
            writer.write(b"GET /f/a HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await asyncio.wait_for(read_response(reader), 10)
            assert answer.endswith(b"\r\n\r\nhi GET")
            assert len(fast.connections) == 1  # not handed off
        # an Origin, but for a function without a policy: still the fast path
        writer.write(b"GET /g/a HTTP/1.1\r\nHost: x\r\nOrigin: " + APP.encode() + b"\r\n\r\n")
        answer = await asyncio.wait_for(read_response(reader), 10)
        assert b"Access-Control-Allow-Origin: *\r\n" in answer
        assert len(fast.connections) == 1
        writer.write(b"GET /f/a HTTP/1.1\r\nHost: x\r\nOrigin: " + APP.encode() + b"\r\n\r\n")
        answer = await asyncio.wait_for(read_response(reader), 10)
        assert f"Access-Control-Allow-Origin: {APP}\r\n".encode() in answer
        assert len(fast.connections) == 0  # handed to aiohttp
    finally:
        writer.close()
