"""Swarm secret versions get names Swarm takes: at most 64 characters, whatever the secret's
name (faaso allows up to 63). Against a real one-node Swarm."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import pytest

from faaso.backends.base import SecretRef
from faaso.backends.swarm.orchestrator import SWARM_NAME_MAX, SwarmOrchestrator

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("require_swarm")]


@pytest.fixture
async def orchestrator() -> AsyncIterator[SwarmOrchestrator]:
    docker = aiodocker.Docker()
    found = SwarmOrchestrator(docker, secrets.token_hex(6))  # an owner of this test's own
    try:
        yield found
    finally:
        for made in await docker.secrets.list(filters={"label": [f"faaso.owner={found.owner}"]}):
            await docker.secrets.delete(str(made["ID"]))
        await docker.close()


@pytest.mark.parametrize("length", [1, 40, 63])
async def test_a_version_of_any_secret_name_is_made(
    orchestrator: SwarmOrchestrator, tmp_path: Path, length: int
) -> None:
    name = ("s" * length)[:length]
    value = tmp_path / name
    value.write_text("v")
    ref = SecretRef(name=name, version="ab" * 32, source=str(value), target=f"/x/{name}")
    assert len(orchestrator.secret_name(ref)) <= SWARM_NAME_MAX
    secret_id, _ = await orchestrator._ensure_secret(ref)  # creates the version
    assert secret_id
    again, _ = await orchestrator._ensure_secret(ref)  # the same value: the same object
    assert again == secret_id
