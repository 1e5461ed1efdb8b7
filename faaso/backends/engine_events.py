"""The engine's event stream, shared by the Docker backend and the Swarm orchestrator.

aiodocker's ``DockerEvents`` runs the stream in a task and hands events to subscribers; this
yields them as raw dicts until the stream ends, and always raises :class:`BackendError` then
(an engine restart, a broken connection): the caller reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator
from typing import Any

import aiodocker
from aiodocker.events import DockerEvents

from faaso.errors import BackendError


async def engine_events(
    docker: aiodocker.Docker, filters: dict[str, list[str]]
) -> AsyncGenerator[dict[str, Any], None]:
    events = DockerEvents(docker)  # type: ignore[no-untyped-call]
    subscriber = events.subscribe(create_task=False)  # type: ignore[no-untyped-call]
    runner = asyncio.create_task(events.run(filters=json.dumps(filters)))
    try:
        while True:
            getter = asyncio.ensure_future(subscriber.get())
            done, _ = await asyncio.wait({getter, runner}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            item = getter.result()
            if item is None:
                break
            yield item
        if runner.done() and not runner.cancelled() and runner.exception() is not None:
            exc = runner.exception()
            raise BackendError(f"the engine's event stream broke: {exc}") from exc
        raise BackendError("the engine's event stream ended")
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await runner
