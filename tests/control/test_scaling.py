"""Elastic functions with a real engine: min replicas, the autoscaler, alerts, scale to zero and
back, and the precedence of API scale over file edits.

The autoscaler's windows are shortened through the ``scale:`` block so each test runs in seconds;
every load is bounded in connections, count and time.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from faaso.config.routes_file import load_config
from faaso.server.app import SUPERVISOR, create_app
from faaso.state.paths import owner_id
from tests.helpers import (
    READY_DEADLINE,
    FastTestServer,
    containers_of,
    eventually,
    server_app,
    start_serve,
    stop_serve,
    wait_ready,
)

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("require_docker"),
    pytest.mark.timeout(300),
]

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]

# One handler for every function here (one image): sleeps START_DELAY seconds before it serves
# (a slow cold start), and ?s= seconds per request (load that keeps requests in flight).
# ?c= seconds of busy CPU per request (load for the cpu scale type).
HANDLER = """
import os, time

time.sleep(float(os.environ.get("START_DELAY", "0")))  # a slow start, as the test asks

def handle(event, context):
    time.sleep(float(event.query.get("s", "0")))  # the function's own work: a slow request
    end = time.process_time() + float(event.query.get("c", "0"))
    while time.process_time() < end:
        pass
    return "ok"
"""
FAST = "tick: 0.25, stable_window: 3, panic_window: 1, scale_down_delay: 1"


@dataclass
class Site:
    config: Path
    state: Path
    client: TestClient[Any, Any]

    async def call(
        self, method: str, path: str, body: Any = None
    ) -> tuple[int, Any, dict[str, str]]:
        data = json.dumps(body).encode() if body is not None else None
        async with self.client.session.request(
            method, self.client.make_url(path), data=data
        ) as resp:
            text = await resp.text()
            try:
                parsed: Any = json.loads(text)
            except ValueError:
                parsed = text
            return resp.status, parsed, dict(resp.headers)

    def containers(self, function: str, *, paused: bool | None = None) -> list[str]:
        argv = ["docker", "ps", "--format", "{{.Names}} {{.State}}"]
        argv += ["--filter", f"label=faaso.owner={owner_id(self.state)}"]
        argv += ["--filter", f"label=faaso.function={function}"]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        rows = [line.split() for line in out.splitlines() if line.strip()]
        return sorted(
            name for name, state in rows if paused is None or (state == "paused") == paused
        )

    def status(self, function: str) -> dict[str, Any]:
        supervisor = server_app(self.client)[SUPERVISOR]
        return next(s for s in supervisor.statuses() if s.function == function).to_json()


def write_config(path: Path, functions: dict[str, str], routes: dict[str, str]) -> None:
    """``functions``: name -> the rest of its flow mapping (after source and runtime)."""
    lines = ["functions:"]
    for name, extra in functions.items():
        rest = f", {extra}" if extra else ""
        lines.append(f"  {name}: {{source: fn, runtime: python{rest}}}")
    lines.append("routes:" if routes else "routes: {}")
    lines += [f"  {prefix}: {name}" for prefix, name in routes.items()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)  # atomic, as editors do


@pytest.fixture
async def site_factory(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Site]]]:
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "handler.py").write_text(HANDLER)
    sites: list[Site] = []

    async def make(functions: dict[str, str], routes: dict[str, str] | None = None) -> Site:
        config = tmp_path / "routes.yml"
        write_config(config, functions, routes or {})
        state = tmp_path / "state"
        app = create_app(load_config(config), state, pull=False, auth=False)
        client = await aiohttp_client(FastTestServer(app))
        site = Site(config, state, client)
        sites.append(site)

        async def ready() -> bool:
            return (await site.call("GET", "/healthz"))[0] == 200

        await eventually(ready, 240, "all functions ready")
        return site

    yield make
    for site in sites:
        await site.client.close()


async def _load(
    site: Site,
    path: str,
    connections: int,
    seconds: float,
    until: Callable[[], bool],
    *,
    think: float = 0.0,
) -> list[int]:
    """``connections`` clients calling ``path`` in a loop until ``until()`` or ``seconds``,
    each waiting ``think`` seconds between its requests (a light load on many connections)."""
    deadline = time.monotonic() + seconds
    statuses: list[int] = []

    async def client() -> None:
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline and not until():
                async with session.get(site.client.make_url(path)) as resp:
                    await resp.read()
                    statuses.append(resp.status)
                if think:
                    await asyncio.sleep(think)  # the client's think time, part of the load

    await asyncio.gather(*(client() for _ in range(connections)))
    return statuses


async def test_min_replicas_after_deploy_and_precedence(site_factory: Any) -> None:
    site = await site_factory({"two": "scale: {min: 2, max: 4}"})
    # file: min 2 runs and reports 2 right after start
    assert len(site.containers("two")) == 2
    _, fn, _ = await site.call("GET", "/system/function/two")
    assert (fn["replicas"], fn["availableReplicas"]) == (2, 2)
    # started at min by the deploy itself, not raised to it by the autoscaler afterwards
    assert site.status("two")["scaled_because"] == "deployed"
    # API: the label's min is reported right after the deploy
    image = server_app(site.client)[SUPERVISOR].controller("two").image  # type: ignore[union-attr]
    status, body, _ = await site.call(
        "POST",
        "/system/functions",
        {"service": "api", "image": image, "labels": {"com.openfaas.scale.min": "2"}},
    )
    assert status == 202, body
    _, fn, _ = await site.call("GET", "/system/function/api")
    assert (fn["replicas"], fn["availableReplicas"]) == (2, 2)
    listed = {f["name"]: f for f in (await site.call("GET", "/system/functions"))[1]}
    assert listed["api"]["replicas"] == 2
    assert site.status("api")["scaled_because"] == "deployed"
    # a bad label is a 400 naming the key and the value
    status, body, _ = await site.call(
        "POST",
        "/system/functions",
        {"service": "bad", "image": image, "labels": {"com.openfaas.scale.max": "lots"}},
    )
    assert status == 400 and "com.openfaas.scale.max" in body["error"] and "lots" in body["error"]

    # precedence: an API scale sets the replicas now...
    assert (await site.call("POST", "/system/scale-function/two", {"replicas": 3}))[0] == 202

    async def three() -> bool:  # 202: accepted, the instances start in the background
        return len(site.containers("two")) == 3 and site.status("two")["available"] == 3

    await eventually(three, 120, "the API's replicas")
    # ...and an edit of the file's scale settings wins over that older override
    write_config(site.config, {"two": "scale: {min: 1, max: 4}, replicas: 1"}, {})

    def stored() -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((site.state / "deployments.json").read_text())
        return doc

    async def file_won() -> bool:
        return "two" not in stored()["replicas"] and site.status("two")["replicas"] == 1

    await eventually(file_won, 120, "the file's replicas to win over the API override")

    async def one() -> bool:  # the surplus instances drain, then stop
        return len(site.containers("two")) == 1

    await eventually(one, 60, "the surplus instances to stop")
    # an override again, then --reset (DELETE) drops it: the file's count applies
    assert (await site.call("POST", "/system/scale-function/two", {"replicas": 2}))[0] == 202

    async def two() -> bool:
        return len(site.containers("two")) == 2 and site.status("two")["available"] == 2

    await eventually(two, 120, "the API's replicas again")
    status, body, _ = await site.call("DELETE", "/system/scale-function/two")
    assert status == 202, body

    async def reset() -> bool:
        return len(site.containers("two")) == 1

    await eventually(reset, 60, "the reset to bring back the file's replicas")
    assert "two" not in stored()["replicas"]


async def test_autoscaler_up_and_down_under_load_without_failures(site_factory: Any) -> None:
    site = await site_factory(
        {
            "elastic": "scale: {type: capacity, target: 4, target_proportion: 1, max: 3, "
            + FAST
            + "}",
            "fixed": f"scale: {{type: capacity, target: 4, min: 1, max: 1, {FAST}}}",
        },
        {"/elastic": "elastic", "/fixed": "fixed"},
    )
    assert len(site.containers("elastic")) == 1

    # Checked by the load's clients between requests: in-process state only (a docker ps here
    # would block the event loop that serves the load and runs the autoscaler).
    def scaled_up() -> bool:
        status = site.status("elastic")
        return bool(status["replicas"] == 3 and status["available"] == 3)

    # 32 connections keep ~16 requests in flight on each function: 4 per replica wants 3 (max)
    elastic = _load(site, "/elastic?s=0.1", 16, 60, scaled_up)
    fixed = _load(site, "/fixed?s=0.1", 16, 60, scaled_up)
    up_statuses, fixed_statuses = await asyncio.gather(elastic, fixed)
    assert scaled_up(), site.status("elastic")
    assert len(site.containers("elastic")) == 3
    assert set(up_statuses) == {200} and set(fixed_statuses) == {200}
    status = site.status("elastic")
    assert status["autoscaler"]["last_decision"]["to"] >= 2
    assert "capacity" in status["autoscaler"]["last_decision"]["why"]
    # min == max: autoscaling off, whatever the load...
    assert len(site.containers("fixed")) == 1 and site.status("fixed")["replicas"] == 1
    # ...and an API scale outside min..max is left alone (an autoscaler would clamp it)
    assert (await site.call("POST", "/system/scale-function/fixed", {"replicas": 2}))[0] == 202
    ticks = site.status("fixed")["autoscaler"]["ticks"]

    async def ticked() -> bool:
        return bool(site.status("fixed")["autoscaler"]["ticks"] >= ticks + 8)

    await eventually(ticked, 30, "a few autoscaler ticks")
    assert site.status("fixed")["replicas"] == 2 and len(site.containers("fixed")) == 2
    _, metrics, _ = await site.call("GET", "/metrics")
    assert 'faaso_autoscaler_desired_replicas{function_name="elastic"}' in metrics
    assert 'faaso_autoscaler_observed_load{function_name="elastic",type="capacity"}' in metrics

    # the load drops while 32 connections keep calling (each about once a second, so about
    # one request in flight: 1 replica's worth): it scales down and none fails
    def scaled_down() -> bool:
        status = site.status("elastic")
        return bool(status["replicas"] == 1 and status["available"] == 1)

    began = time.monotonic()
    down_statuses = await _load(
        site,
        "/elastic?s=0.02",
        32,
        90,
        lambda: scaled_down() and time.monotonic() > began + 2,
        think=1.0,
    )
    assert scaled_down(), site.status("elastic")

    async def one_container() -> bool:  # the retired ones drain, then stop
        return len(site.containers("elastic")) == 1

    await eventually(one_container, 60, "elastic down to one container")
    assert len(down_statuses) >= 32 and set(down_statuses) == {200}

    # AlertManager: firing adds ceil(max x factor / 100) = 1 (3 x 20%), up to max; resolved: min
    alert = {
        "status": "firing",
        "alerts": [{"status": "firing", "labels": {"function_name": "elastic"}}],
    }
    status_code, body, _ = await site.call("POST", "/system/alert", alert)
    assert status_code == 200, body
    assert body["results"] == [{"function": "elastic", "status": "firing", "replicas": 2}]
    assert (await site.call("POST", "/system/alert", alert))[1]["results"][0]["replicas"] == 3
    assert (await site.call("POST", "/system/alert", alert))[1]["results"][0]["replicas"] == 3

    async def three() -> bool:
        return len(site.containers("elastic")) == 3

    await eventually(three, 60, "the alert's replicas")
    resolved = {"status": "resolved", "alerts": [{"labels": {"function_name": "elastic"}}]}
    status_code, body, _ = await site.call("POST", "/system/alert", resolved)
    assert body["results"][0]["replicas"] == 1

    async def one() -> bool:
        return len(site.containers("elastic")) == 1

    await eventually(one, 60, "back to min after the alert resolved")
    bad: dict[str, Any] = {"alerts": [{"labels": {}}]}
    assert (await site.call("POST", "/system/alert", bad))[0] == 400
    unknown = {"status": "firing", "alerts": [{"labels": {"function_name": "nope"}}]}
    assert (await site.call("POST", "/system/alert", unknown))[0] == 404


async def test_idle_pause_remove_and_wake(site_factory: Any) -> None:
    site = await site_factory(
        {"lazy": "scale: {zero: true, zero_duration: 1, remove_after: 3, tick: 0.25}"},
        {"/lazy": "lazy"},
    )
    assert (await site.call("GET", "/lazy"))[:2] == (200, "ok")

    async def paused() -> bool:
        return site.status("lazy")["phase"] == "paused" and bool(
            site.containers("lazy", paused=True)
        )

    await eventually(paused, 30, "the idle function to be paused")
    (frozen,) = site.containers("lazy", paused=True)
    _, health, _ = await site.call("GET", "/healthz")
    assert health["status"] == "ok"  # paused is where it should be, not "not ready"
    # a request wakes the paused instance (the same container), and says so
    status, body, headers = await site.call("GET", "/lazy")
    assert (status, body, headers.get("X-Faaso-Cold-Start")) == (200, "ok", "paused")
    assert site.containers("lazy", paused=False) == [frozen]
    status, _, headers = await site.call("GET", "/lazy")
    assert status == 200 and "X-Faaso-Cold-Start" not in headers

    # idle again: paused, then removed
    async def removed() -> bool:
        return site.status("lazy")["phase"] == "scaled-to-zero" and not site.containers("lazy")

    await eventually(removed, 30, "the paused function to be removed")
    # concurrent requests at zero share one start
    controller = server_app(site.client)[SUPERVISOR].controller("lazy")
    assert controller is not None
    restarts_before = controller.restarts
    results = await asyncio.gather(*(site.call("GET", "/lazy") for _ in range(6)))
    assert [(s, b, h.get("X-Faaso-Cold-Start")) for s, b, h in results] == [(200, "ok", "cold")] * 6
    assert len(site.containers("lazy")) == 1 and controller.restarts == restarts_before
    assert controller.replicas == 1  # one start asked for, not one per waiting request


async def test_wake_is_bounded_by_the_timeout(site_factory: Any) -> None:
    site = await site_factory(
        {"slow": "replicas: 0, timeout: 1, env: {START_DELAY: '4'}, scale: {tick: 0.25}"},
        {"/slow": "slow"},
    )
    assert site.status("slow")["phase"] == "scaled-to-zero"
    status, body, headers = await site.call("GET", "/slow")
    assert status == 503 and headers.get("Retry-After") == "2"
    assert "waking" in body["error"] and body["function"] == "slow"
    # answered by the function's 1 s timeout, before its 4 s start was over
    assert site.status("slow")["available"] == 0

    async def up() -> bool:
        return bool(site.status("slow")["available"] == 1)

    await eventually(up, 60, "the woken instance to come up anyway")
    status, body, headers = await site.call("GET", "/slow")
    assert (status, body) == (200, "ok")


async def test_cpu_scale_type_follows_the_engine_stats(site_factory: Any) -> None:
    """``type: cpu``: the load is the containers' CPU from the engine's stats, up and down."""
    site = await site_factory(
        {"busy": f"scale: {{type: cpu, target: 20, target_proportion: 1, max: 2, {FAST}}}"},
        {"/busy": "busy"},
    )
    assert len(site.containers("busy")) == 1

    def two() -> bool:  # in-process only: called between the load's requests
        status = site.status("busy")
        return bool(status["replicas"] == 2 and status["available"] == 2)

    # 4 connections each burning 50 ms of CPU per request: far above 20 % of a core
    statuses = await _load(site, "/busy?c=0.05", 4, 60, two)
    assert two(), site.status("busy")
    assert len(site.containers("busy")) == 2
    assert set(statuses) == {200}
    decision = site.status("busy")["autoscaler"]["last_decision"]
    assert decision["to"] == 2 and "cpu" in decision["why"], decision

    async def one() -> bool:
        return len(site.containers("busy")) == 1

    await eventually(one, 60, "back to one replica once the CPU is idle")
    assert "cpu" in site.status("busy")["autoscaler"]["last_decision"]["why"]


async def test_spare_replaces_a_killed_container_by_a_thaw(site_factory: Any) -> None:
    site = await site_factory(
        {"spared": "scale: {min: 1, max: 1, spare: true}"}, {"/spared": "spared"}
    )

    async def spare_made() -> bool:
        return len(site.containers("spared", paused=True)) == 1

    await eventually(spare_made, 120, "the paused spare")
    (spare,) = site.containers("spared", paused=True)
    (live,) = site.containers("spared", paused=False)
    assert site.status("spared")["phase"] == "ready"
    await asyncio.to_thread(
        subprocess.run, ["docker", "kill", live], capture_output=True, check=True
    )

    async def healed() -> bool:
        if site.containers("spared", paused=False) != [spare]:
            return False
        status, body, _ = await site.call("GET", "/spared")
        return (status, body) == (200, "ok")

    # the spare itself serves: thawed, not a new container
    await eventually(healed, 60, "the spare to replace the killed container")
    controller = server_app(site.client)[SUPERVISOR].controller("spared")
    assert controller is not None and controller.restarts == 1

    async def next_spare() -> bool:
        paused = site.containers("spared", paused=True)
        return len(paused) == 1 and paused != [spare]

    await eventually(next_spare, 120, "the next spare")
    assert site.containers("spared", paused=False) == [spare]


async def test_paused_container_is_adopted_after_a_crash(tmp_path: Path) -> None:
    """faaso killed while a function is at zero: the next faaso keeps the paused container
    (no new container) and a request thaws it."""
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "handler.py").write_text(HANDLER)
    config = tmp_path / "routes.yml"
    write_config(config, {"lazy": "scale: {remove_after: 3600}"}, {"/lazy": "lazy"})
    state = tmp_path / "state"
    served = start_serve(config, state, tmp_path / "faaso-1.log", "--no-auth")
    try:
        await asyncio.to_thread(wait_ready, served, READY_DEADLINE)
        code, _, _ = await asyncio.to_thread(
            served.request, "POST", "/system/scale-function/lazy", b'{"replicas": 0}'
        )
        assert code == 202

        async def paused() -> bool:
            return len(await containers_of(state, "lazy", paused=True)) == 1

        await eventually(paused, 60, "the container to be paused")
        (frozen,) = await containers_of(state, "lazy", paused=True)
        served.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(served.proc.wait, 30)
        served = start_serve(config, state, tmp_path / "faaso-2.log", "--no-auth")
        await asyncio.to_thread(wait_ready, served, READY_DEADLINE)
        assert await containers_of(state, "lazy") == [frozen]
        assert await containers_of(state, "lazy", paused=True) == [frozen]
        assert '"instance.adopted"' in served.log_text()
        code, headers, body = await asyncio.to_thread(served.request, "GET", "/lazy")
        assert (code, body, headers.get("x-faaso-cold-start")) == (200, b"ok", "paused")
        assert await containers_of(state, "lazy") == [frozen]
        assert await containers_of(state, "lazy", paused=True) == []
    finally:
        if served.proc.poll() is None:
            await asyncio.to_thread(stop_serve, served)
