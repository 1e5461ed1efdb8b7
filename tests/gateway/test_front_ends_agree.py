"""The fast path and the aiohttp path give the same answers: proxy-made error bodies and
their wording (404, 502, 503, 504), the headers the proxy adds, holding, the app's own routes
however they are percent-encoded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog

from faaso.gateway.app import STATE
from tests.helpers import exchange, poll, raw_function, read_request


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
async def test_404_body_is_the_same_both_ways(start: Any, fast: bool) -> None:
    client = await start({"f": []}, fast=fast)
    resp = await client.get("/nowhere")
    assert resp.status == 404
    assert await resp.json() == {"error": "no function is routed at /nowhere", "path": "/nowhere"}


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
async def test_encoded_reserved_path_served_the_same_way(start: Any, fast: bool) -> None:
    """aiohttp routes /healthz, /metrics, /system on the decoded path; the fast path checks
    the raw path against them, so /%68ealthz is 200 with aiohttp and the proxy's 404 (or a
    function's answer under a '/' route) on the fast path."""
    client = await start({"f": []}, fast=fast)
    data = await exchange(client.port, b"GET /%68ealthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200"), data[:200]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
async def test_504_names_the_timeout_and_its_key(start: Any, fast: bool) -> None:
    gate = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await gate.wait()  # never answers while the test runs

    server, endpoint = await raw_function(answer)
    async with server:
        client = await start({"f": [endpoint]}, fast=fast, timeout=0.3)
        resp = await client.get("/f/x")
        gate.set()
        assert resp.status == 504
        assert (await resp.json())["error"] == (
            "function 'f' did not answer within its timeout of 0.3 s "
            "(set by the function's 'timeout' key)"
        )


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
async def test_start_time_on_the_request_and_its_response(start: Any, fast: bool) -> None:
    """The function and the client see the same X-Start-Time (and X-Call-Id); the client's own
    X-Start-Time is not passed on."""
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nX-Start-Time: 7\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    server, endpoint = await raw_function(answer)
    async with server:
        client = await start({"f": [endpoint]}, fast=fast)
        resp = await client.get("/f/x", headers={"X-Start-Time": "1"})
        assert resp.status == 200
        fields = {
            line.split(b":", 1)[0].lower(): line.split(b":", 1)[1].strip()
            for line in seen[0].split(b"\r\n")[1:]
            if b":" in line
        }
        assert resp.headers.getall("X-Start-Time") == [fields[b"x-start-time"].decode()]
        assert fields[b"x-start-time"] not in (b"1", b"7")
        assert resp.headers["X-Call-Id"] == fields[b"x-call-id"].decode()


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
async def test_a_function_closing_early_is_one_502_logged_with_its_call_id(
    start: Any, fast: bool
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)  # and close without a word

    server, endpoint = await raw_function(answer)
    async with server:
        client = await start({"f": [endpoint]}, fast=fast)
        with structlog.testing.capture_logs() as logs:
            resp = await client.post("/f/x", data=b"x", headers={"X-Call-Id": "call-7"})
        assert resp.status == 502
        assert resp.headers["X-Call-Id"] == "call-7"
        assert (await resp.json())["error"] == (
            "function 'f' closed the connection before answering in full"
        )
        errors = [e for e in logs if e["event"] == "gateway.proxy_error"]
        assert [(e["status"], e["call_id"], e["function"]) for e in errors] == [
            (502, "call-7", "f")
        ]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
async def test_a_held_request_is_answered_when_holding_ends(start: Any, fast: bool) -> None:
    """A request held for a function with no instance (one is expected) gets its 503 as soon
    as holding ends, not at its 60 s timeout."""
    client = await start({"f": []}, fast=fast, timeout=60.0)
    pool = client.server.app[STATE].pools.get("f")
    pool.holding = True
    request = asyncio.create_task(client.get("/f/x"))
    assert await poll(lambda: pool.waiting == 1, 10), "the request was not held"
    pool.holding = False
    resp = await asyncio.wait_for(request, 10)
    assert resp.status == 503
    assert (await resp.json())["error"] == "function 'f' has no ready instance"
