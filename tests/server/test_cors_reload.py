"""CORS policies follow the routes file: a reload swaps them in (the whole server, a real
engine; the function stays at zero replicas, its preflights never reach it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from faaso.config.routes_file import load_config
from faaso.server.app import RELOADER, create_app
from tests.helpers import eventually, server_app

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("require_docker")]

ROUTES = """
cors: {{allow_origins: ["{origin}"], max_age: 60}}
functions:
  idle: {{image: "faaso/debian:bookworm", replicas: 0}}
"""


async def test_reload_swaps_the_policy(tmp_path: Path, aiohttp_client: Any) -> None:
    path = tmp_path / "routes.yml"
    path.write_text(ROUTES.format(origin="https://one.example"))
    app = create_app(load_config(path), tmp_path / "state", pull=False, watch=False, auth=False)
    client = await aiohttp_client(app)

    async def preflight(origin: str) -> int:
        resp = await client.options(
            "/function/idle", headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
        )
        return int(resp.status)

    assert await preflight("https://one.example") == 204
    assert await preflight("https://two.example") == 403
    path.write_text(ROUTES.format(origin="https://two.example"))
    server_app(client)[RELOADER].trigger()

    async def swapped() -> bool:
        return await preflight("https://two.example") == 204

    await eventually(swapped, 60, "the reloaded CORS policy")
    assert await preflight("https://one.example") == 403
