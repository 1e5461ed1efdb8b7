"""No single gateway: two ``faaso serve --backend swarm`` of one cluster on a one-node Swarm.

Different ports and state directories, one ``swarm: {cluster: NAME}``: a function deployed
through one is listed and served by the other, a scale through one is seen by both, a remove
through one is not undone by the other, and stopping one leaves the other serving.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from faaso.state.paths import cluster_owner_id
from tests.helpers import (
    ROOT,
    Served,
    get_json,
    http_request,
    remove_swarm_services,
    start_serve,
    stop_serve,
    swarm_services,
    until,
)

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("require_swarm"),
    pytest.mark.timeout(900),
]

REGISTRY = "127.0.0.1:5000"  # started by scripts/prepare


def function(served: Served, name: str) -> dict[str, Any]:
    status, doc = get_json(served, f"/system/function/{name}")
    return doc if status == 200 and isinstance(doc, dict) else {}


def listed(served: Served) -> set[str]:
    status, doc = get_json(served, "/system/functions")
    return {f["name"] for f in doc} if status == 200 and isinstance(doc, list) else set()


def at(served: Served, name: str, replicas: int) -> bool:
    doc = function(served, name)
    return doc.get("replicas") == replicas and doc.get("availableReplicas") == replicas


def cluster_site(tmp_path: Path, function: str, extra: str = "") -> Iterator[tuple[Path, str]]:
    """A cluster routes file (a cluster name of this test's own) with ``function`` built from
    ``conf/<function>``; yields it and the cluster's owner id, then removes its services."""
    name = "t" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]
    routes = tmp_path / "conf" / "routes.yml"
    routes.write_text(
        f"""
backend: swarm
registry: {REGISTRY}
swarm: {{cluster: {name}}}
functions:
  {function}:
    source: {function}
    runtime: python
    scale: {{min: 1, max: 1}}
{extra}"""
    )
    owner = cluster_owner_id(name)
    yield routes, owner
    remove_swarm_services(owner)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    (tmp_path / "conf").mkdir()
    shutil.copytree(ROOT / "conf" / "functions" / "sum", tmp_path / "conf" / "sum")
    yield from cluster_site(tmp_path, "sum", "routes:\n  /sum: sum\n")


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


# -- secrets shared by the cluster ----------------------------------------------------------

READER = """
from pathlib import Path


def handle(event, context):
    path = Path("/var/openfaas/secrets") / event.query.get("name", "-")
    if not path.is_file():
        return {"statusCode": 404, "body": "no such secret file"}
    return path.read_text()
"""


