"""Shared fixtures: real HTTP servers on 127.0.0.1, and a way to ask for Docker."""

from __future__ import annotations

import pytest

from tests.helpers import docker_available


@pytest.fixture(scope="session")
def require_docker() -> None:
    """Docker tests fail (not skip) without an engine: scripts/test always provides one."""
    if not docker_available():
        pytest.fail(
            "no Docker engine answers; run scripts/test (it starts one) "
            "or deselect with -m 'not docker'"
        )
