"""The same tests on both backends: the real ``faaso serve --backend docker|swarm``.

Each test starts faaso (a few times at most: a Swarm step is slow on a small machine) with a
state directory of its own, so its own owner id: it touches only the containers, services and
secrets it made, and removes them at the end. Steps are combined: deploy from the routes file
and from the API, invoke, scale (to 3, to 0, back from zero by a request), rolling updates
(an edit of the function's code, an API PUT, a secret rotated) with zero failed requests under
32 connections, secrets mounted, logs, remove, and adoption after a restart of faaso.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from faaso.state.paths import owner_id
from tests.helpers import (
    Load,
    Served,
    available,
    get_json,
    metric_samples,
    remove_swarm_services,
    start_serve,
    stop_serve,
    swarm_services,
    swarm_tasks_running,
    until,
)

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("require_docker")]

REGISTRY = "127.0.0.1:5000"  # started by scripts/prepare
SECRET = "greeting"

# Prints its input (the logs test reads it back), reads a secret when it is mounted, and says
# which version of its code and which FLAVOUR of its env answered. Like many images it does not
# drain on SIGTERM: the process ends at once, requests in flight or not; so a request fails
# whenever a backend stops an instance that still gets requests.
ECHO = """
import asyncio
import json
import os
import pathlib
import signal

VERSION = "1"
SECRET = pathlib.Path("/var/openfaas/secrets/greeting")
armed = []


async def handle(event, context):
    if not armed:  # replaces the runtime's graceful SIGTERM handler (on this, the main loop)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, os._exit, 0)
        armed.append(True)
    await asyncio.sleep(0.02)  # the function's own simulated work: requests stay in flight
    text = event.body.decode()
    if text.startswith("sleep "):  # a long request: "sleep SECONDS"
        await asyncio.sleep(float(text.split()[1]))  # the function's own simulated work
    print(f"echo got: {text}", flush=True)
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({
            "version": VERSION,
            "flavour": os.environ.get("FLAVOUR", ""),
            "secret": SECRET.read_text() if SECRET.exists() else None,
            "echo": text,
        }),
    }
"""


@dataclass
class Site:
    backend: str
    dir: Path
    routes: Path
    state: Path
    log_dir: Path
    starts: int = 0

    @property
    def owner(self) -> str:
        return owner_id(self.state)

    def serve(self) -> Served:
        self.starts += 1
        log = self.log_dir / f"serve-{self.starts}.log"
        return start_serve(self.routes, self.state, log, "--no-auth", "--backend", self.backend)

    def instances(self, function: str) -> set[str]:
        """The ids of what runs the function in the engine: containers (docker) or the tasks
        meant to run (swarm)."""
        if self.backend == "swarm":
            return swarm_tasks_running(self.owner, function)
        out = subprocess.run(
            [
                "docker",
                "ps",
                "-q",
                "--no-trunc",
                "--filter",
                f"label=faaso.owner={self.owner}",
                "--filter",
                f"label=faaso.function={function}",
                "--filter",
                "status=running",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return set(out.split())

    def leftovers(self, function: str) -> list[str]:
        """Anything of the function still in the engine: containers (any state), services."""
        if self.backend == "swarm":
            label = f"label=com.docker.swarm.service.name=faaso-{self.owner[:8]}-{function}"
            services = [function] if function in swarm_services(self.owner) else []
        else:
            label = f"label=faaso.function={function}"
            services = []
        argv = ["docker", "ps", "-a", "-q", "--filter", label]
        if self.backend == "docker":
            argv += ["--filter", f"label=faaso.owner={self.owner}"]
        containers = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        return services + containers.split()

    def cleanup(self) -> None:
        if self.backend == "swarm":
            remove_swarm_services(self.owner)
        ids = subprocess.run(
            ["docker", "ps", "-a", "-q", "--filter", f"label=faaso.owner={self.owner}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)


@pytest.fixture(params=["docker", "swarm"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    """A routes file with one built function (``echo``), for the backend of the param."""
    backend = str(request.param)
    if backend == "swarm":
        request.getfixturevalue("require_swarm")  # fails, never skips, without a Swarm
    conf = tmp_path / "conf"
    (conf / "echo").mkdir(parents=True)
    (conf / "echo" / "handler.py").write_text(ECHO)
    routes = conf / "routes.yml"
    registry = f"registry: {REGISTRY}\n" if backend == "swarm" else ""
    routes.write_text(
        f"""{registry}functions:
  echo:
    source: echo
    runtime: python
    scale: {{min: 1, max: 1}}  # the autoscaler off: the counts below are the API's alone
routes:
  /echo: echo