@pytest.fixture
def secret_cluster(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    (tmp_path / "conf" / "reader").mkdir(parents=True)
    (tmp_path / "conf" / "reader" / "handler.py").write_text(READER)
    yield from cluster_site(tmp_path, "reader")


def secrets_of(served: Served) -> set[str]:
    status, doc = get_json(served, "/system/secrets")
    return {s["name"] for s in doc} if status == 200 and isinstance(doc, list) else set()


def swarm_secret_ids(owner: str) -> set[str]:
    out = subprocess.run(
        ["docker", "secret", "ls", "-q", "--filter", f"label=faaso.owner={owner}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def task_ids(service_id: str) -> set[str]:
    """Every task of the service Swarm still knows, the ended ones too."""
    out = subprocess.run(
        ["docker", "service", "ps", "-q", "--no-trunc", service_id],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def mounted_secret(service: dict[str, Any], key: str = "Spec") -> str:
    (secret,) = service[key]["TaskTemplate"]["ContainerSpec"]["Secrets"]
    return str(secret["SecretID"])


def updates_logged(*members: Served, function: str, event: str = "service.updated") -> int:
    """How many times the members updated the function's service (their JSON logs), or
    logged another event about it."""
    count = 0
    for served in members:
        for line in served.log_text().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("event") == event and doc.get("function") == function:
                count += 1
    return count


def test_secrets_are_shared_by_the_cluster(
    secret_cluster: tuple[Path, str], tmp_path: Path
) -> None:
    routes, owner = secret_cluster
    a = start_serve(routes, tmp_path / "state-a", tmp_path / "a.log", "--no-auth")
    b: Served | None = None
    try:
        until(lambda: at(a, "reader", 1), 600, "reader available through a")
        b = start_serve(routes, tmp_path / "state-b", tmp_path / "b.log", "--no-auth")
        until(lambda: at(b, "reader", 1), 300, "reader available through b")

        # -- created through a: a Swarm secret at once, listed by b --------------------------
        body = json.dumps({"name": "token", "value": "one"}).encode()
        status, _, answer = a.request("POST", "/system/secrets", body)
        assert status == 200, answer
        assert len(swarm_secret_ids(owner)) == 1  # before any function uses it
        until(lambda: secrets_of(b) == {"token"}, 30, "token listed by b")
        assert secrets_of(a) == {"token"}
        assert not any((tmp_path / "state-b" / "function-secrets").iterdir())  # no local value

        # -- deployed through b, which never had the value: starts and reads it --------------
        image = swarm_services(owner)["reader"]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        deploy = {
            "service": "vault",
            "image": image.split("@")[0],
            "secrets": ["token"],
            "labels": {"com.openfaas.scale.min": "1", "com.openfaas.scale.max": "1"},
        }
        status, _, answer = b.request("POST", "/system/functions", json.dumps(deploy).encode())
        assert status == 202, answer
        until(lambda: at(b, "vault", 1), 300, "vault available through b")
        assert http_request(b.port, "/function/vault?name=token") == (200, b"one")
        until(lambda: at(a, "vault", 1), 120, "vault available through a")
        assert http_request(a.port, "/function/vault?name=token") == (200, b"one")
        service = swarm_services(owner)["vault"]
        first = mounted_secret(service)
        tasks_before = task_ids(service["ID"])
        updates_before = updates_logged(a, b, function="vault")
        followed_before = updates_logged(a, b, function="vault", event="service.followed")

        # -- rotated through a: b serves the new value; the service rolled once --------------
        body = json.dumps({"name": "token", "value": "two"}).encode()
        status, _, answer = a.request("PUT", "/system/secrets", body)
        assert status == 202, answer
        until(
            lambda: http_request(b.port, "/function/vault?name=token") == (200, b"two"),
            300,
            "the new value through b",
        )
        until(
            lambda: http_request(a.port, "/function/vault?name=token") == (200, b"two"),
            60,
            "the new value through a",
        )
        rotated = swarm_services(owner)["vault"]
        second = mounted_secret(rotated)
        assert second != first
        assert mounted_secret(rotated, "PreviousSpec") == first  # the last update was this one
        assert updates_logged(a, b, function="vault") == updates_before + 1
        # ... and the other member came to the same fingerprint, and took the service as it was
        until(
            lambda: (
                updates_logged(a, b, function="vault", event="service.followed")
                == followed_before + 1
            ),
            30,
            "the other member following the rotation",
        )
        new_tasks = task_ids(service["ID"]) - tasks_before
        assert len(new_tasks) == 1, new_tasks
        # no back-and-forth afterwards: watched for 10 s (bounded), nothing moves
        end = time.monotonic() + 10
        while time.monotonic() < end:
            now = swarm_services(owner)["vault"]
            assert mounted_secret(now) == second
            assert now["Spec"] == rotated["Spec"]
            assert task_ids(service["ID"]) - tasks_before == new_tasks
            time.sleep(0.5)  # poll with a deadline
        assert updates_logged(a, b, function="vault") == updates_before + 1

        # -- delete while in use: refused on both, naming the function -----------------------
        body = json.dumps({"name": "token"}).encode()
        for member in (a, b):
            status, _, answer = member.request("DELETE", "/system/secrets", body)
            assert status == 409, answer
            assert "vault" in json.loads(answer)["error"]
        assert secrets_of(a) == secrets_of(b) == {"token"}

        # -- after the function is removed: gone from both lists and from Swarm --------------
        status, _, _ = b.request(
            "DELETE", "/system/functions", json.dumps({"functionName": "vault"}).encode()
        )
        assert status == 202
        until(lambda: "vault" not in listed(a), 60, "vault gone from a")
        assert "vault" not in swarm_services(owner)
        assert secrets_of(a) == {"token"}  # the secret outlives its last user
        status, _, answer = a.request("DELETE", "/system/secrets", body)
        assert status == 200, answer
        assert secrets_of(a) == set()
        until(lambda: secrets_of(b) == set(), 30, "token gone from b's list")
        assert swarm_secret_ids(owner) == set()
        status, _, _ = b.request("DELETE", "/system/secrets", body)
        assert status == 404
    finally:
        for served in (a, b):
            if served is not None:
                assert stop_serve(served) == 0
