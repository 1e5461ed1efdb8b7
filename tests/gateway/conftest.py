"""Fixtures of the gateway tests: a gateway app in front of scripted functions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from faaso.gateway.app import GatewayState, gateway_app
from faaso.spec.endpoint import Endpoint
from faaso.spec.routing import RouteTable
from tests.helpers import FastTestServer


@pytest.fixture
async def start(aiohttp_client: Any) -> Callable[..., Awaitable[Any]]:
    """``start({"f": [endpoint, ...]}, fast=True)``: a test client of a gateway routing
    ``/f`` to function ``f`` with those instances; ``fast``: listening through the fast path as
    ``faaso serve`` does, else aiohttp alone."""

    async def make(
        endpoints: dict[str, list[Endpoint]],
        *,
        fast: bool = True,
        timeout: float = 30.0,
        header_timeout: float = 15.0,
        max_inflight: int | None = None,
    ) -> Any:
        state = GatewayState(RouteTable({f"/{n}": n for n in endpoints}, set(endpoints)))
        for name, eps in endpoints.items():
            for i, ep in enumerate(eps):
                state.pools.get(name).add(f"{name}-{i}", ep)
        state.timeout_of = lambda _name: timeout
        state.max_inflight_of = lambda _name: max_inflight
        app = gateway_app(state, header_timeout=header_timeout)
        return await aiohttp_client(FastTestServer(app) if fast else TestServer(app))

    return make