"""
    )
    found = Site(backend, conf, routes, tmp_path / "state", tmp_path)
    yield found
    found.cleanup()


def call(served: Served, method: str, path: str, doc: object) -> tuple[int, bytes]:
    status, _, body = served.request(method, path, json.dumps(doc).encode())
    return status, body


def invoke(served: Served, name: str, text: str) -> dict[str, Any]:
    status, _, body = served.request("POST", f"/function/{name}", text.encode())
    assert status == 200, body
    doc: dict[str, Any] = json.loads(body)
    assert doc["echo"] == text
    return doc


def echoes(expected: bytes) -> Any:
    """The load's check: a 200 whose JSON echoes what was sent."""

    def check(status: int, body: bytes) -> bool:
        if status != 200:
            return False
        try:
            return bool(json.loads(body)["echo"] == expected.decode())
        except (ValueError, KeyError, TypeError):
            return False

    return check


def inflight(served: Served, name: str) -> float:
    """Requests in flight to the function, as faaso's metrics say."""
    status, _, body = served.request("GET", "/metrics")
    assert status == 200
    samples = metric_samples(body.decode())
    return samples.get(
        ("faaso_function_inflight", (("function_name", f"{name}.openfaas-fn"),)), 0.0
    )


def served_by_load(load: Load, key: str, value: object) -> bool:
    """The load's last answers all carry ``key: value`` (the update reached every replica)."""
    last = [json.loads(b) for b in load.bodies[-10:]]
    return len(last) == 10 and all(doc.get(key) == value for doc in last)


def stop_keeping(site: Site, served: Served) -> None:
    """Stop faaso and leave its function running: SIGUSR2 on Docker; on Swarm the services
    outlive faaso anyway, so a plain SIGTERM."""
    if site.backend == "docker":
        served.proc.send_signal(signal.SIGUSR2)
        assert served.proc.wait(60) == 0
    else:
        assert stop_serve(served) == 0


@pytest.mark.timeout(1200)
def test_routes_file_invoke_scale_rolling_update_logs_and_adoption(site: Site) -> None:
    served = site.serve()
    try:
        # -- deploy from the routes file, invoke ------------------------------------------
        until(lambda: available(served, "echo", 1), 900, "echo available")
        assert invoke(served, "echo", "hi")["version"] == "1"
        status, _, body = served.request("POST", "/echo", b"by route")
        assert status == 200 and json.loads(body)["echo"] == "by route"
        assert len(site.instances("echo")) == 1

        # -- scale through the API: to 3, all available, all serving -----------------------
        assert call(served, "POST", "/system/scale-function/echo", {"replicas": 3})[0] == 202
        until(lambda: available(served, "echo", 3), 300, "echo at 3")
        assert len(site.instances("echo")) == 3

        # -- to 0: nothing available, nothing runs; a request wakes it ---------------------
        assert call(served, "POST", "/system/scale-function/echo", {"replicas": 0})[0] == 202
        until(lambda: available(served, "echo", 0), 120, "echo at 0")
        until(lambda: not site.instances("echo"), 120, "no instance running at 0")
        status, headers, body = served.request("POST", "/function/echo", b"wake up")
        assert status == 200 and json.loads(body)["echo"] == "wake up"
        assert headers.get("x-faaso-cold-start") in ("paused", "cold")
        until(lambda: available(served, "echo", 1), 120, "echo woken to min")
        # The wake ends the API's 0: the restart below adopts what runs (not back to zero).

        # -- a rolling update from the routes file under 32 connections: no request fails --
        load = Load(served.port, "POST", "/function/echo", echoes(b"load"), body=b"load")
        load.start()
        try:
            until(lambda: load.ok > 200, 120, "load to flow")
            before = site.instances("echo")
            handler = site.dir / "echo" / "handler.py"
            handler.write_text(handler.read_text().replace('VERSION = "1"', 'VERSION = "2"'))
            site.routes.write_text(site.routes.read_text())  # "save the routes file" too
            until(lambda: served_by_load(load, "version", "2"), 600, "version 2 served")
            until(
                lambda: (now := site.instances("echo")) and not now & before,
                300,
                "the old instance gone",
            )
            seen = load.ok
            until(lambda: load.ok > seen + 200, 120, "load after the update")
        finally:
            outcomes = load.stop()
        assert load.failures() == {}, outcomes
        assert load.ok > 400

        # -- logs: the function's output --------------------------------------------------
        invoke(served, "echo", "for the logs")

        def logged() -> bool:
            status, _, body = served.request("GET", "/system/logs?name=echo&tail=500")
            return status == 200 and b"echo got: for the logs" in body

        until(logged, 60, "the function's output in /system/logs")
        _, _, body = served.request("GET", "/system/logs?name=echo&tail=1")
        first = json.loads(body.splitlines()[0])
        assert first["name"] == "echo"
        running = site.instances("echo")
        assert len(running) == 1
    finally:
        stop_keeping(site, served)

    # -- adoption after a restart: the same instances keep serving -------------------------
    assert site.instances("echo") == running, "the function stopped with faaso"
    served = site.serve()
    try:
        until(lambda: available(served, "echo", 1), 300, "echo adopted")
        assert site.instances("echo") == running
        assert invoke(served, "echo", "again")["version"] == "2"
        assert "adopted" in served.log_text()
    finally:
        assert stop_serve(served) == 0


@pytest.mark.timeout(1200)
def test_api_deploy_secrets_rotated_update_and_remove(site: Site) -> None:
    served = site.serve()
    try:
        until(lambda: available(served, "echo", 1), 900, "echo available (its image built)")
        _, doc = get_json(served, "/system/function/echo")
        image = str(doc["image"])

        # -- a secret, and a function deployed through the API that reads it ---------------
        assert call(served, "POST", "/system/secrets", {"name": SECRET, "value": "v1"})[0] == 200
        deployment = {
            "service": "reader",
            "image": image,
            "secrets": [SECRET],
            "envVars": {"FLAVOUR": "a"},
            "labels": {"com.openfaas.scale.min": "2", "com.openfaas.scale.max": "2"},
            "requests": {"cpu": "100m", "memory": "32Mi"},
            "limits": {"memory": "256Mi"},
        }
        status, body = call(served, "POST", "/system/functions", deployment)
        assert status == 202, body
        until(lambda: available(served, "reader", 2), 300, "reader available")
        answer = invoke(served, "reader", "hello")
        assert (answer["secret"], answer["flavour"]) == ("v1", "a")
        if site.backend == "swarm":  # requests are the service's reservations
            resources = swarm_services(site.owner)["reader"]["Spec"]["TaskTemplate"]["Resources"]
            assert resources["Reservations"] == {"NanoCPUs": 100_000_000, "MemoryBytes": 32 << 20}
            assert resources["Limits"] == {"MemoryBytes": 256 << 20}

        # -- rotate the secret, then an API update, under 32 connections: nothing fails -----
        load = Load(served.port, "POST", "/function/reader", echoes(b"load"), body=b"load")
        load.start()
        try:
            until(lambda: load.ok > 200, 120, "load to flow")
            before = site.instances("reader")
            status, body = call(served, "PUT", "/system/secrets", {"name": SECRET, "value": "v2"})
            assert status == 202, body
            until(lambda: served_by_load(load, "secret", "v2"), 600, "the new secret served")
            until(lambda: not site.instances("reader") & before, 300, "the old instances gone")
            before = site.instances("reader")
            status, body = call(
                served, "PUT", "/system/functions", {**deployment, "envVars": {"FLAVOUR": "b"}}
            )
            assert status == 202, body
            until(lambda: served_by_load(load, "flavour", "b"), 600, "the new env served")
            until(lambda: not site.instances("reader") & before, 300, "the old instances gone")
            seen = load.ok
            until(lambda: load.ok > seen + 200, 120, "load after the updates")
        finally:
            outcomes = load.stop()
        assert load.failures() == {}, outcomes
        assert load.ok > 400
        answer = invoke(served, "reader", "after")
        assert (answer["secret"], answer["flavour"]) == ("v2", "b")

        # -- a long request in flight while its instance is replaced still finishes ---------
        # (Swarm's own stop of the old task would end it: faaso holds the task until drained.)
        slow: list[tuple[int, dict[str, str], bytes]] = []
        caller = threading.Thread(
            target=lambda: slow.append(served.request("POST", "/function/reader", b"sleep 12"))
        )
        caller.start()
        until(lambda: inflight(served, "reader") >= 1, 30, "the long request in flight")
        before = site.instances("reader")
        status, body = call(
            served, "PUT", "/system/functions", {**deployment, "envVars": {"FLAVOUR": "c"}}
        )
        assert status == 202, body
        until(lambda: not site.instances("reader") & before, 300, "the old instances gone")
        caller.join(60)
        assert slow and slow[0][0] == 200, slow
        assert json.loads(slow[0][2])["echo"] == "sleep 12"

        # -- remove through the API: nothing of it is left in the engine --------------------
        status, body = call(served, "DELETE", "/system/functions", {"functionName": "reader"})
        assert status == 202, body
        until(lambda: not site.leftovers("reader"), 30, "reader gone from the engine")
        assert get_json(served, "/system/function/reader")[0] == 404
        assert call(served, "DELETE", "/system/secrets", {"name": SECRET})[0] == 200
        assert available(served, "echo", 1), "the other function was touched"
    finally:
        assert stop_serve(served) == 0
