"""Shared fixtures: real HTTP servers on 127.0.0.1, and ways to ask for Docker and a Swarm."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.helpers import docker_available, swarm_state


@pytest.fixture(scope="session")
def require_docker() -> None:
    """Docker tests fail (not skip) without an engine: scripts/test always provides one."""
    if not docker_available():
        pytest.fail(
            "no Docker engine answers; run scripts/test (it starts one) "
            "or deselect with -m 'not docker'"
        )


@pytest.fixture(scope="session")
def require_swarm(require_docker: None) -> Iterator[None]:
    """A one-node Swarm for the Swarm tests: made (``docker swarm init``) when the engine is not
    in one, and left at the end only if this fixture made it. Fails, never skips."""
    made = False
    if swarm_state() != "active":
        init = subprocess.run(
            ["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
            capture_output=True,
            text=True,
        )
        if init.returncode != 0:
            pytest.fail(f"cannot make a one-node Swarm: {init.stderr.strip()}")
        made = True
    manager = subprocess.run(
        ["docker", "info", "--format", "{{.Swarm.ControlAvailable}}"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if manager != "true":
        pytest.fail("the engine is in a Swarm but not a manager: the Swarm tests need one")
    yield
    if made:
        subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, check=False)
