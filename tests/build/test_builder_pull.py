"""``--no-pull`` reaches the base image: a builder that may not pull never asks to."""

from __future__ import annotations

from typing import Any

import aiodocker
import pytest
import structlog

from faaso.build import builder as builder_module
from faaso.build import engine
from faaso.build.baseimage import ensure_base_image
from faaso.build.builder import Builder
from faaso.config.runtimes import RuntimeCatalog

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("require_docker")]


@pytest.mark.parametrize("allow_pull", [True, False])
async def test_base_image_is_ensured_with_the_builders_pull_setting(
    monkeypatch: pytest.MonkeyPatch, allow_pull: bool
) -> None:
    real = ensure_base_image
    asked: list[bool] = []

    async def recording(docker: aiodocker.Docker, log: Any, *, allow_pull: bool = True) -> str:
        asked.append(allow_pull)
        return await real(docker, log, allow_pull=allow_pull)  # the real one, on the real engine

    monkeypatch.setattr(builder_module, "ensure_base_image", recording)
    docker = await engine.connect()
    try:
        builder = Builder(docker, RuntimeCatalog(), structlog.get_logger(), allow_pull=allow_pull)
        assert (await builder.base_image_id()).startswith("sha256:")
    finally:
        await docker.close()
    assert asked == [allow_pull]
