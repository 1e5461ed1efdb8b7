"""Shared fixtures: real HTTP servers on 127.0.0.1, and a way to ask for Docker."""

from __future__ import annotations

import asyncio
import http.client
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from faaso.fastpath import FAST_PATH, FastSite

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_request(
    port: int, path: str, *, method: str = "GET", body: bytes | None = None
) -> tuple[int, bytes]:
    """One blocking request to 127.0.0.1:``port``: (status, body), or (0, b"") when nothing
    answers (so it can be polled)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except OSError:
        return 0, b""
    finally:
        conn.close()


def docker_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def require_docker() -> None:
    """Docker tests fail (not skip) without an engine: scripts/test always provides one."""
    if not docker_available():
        pytest.fail(
            "no Docker engine answers; run scripts/test (it starts one) "
            "or deselect with -m 'not docker'"
        )


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll ``check`` until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)  # poll with a deadline


class FastTestServer(TestServer):
    """An aiohttp test server listening the way ``faaso serve`` does: through the fast path,
    which hands what it does not relay itself to the app."""

    async def start_server(
        self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any
    ) -> None:
        if self.runner:
            return
        self.runner = await self._make_runner(handler_cancellation=True, **kwargs)
        await self.runner.setup()
        site = FastSite(self.runner, self.app[FAST_PATH], self.host, 0, drain_timeout=2.0)
        await site.start()
        self.port = site.port
        self.scheme = "http"
        self._root = URL(f"http://{self.host}:{self.port}")
