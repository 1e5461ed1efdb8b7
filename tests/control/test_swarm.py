"""The Swarm backend end to end: the real ``faaso serve --backend swarm`` on a one-node Swarm.

Each test's faaso has its own state directory, so its own owner id: it touches only the
services and secrets it made, and removes them at the end.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from faaso.state.paths import owner_id
from tests.helpers import (
    ROOT,
    available,
    get_json,
    remove_swarm_services,
    start_serve,
    stop_serve,
    swarm_services,
    swarm_tasks_running,
    until,
)

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("require_swarm"),
    pytest.mark.timeout(600),
]

REGISTRY = "127.0.0.1:5000"  # started by scripts/prepare


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A routes file with a built function and one whose image does not exist."""
    conf = tmp_path / "conf"
    conf.mkdir()
    shutil.copytree(ROOT / "conf" / "functions" / "sum", conf / "sum")
    routes = conf / "routes.yml"
    routes.write_text(
        f"""
backend: swarm
registry: {REGISTRY}
functions:
  sum:
    source: sum
    runtime: python
    read_only_root: true
    labels: {{team: web}}
    scale: {{min: 1, max: 1}}  # the autoscaler off: the counts below are the API's alone
  ghost:
    image: faaso/does-not-exist-{tmp_path.name}:1
routes:
  /sum: sum
"""
    )
    state = tmp_path / "state"
    yield routes, state
    remove_swarm_services(owner_id(state))


def test_swarm_routes_file_api_scale_errors_adoption_remove(
    site: tuple[Path, Path], tmp_path: Path
) -> None:
    routes, state = site
    owner = owner_id(state)
    served = start_serve(routes, state, tmp_path / "serve.log", "--no-auth")
    try:
        # -- deploy from the routes file, invoke -------------------------------------------
        until(lambda: available(served, "sum", 1), 600, "sum available")
        status, _, body = served.request("GET", "/sum?a=2&b=3")
        assert (status, body) == (200, b"5")
        services = swarm_services(owner)
        assert set(services) == {"sum", "ghost"}
        spec = services["sum"]["Spec"]
        assert spec["Labels"]["com.openfaas.function"] == "sum"
        container = spec["TaskTemplate"]["ContainerSpec"]
        assert container["Image"].startswith(f"{REGISTRY}/faaso/sum:")  # pushed, pullable
        assert container["ReadOnly"] is True
        assert container["Mounts"][0]["Target"] == "/tmp"
        assert container["Labels"]["team"] == "web"
        assert "/_/health" in container["Healthcheck"]["Test"][1]
        assert spec["UpdateConfig"]["Order"] == "start-first"
        assert spec["UpdateConfig"]["FailureAction"] == "rollback"
        assert spec["TaskTemplate"]["RestartPolicy"]["Condition"] == "any"
        _, info = get_json(served, "/system/info")
        assert info["provider"]["orchestration"] == "swarm"

        # -- a task error surfaces (no silent 202) -------------------------------------------
        def ghost_error() -> str:
            _, doc = get_json(served, "/system/function/ghost")
            return str((doc or {}).get("error") or "")

        error = until(ghost_error, 120, "ghost's task error")
        assert "No such image" in error
        status, health = get_json(served, "/healthz")
        assert status == 503
        ghost = next(s for s in health["not_ready"] if s["function"] == "ghost")
        assert ghost["phase"] == "failed" and "No such image" in ghost["error"]

        # -- scale through the API: the service's replicas, all available ----------------------
        status, _, _ = served.request(
            "POST", "/system/scale-function/sum", json.dumps({"replicas": 3}).encode()
        )
        assert status == 202
        until(lambda: available(served, "sum", 3), 300, "sum at 3")
        assert swarm_services(owner)["sum"]["Spec"]["Mode"]["Replicated"]["Replicas"] == 3
        bodies = {served.request("GET", "/sum?a=1&b=1")[2] for _ in range(12)}
        assert bodies == {b"2"}

        # -- logs come from the service's tasks -------------------------------------------
        status, _, body = served.request("GET", "/system/logs?name=sum&tail=50")
        assert status == 200
        lines = [json.loads(line) for line in body.splitlines()]
        assert lines and all(line["name"] == "sum" for line in lines)
        assert {line["instance"].split(".")[0] for line in lines} == {"sum"}

        # -- deploy from the API (a prebuilt image: the one the registry has) ------------------
        image = container["Image"].split("@")[0]
        deploy = {"service": "sum2", "image": image, "labels": {"com.openfaas.scale.min": "1"}}
        status, _, body = served.request("POST", "/system/functions", json.dumps(deploy).encode())
        assert status == 202, body
        until(lambda: available(served, "sum2", 1), 300, "sum2 available")
        status, _, body = served.request("GET", "/function/sum2?a=20&b=22")
        assert (status, body) == (200, b"42")
        assert "sum2" in swarm_services(owner)

        # -- remove through the API: the service goes --------------------------------------
        status, _, _ = served.request(
            "DELETE", "/system/functions", json.dumps({"functionName": "sum2"}).encode()
        )
        assert status == 202
        until(lambda: "sum2" not in swarm_services(owner), 60, "sum2's service removed")
        before = swarm_tasks_running(owner, "sum")
        assert len(before) == 3
    finally:
        assert stop_serve(served) == 0

    # -- Swarm holds the state: the service keeps running while faaso is away ------------------
    assert swarm_tasks_running(owner, "sum") == before

    # -- adoption after a restart: the same tasks serve, nothing is redeployed -----------------
    served = start_serve(routes, state, tmp_path / "serve2.log", "--no-auth")
    try:
        until(lambda: available(served, "sum", 3), 120, "sum adopted")
        assert swarm_tasks_running(owner, "sum") == before
        assert "service.adopted" in served.log_text()
        status, _, body = served.request("GET", "/sum?a=2&b=5")
        assert (status, body) == (200, b"7")

        # -- a function removed from the routes file: its service goes -----------------------
        routes.write_text(routes.read_text().replace("  ghost:\n", "  unused:\n", 1))
        text = routes.read_text()
        routes.write_text(text[: text.index("  unused:")] + text[text.index("routes:") :])
        until(lambda: "ghost" not in swarm_services(owner), 120, "ghost's service removed")
        assert "sum" in swarm_services(owner)
    finally:
        assert stop_serve(served) == 0


def test_swarm_reload_refuses_a_backend_change(site: tuple[Path, Path], tmp_path: Path) -> None:
    """The backend changes only with a restart: a reload that names another one is refused."""
    routes, state = site
    routes.write_text(
        routes.read_text().replace("  ghost:\n    image:", "  ghost:\n    replicas: 0\n    image:")
    )
    served = start_serve(routes, state, tmp_path / "serve.log", "--no-auth")
    try:
        until(lambda: available(served, "sum", 1), 600, "sum available")
        routes.write_text(routes.read_text().replace("backend: swarm", "backend: docker"))

        def reload_error() -> str:
            _, doc = get_json(served, "/healthz")
            return str(((doc or {}).get("reload") or {}).get("error") or "")

        assert "only with a restart" in until(reload_error, 60, "the reload's error")
        status, _, body = served.request("GET", "/sum?a=2&b=3")
        assert (status, body) == (200, b"5")
    finally:
        assert stop_serve(served) == 0
