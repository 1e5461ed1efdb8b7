"""No single gateway: two ``faaso serve --backend swarm`` of one cluster on a one-node Swarm.

Different ports and state directories, one ``swarm: {cluster: NAME}``: a function deployed
through one is listed and served by the other, a scale through one is seen by both, a remove
through one is not undone by the other, and stopping one leaves the other serving.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from faaso.state.paths import cluster_owner_id
from tests.helpers import (
    ROOT,
    Served,
    http_request,
    remove_swarm_services,
    start_serve,
    stop_serve,
    swarm_services,
)

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("require_swarm"),
    pytest.mark.timeout(900),
]

REGISTRY = "127.0.0.1:5000"  # started by scripts/prepare


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(0.3)  # poll with a deadline
    pytest.fail(f"{what}: not within {timeout} s (last: {last!r})")


def get_json(served: Served, path: str) -> tuple[int, Any]:
    if served.proc.poll() is not None:
        pytest.fail(f"faaso exited with {served.proc.returncode}:\n{served.log_text()[-4000:]}")
    try:
        status, _, body = served.request("GET", path)
    except OSError:
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def function(served: Served, name: str) -> dict[str, Any]:
    status, doc = get_json(served, f"/system/function/{name}")
    return doc if status == 200 and isinstance(doc, dict) else {}


def listed(served: Served) -> set[str]:
    status, doc = get_json(served, "/system/functions")
    return {f["name"] for f in doc} if status == 200 and isinstance(doc, list) else set()


def at(served: Served, name: str, replicas: int) -> bool:
    doc = function(served, name)
    return doc.get("replicas") == replicas and doc.get("availableReplicas") == replicas


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    conf = tmp_path / "conf"
    conf.mkdir()
    shutil.copytree(ROOT / "conf" / "functions" / "sum", conf / "sum")
    name = "t" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]
    routes = conf / "routes.yml"
    routes.write_text(
        f"""
backend: swarm
registry: {REGISTRY}
swarm: {{cluster: {name}}}
functions:
  sum:
    source: sum
    runtime: python
    scale: {{min: 1, max: 1}}
routes:
  /sum: sum
"""
    )
    owner = cluster_owner_id(name)
    yield routes, owner
    remove_swarm_services(owner)


def test_two_faaso_servers_serve_one_cluster(cluster: tuple[Path, str], tmp_path: Path) -> None:
    routes, owner = cluster
    a = start_serve(routes, tmp_path / "state-a", tmp_path / "a.log", "--no-auth")
    b: Served | None = None
    try:
        until(lambda: at(a, "sum", 1), 600, "sum available through a")
        b = start_serve(routes, tmp_path / "state-b", tmp_path / "b.log", "--no-auth")
        until(lambda: at(b, "sum", 1), 300, "sum available through b")
        assert "service.adopted" in b.log_text()  # the same service, not a second one
        assert set(swarm_services(owner)) == {"sum"}
        assert http_request(b.port, "/sum?a=2&b=3") == (200, b"5")

        # -- deployed through a: listed and served by b ------------------------------------
        image = swarm_services(owner)["sum"]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        deploy = {
            "service": "sum2",
            "image": image.split("@")[0],
            "labels": {"com.openfaas.scale.min": "1", "com.openfaas.scale.max": "4"},
            "annotations": {"team": "web"},
        }
        status, _, body = a.request("POST", "/system/functions", json.dumps(deploy).encode())
        assert status == 202, body
        until(lambda: at(a, "sum2", 1), 300, "sum2 available through a")
        until(lambda: "sum2" in listed(b), 60, "sum2 listed by b")
        until(lambda: at(b, "sum2", 1), 120, "sum2 available through b")
        assert http_request(b.port, "/function/sum2?a=20&b=22") == (200, b"42")
        assert function(b, "sum2")["annotations"] == {"team": "web"}  # rebuilt from the record
        labels = swarm_services(owner)["sum2"]["Spec"]["Labels"]
        assert labels["faaso.origin"] == "api"
        assert json.loads(labels["faaso.deployment"])["service"] == "sum2"

        # -- scaled through b: seen by both, in the service ----------------------------------
        status, _, _ = b.request(
            "POST", "/system/scale-function/sum2", json.dumps({"replicas": 2}).encode()
        )
        assert status == 202
        until(lambda: at(b, "sum2", 2), 300, "sum2 at 2 through b")
        until(lambda: at(a, "sum2", 2), 120, "sum2 at 2 through a")
        assert swarm_services(owner)["sum2"]["Spec"]["Mode"]["Replicated"]["Replicas"] == 2

        # -- removed through b: gone from a, and a does not bring it back --------------------
        status, _, _ = b.request(
            "DELETE", "/system/functions", json.dumps({"functionName": "sum2"}).encode()
        )
        assert status == 202
        until(lambda: "sum2" not in listed(a), 60, "sum2 gone from a")
        assert "sum2" not in swarm_services(owner)
        assert "cluster.synced" in a.log_text()
        assert set(swarm_services(owner)) == {"sum"}

        # -- a stops: b keeps serving, no request fails --------------------------------------
        results: list[tuple[int, bytes]] = []
        done = threading.Event()

        def load() -> None:
            while not done.is_set():
                results.append(http_request(b.port, "/sum?a=1&b=1"))

        worker = threading.Thread(target=load)
        worker.start()
        try:
            until(lambda: len(results) >= 20, 60, "requests to b before a stops")
            assert stop_serve(a) == 0
            seen = len(results)
            until(lambda: len(results) >= seen + 50, 60, "requests to b after a stopped")
        finally:
            done.set()
            worker.join()
        assert results and all(r == (200, b"2") for r in results), [
            r for r in results if r != (200, b"2")
        ][:5]
        assert "sum" in swarm_services(owner)  # the service outlives the faaso that made it
        assert at(b, "sum", 1)
    finally:
        for served in (a, b):
            if served is not None:
                assert stop_serve(served) == 0
