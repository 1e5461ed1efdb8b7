"""The fast path and the aiohttp path give the same answers: proxy-made error bodies, the
app's own routes however they are percent-encoded."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from tests.helpers import (
    exchange,
)

Factory = Callable[..., Awaitable[TestServer]]


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
