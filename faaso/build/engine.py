"""Connecting to the Docker engine, and small helpers over aiodocker shared by several modules."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiodocker

from faaso.errors import BackendError


async def connect(timeout: float = 10.0) -> aiodocker.Docker:
    """Open a client and check that the engine answers. Raises :class:`BackendError`."""
    docker = aiodocker.Docker()
    try:
        await asyncio.wait_for(docker.version(), timeout)
    except (OSError, aiodocker.DockerError, TimeoutError, ValueError) as exc:
        await docker.close()
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise BackendError(
            f"cannot reach the Docker engine at {where} ({exc or type(exc).__name__}); "
            "start it (scripts/serve starts it for you) or set DOCKER_HOST"
        ) from exc
    return docker


async def image_id(docker: aiodocker.Docker, ref: str) -> str | None:
    """The image's id, or None when the engine does not have it."""
    try:
        info = await docker.images.inspect(ref)
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return None
        raise BackendError(f"cannot inspect image {ref}: {exc.message}") from exc
    return str(info["Id"])


async def stream_build(
    docker: aiodocker.Docker,
    context_tar: Any,
    tag: str,
    on_line: Callable[[str], None],
    *,
    nocache: bool = False,
    labels: dict[str, str] | None = None,
) -> None:
    """Build an image from a tar build context, calling ``on_line`` for each line of output.

    Raises :class:`aiodocker.DockerError` (the engine refused) or :class:`BackendError` (a
    build step failed; its message is the engine's).
    """
    stream: AsyncIterator[dict[str, Any]] = docker.images.build(
        fileobj=context_tar,
        encoding="identity",
        tag=tag,
        rm=True,
        forcerm=True,
        nocache=nocache,
        labels=labels,
        stream=True,
    )
    async for item in stream:
        if "error" in item:
            raise BackendError(str(item["error"]).strip())
        text = item.get("stream")
        if isinstance(text, str):
            for line in text.splitlines():
                if line.strip():
                    on_line(line.rstrip())
