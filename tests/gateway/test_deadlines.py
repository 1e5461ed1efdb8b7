"""Connection deadlines: the keep-alive/header deadline restarts after every response the proxy
sends (its own errors included), one timer serves all connections, and a connection that is gone
is not kept alive by its deadline."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from faaso.gateway.fast.relay import FastPath
from tests.helpers import (
    fast_of,
    poll,
)

Factory = Callable[..., Awaitable[TestServer]]


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
