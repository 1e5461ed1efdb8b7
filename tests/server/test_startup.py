"""Start-up acquires its resources on one stack: a failing step leaks nothing."""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

import pytest
from aiohttp import web

from faaso.config.routes_file import load_config
from faaso.errors import ConfigError
from faaso.server.app import create_app

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("require_docker")]


async def test_corrupt_deployments_leaks_no_connection(tmp_path: Path) -> None:
    config = tmp_path / "routes.yml"
    config.write_text("functions:\n  idle: {image: faaso/debian:bookworm, replicas: 0}\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / "deployments.json").write_text("{not json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner = web.AppRunner(create_app(load_config(config), state, pull=False))
        try:
            with pytest.raises(ConfigError, match=r"deployments\.json"):
                await runner.setup()
        finally:
            await runner.cleanup()
        del runner
        gc.collect()  # an unclosed session or connector says so when it is collected
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []
