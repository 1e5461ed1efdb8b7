"""The engine watcher runs under the guard: a bug while following events does not end it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import structlog
from structlog.testing import capture_logs
from structlog.typing import FilteringBoundLogger

from faaso.backends.base import BackendEvent
from faaso.backends.docker.backend import DockerBackend
from faaso.build import engine
from faaso.config.routes_file import load_config
from faaso.control.controller import Prober
from faaso.control.supervisor import Supervisor
from faaso.gateway.pools import Pools
from faaso.spec.function import FunctionSpec
from faaso.state.paths import owner_id
from tests.helpers import eventually

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("require_docker")]


class FlakyEvents(DockerBackend):
    """The real Docker backend, except that its first event stream hits a bug."""

    opened = 0

    async def events(self) -> AsyncIterator[BackendEvent]:
        self.opened += 1
        if self.opened == 1:
            raise ZeroDivisionError("a bug while following events")
        async for event in super().events():
            yield event


class PrebuiltImage:
    async def ensure(self, spec: FunctionSpec) -> str:
        assert spec.image is not None
        return spec.image


async def test_engine_watcher_is_restarted_after_an_unexpected_exception(tmp_path: Path) -> None:
    config_path = tmp_path / "routes.yml"
    # replicas 0: a controller, no container
    config_path.write_text(
        "functions:\n  idle: {image: faaso/debian:bookworm, replicas: 0}\nroutes: {}\n"
    )
    log: FilteringBoundLogger = structlog.get_logger()
    backend = FlakyEvents(await engine.connect(), owner_id(tmp_path / "state"))
    try:
        async with aiohttp.ClientSession() as session:
            supervisor = Supervisor(backend, PrebuiltImage(), Pools(), Prober(session), log)
            with capture_logs() as logs:
                await supervisor.start(load_config(config_path))

                async def reopened() -> bool:
                    return backend.opened >= 2

                try:
                    await eventually(reopened, 20, "the event stream to be opened again")
                finally:
                    await supervisor.close()
    finally:
        await backend.close()
    crashed = [e for e in logs if e["event"] == "task.crashed"]
    assert [e["task"] for e in crashed] == ["engine-watch"]
    assert crashed[0]["error"] == "ZeroDivisionError: a bug while following events"
    assert any(e["event"] == "task.restarted" and e["task"] == "engine-watch" for e in logs)
