"""Shared fixtures: real HTTP servers on 127.0.0.1, and a way to ask for Docker."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def docker_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def require_docker() -> None:
    """Docker tests fail (not skip) without an engine: scripts/test always provides one."""
    if not docker_available():
        pytest.fail(
            "no Docker engine answers; run scripts/test (it starts one) "
            "or deselect with -m 'not docker'"
        )
