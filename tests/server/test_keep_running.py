"""A restart without cold starts: SIGUSR2 stops ``faaso serve`` and leaves its containers
running; the next start adopts them (the same containers serve, none is started)."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from faaso.state.paths import owner_id
from tests.helpers import (
    READY_DEADLINE,
    ROOT,
    docker_ps,
    start_serve,
    stop_serve,
    wait_ready,
)

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("require_docker"),
    pytest.mark.timeout(600),
]


def events(log: Path, name: str) -> list[dict[str, object]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("event") == name:
            found.append(doc)
    return found


def test_sigusr2_stops_and_the_next_start_adopts_the_containers(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "conf" / "functions" / "sum", tmp_path / "sum")
    config = tmp_path / "routes.yml"
    config.write_text(
        "functions:\n  sum: {source: sum, scale: {min: 2, max: 2}}\nroutes:\n  /sum: sum\n"
    )
    state = tmp_path / "state"
    owner = f"label=faaso.owner={owner_id(state)}"
    first = start_serve(config, state, tmp_path / "first.log", "--no-watch")
    try:
        wait_ready(first, READY_DEADLINE)
        before = docker_ps(owner, "status=running")
        assert len(before) == 2
        first.proc.send_signal(signal.SIGUSR2)
        assert first.proc.wait(120) == 0
    finally:
        stop_serve(first)
    assert docker_ps(owner, "status=running") == before, "the containers were stopped"
    assert events(first.log, "instance.retire") == []

    second = start_serve(config, state, tmp_path / "second.log", "--no-watch")
    try:
        wait_ready(second, READY_DEADLINE)
        status, _, body = second.request("GET", "/sum?a=2&b=3")
        assert (status, json.loads(body)) == (200, 5)
        assert docker_ps(owner, "status=running") == before  # the same containers serve
        adopted = sorted(str(e["container"]) for e in events(second.log, "instance.adopted"))
        assert adopted == before
        assert events(second.log, "instance.started") == []  # no cold start
    finally:
        assert stop_serve(second) == 0
    # a plain stop (SIGTERM) still stops them
    assert docker_ps(owner) == []
