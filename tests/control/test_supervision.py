"""Supervision with a real engine: healing, crash loops, hot reload, rolling updates, adoption."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from faaso.config.routes_file import load_config
from faaso.server.app import SUPERVISOR, create_app
from faaso.spec.status import FunctionStatus, Phase
from tests.helpers import ROOT, containers_of, docker, eventually, server_app

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("require_docker"),
    pytest.mark.timeout(300),
]

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]

CRASHER = """
import os, threading

def _die():
    os._exit(3)

threading.Timer(float(os.environ.get("DIE_AFTER", "0.5")), _die).start()

def handle(event, context):
    return "alive"
"""


@dataclass
class Site:
    dir: Path
    config: Path
    state: Path
    client: TestClient[Any, Any]

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.client.session.get(self.client.make_url(path)) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text

    async def containers(self, function: str | None = None, running: bool = True) -> list[str]:
        return await containers_of(self.state, function, running)

    def status(self, function: str) -> FunctionStatus:
        supervisor = server_app(self.client)[SUPERVISOR]
        return next(s for s in supervisor.statuses() if s.function == function)


FIXED_ONE = ", scale: {min: 1, max: 1}"


def write_config(
    path: Path, functions: dict[str, str], routes: dict[str, str], extra: str = ""
) -> None:
    lines = ["functions:"]
    for name, source in functions.items():
        lines.append(f"  {name}: {{source: {source}, runtime: python{extra}}}")
    lines.append("routes:" if routes else "routes: {}")
    lines += [f"  {prefix}: {name}" for prefix, name in routes.items()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)  # atomic, as editors do


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for name in ("sum", "mul"):
        shutil.copytree(ROOT / "conf" / "functions" / name, tmp_path / name)
    crash = tmp_path / "crash"
    crash.mkdir()
    (crash / "handler.py").write_text(CRASHER)
    return tmp_path


@pytest.fixture
async def site_factory(
    aiohttp_client: ClientFactory, workdir: Path
) -> AsyncIterator[Callable[..., Awaitable[Site]]]:
    sites: list[Site] = []

    async def make(
        functions: dict[str, str], routes: dict[str, str], extra: str = "", wait_ready: bool = True
    ) -> Site:
        config = workdir / "routes.yml"
        write_config(config, functions, routes, extra)
        state = workdir / "state"
        app = create_app(load_config(config), state, pull=False)
        client = await aiohttp_client(app)
        site = Site(workdir, config, state, client)
        sites.append(site)

        async def ready() -> bool:
            return (await site.get("/healthz"))[0] == 200

        if wait_ready:
            await eventually(ready, 240, "all functions ready")
        return site

    yield make
    for site in sites:
        await site.client.close()
        assert await site.containers(running=False) == [], "containers left after shutdown"


async def test_killed_container_is_replaced_and_requests_are_held(site_factory: Any) -> None:
    site = await site_factory({"sum": "sum"}, {"/sum": "sum"})
    (old,) = await site.containers("sum")
    await docker("kill", old)
    supervisor = server_app(site.client)[SUPERVISOR]
    controller = supervisor.controller("sum")
    assert controller is not None

    async def noticed() -> bool:
        return controller.restarts >= 1

    await eventually(noticed, 10, "the death to be noticed")
    # Arriving after the death was noticed: held until the replacement serves, not failed.
    results = await asyncio.gather(*(site.get(f"/sum?a={i}&b=1") for i in range(10)))
    assert results == [(200, i + 1) for i in range(10)]
    (new,) = await site.containers("sum")
    assert new != old
    status = site.status("sum")
    assert status.restarts == 1 and status.last_exit_code == 137
    assert status.phase is Phase.READY


async def test_unhealthy_container_is_replaced(site_factory: Any) -> None:
    """Failing probes (here: a paused container) take an instance out and replace it."""
    site = await site_factory(
        {"sum": "sum"},
        {"/sum": "sum"},
        extra=", health_interval: 0.2, health_timeout: 0.2, health_failures: 2",
    )
    (old,) = await site.containers("sum")
    await docker("pause", old)

    async def replaced() -> bool:
        names = await site.containers("sum")
        return old not in names and len(names) == 1

    await eventually(replaced, 30, "the paused container to be replaced")
    assert await site.get("/sum?a=4&b=4") == (200, 8)


async def test_crash_loop_backs_off_and_is_reported(site_factory: Any) -> None:
    """A function that dies young again and again: restarted with growing delays, reported."""
    site = await site_factory({"crash": "crash"}, {"/crash": "crash"}, wait_ready=False)

    async def looping() -> bool:
        status = site.status("crash")
        return status.phase is Phase.CRASH_LOOP and status.restarts >= 3

    await eventually(looping, 120, "the crash loop to be reported")
    status = site.status("crash")
    assert status.last_exit_code == 3
    code, body = await site.get("/healthz")
    assert code == 503
    assert [s["function"] for s in body["not_ready"]] == ["crash"]
    assert body["not_ready"][0]["phase"] == "crash-looping"
    # restarts were spaced by a growing backoff, read from the controller's own record
    supervisor = server_app(site.client)[SUPERVISOR]
    controller = supervisor.controller("crash")
    assert controller is not None
    delays = [d for d in controller.restart_delays if d > 0]
    assert delays == sorted(delays) and len(delays) >= 2 and delays[-1] > delays[0]


async def test_zero_failed_requests_during_reload_and_rolling_update(
    site_factory: Any, workdir: Path
) -> None:
    # Fixed replicas (min == max): the load must not make the autoscaler add instances, so
    # that "untouched" can be checked by container names.
    site = await site_factory(
        {"sum": "sum", "mul": "mul"}, {"/sum": "sum", "/mul": "mul"}, FIXED_ONE
    )
    outcomes: Counter[str] = Counter()
    stop = asyncio.Event()
    deadline = time.monotonic() + 120

    async def worker(i: int) -> None:
        path = "/sum?a=1&b=2" if i % 2 else "/mul?a=2&b=3"
        expected = 3 if i % 2 else 6
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    async with session.get(site.client.make_url(path)) as resp:
                        body = await resp.text()
                        ok = resp.status == 200 and json.loads(body) == expected
                        outcomes["ok" if ok else f"{resp.status} {body[:80]}"] += 1
                except aiohttp.ClientError as exc:
                    outcomes[f"client error {exc!r}"[:100]] += 1

    workers = [asyncio.create_task(worker(i)) for i in range(32)]

    async def some_traffic() -> bool:
        return outcomes["ok"] > 200

    await eventually(some_traffic, 30, "load to flow")
    (old_sum,) = await site.containers("sum")
    (old_mul,) = await site.containers("mul")
    # 1. a rolling update of sum: edit its code
    handler = workdir / "sum" / "handler.py"
    handler.write_text(handler.read_text() + "\n# a new version\n")

    async def rolled() -> bool:
        names = await site.containers("sum")
        return len(names) == 1 and names[0] != old_sum

    await eventually(rolled, 120, "sum to roll over")
    # 2. a reload that adds a route and a function, leaving the others alone
    write_config(
        site.config,
        {"sum": "sum", "mul": "mul"},
        {"/sum": "sum", "/mul": "mul", "/add": "sum"},
        FIXED_ONE,
    )

    async def added() -> bool:
        return bool((await site.get("/add?a=5&b=5")) == (200, 10))

    await eventually(added, 60, "the new route")
    seen_before = outcomes["ok"]

    async def more_traffic() -> bool:
        return outcomes["ok"] > seen_before + 200

    await eventually(more_traffic, 30, "load after the reload")
    stop.set()
    await asyncio.gather(*workers)
    assert await site.containers("mul") == [old_mul], "an unchanged function was touched"
    failures = {k: v for k, v in outcomes.items() if k != "ok"}
    assert failures == {}, failures
    assert outcomes["ok"] > 400


async def test_reload_adds_removes_changes_and_survives_bad_config(
    site_factory: Any, workdir: Path
) -> None:
    site = await site_factory({"sum": "sum"}, {"/sum": "sum"})
    # add a function and a route: live once healthy
    write_config(site.config, {"sum": "sum", "mul": "mul"}, {"/sum": "sum", "/times": "mul"})

    async def mul_live() -> bool:
        return bool((await site.get("/times?a=3&b=4")) == (200, 12))

    await eventually(mul_live, 120, "the new function")
    assert len(await site.containers("mul")) == 1

    # an invalid file: the old config keeps running, and /healthz says why
    site.config.write_text("functions:\n  sum: {source: sum, replicas: lots}\n")

    async def error_shown() -> bool:
        status, body = await site.get("/healthz")
        return status == 200 and body.get("reload", {}).get("ok") is False

    await eventually(error_shown, 30, "the reload error on /healthz")
    _, body = await site.get("/healthz")
    error = body["reload"]["error"]
    assert "functions.sum.replicas" in error and "lots" in error and str(site.config) in error
    at = body["reload"]["at"]  # RFC 3339, like the API's timestamps
    assert at.endswith("Z") and dt.datetime.fromisoformat(at.replace("Z", "+00:00"))
    assert await site.get("/times?a=3&b=4") == (200, 12)

    # a failing build (syntax error in requirements? no: a missing wheel) keeps the old config
    (workdir / "sum" / "requirements.txt").write_text("no-such-package-faaso-test==0.0.1\n")

    async def build_error_shown() -> bool:
        _, body = await site.get("/healthz")
        err = body.get("reload", {}).get("error") or ""
        return "sum" in err and "no-such-package-faaso-test" in err

    write_config(site.config, {"sum": "sum", "mul": "mul"}, {"/sum": "sum", "/times": "mul"})
    await eventually(build_error_shown, 120, "the build error on /healthz")
    assert await site.get("/sum?a=1&b=1") == (200, 2)
    (workdir / "sum" / "requirements.txt").unlink()

    # remove a route and its function: the route goes, then its containers
    write_config(site.config, {"sum": "sum"}, {"/sum": "sum"})

    async def mul_gone() -> bool:
        status, _ = await site.get("/times?a=3&b=4")
        _, health = await site.get("/healthz")
        reloaded = health.get("reload", {}).get("ok") is True
        return status == 404 and reloaded and await site.containers("mul") == []

    await eventually(mul_gone, 60, "the removed function to go")
    assert await site.get("/sum?a=1&b=1") == (200, 2)
