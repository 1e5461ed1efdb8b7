"""Rollouts and errors with a real engine: what cannot run fails at once with its reason, a
missing secret names its fix and starts when created, an early exit keeps its code and output,
and state-changing API calls answer once the change is accepted (202), before any drain."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from faaso.backends.base import Instance
from faaso.config.routes_file import load_config
from faaso.control.controller import Prober
from faaso.server.app import RELOADER, SUPERVISOR, create_app
from faaso.spec.status import FunctionStatus, Phase
from faaso.state.secret_store import SecretStore
from tests.helpers import ROOT, containers_of, eventually, server_app

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("require_docker"),
    pytest.mark.timeout(300),
]

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
TOO_MANY_CPUS = (os.cpu_count() or 1) + 1

SLOW = """
import time

def handle(event, context):
    time.sleep(float(event.query.get("s", "0")))  # the function's own work: a slow request
    return "done"
"""

DIES = """
import os
print("dying-marker-42: cannot go on", flush=True)
os._exit(7)

def handle(event, context):
    return "never"
"""


@dataclass
class Site:
    config: Path
    state: Path
    client: TestClient[Any, Any]

    async def call(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body)
        async with self.client.session.request(
            method, self.client.make_url(path), data=data
        ) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text

    def status(self, function: str) -> FunctionStatus:
        supervisor = server_app(self.client)[SUPERVISOR]
        return next(s for s in supervisor.statuses() if s.function == function)

    def write(self, text: str) -> None:
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config)  # atomic, as editors do

    async def healthz(self) -> tuple[int, Any]:
        return await self.call("GET", "/healthz")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "conf" / "functions" / "sum", tmp_path / "sum")
    for name, code in (("slow", SLOW), ("dies", DIES)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "handler.py").write_text(code)
    return tmp_path


@pytest.fixture
async def site_factory(
    aiohttp_client: ClientFactory, workdir: Path
) -> AsyncIterator[Callable[..., Awaitable[Site]]]:
    sites: list[Site] = []

    async def make(text: str, wait_ready: bool = True, **options: Any) -> Site:
        config = workdir / "routes.yml"
        config.write_text(text)
        state = workdir / "state"
        client = await aiohttp_client(
            create_app(load_config(config), state, pull=False, auth=False, **options)
        )
        site = Site(config, state, client)
        sites.append(site)

        async def ready() -> bool:
            return (await site.healthz())[0] == 200

        if wait_ready:
            await eventually(ready, 240, "all functions ready")
        return site

    yield make
    for site in sites:
        await site.client.close()
        assert await containers_of(site.state, running=False) == [], "containers left"


SUM_ONLY = "functions:\n  sum: {source: sum, runtime: python%s}\nroutes:\n  /sum: sum\n"


async def test_a_rollout_that_cannot_run_fails_at_once_with_the_engines_reason(
    site_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More CPUs than the host has, past `faaso check` (as if checked on a bigger host): the
    engine refuses the container. The reload fails at once with the engine's words (not "did not
    become healthy (slow: ready)" after minutes of retries), the old instance serves on, and the
    next save of the file is applied at once. An API deployment that cannot run is a 400 that
    says why, and nothing of it stays."""
    monkeypatch.setattr("faaso.config.routes_file.host_cpus", lambda: 1024)
    site = await site_factory(SUM_ONLY % "")
    (old,) = await containers_of(site.state, "sum")
    site.write(SUM_ONLY % f", limits: {{cpus: {TOO_MANY_CPUS}}}")

    async def refused() -> bool:
        _, body = await site.healthz()
        return "Range of CPUs" in (body.get("reload", {}).get("error") or "")

    await eventually(refused, 60, "the engine's reason under reload on /healthz")
    status, body = await site.healthz()
    assert status == 200, body  # rolled back: the old instance is back in charge
    assert "did not become healthy" in body["reload"]["error"]
    assert site.status("sum").rollout_error and "Range of CPUs" in site.status("sum").rollout_error
    assert await site.call("GET", "/sum?a=2&b=3") == (200, 5)
    assert await containers_of(site.state, "sum") == [old]
    # the fix, saved to the file, is applied (no rollout is left blocking the reloads)
    site.write(SUM_ONLY % ", limits: {cpus: 1}")

    async def fixed() -> bool:
        _, body = await site.healthz()
        names = await containers_of(site.state, "sum")
        return body.get("reload", {}).get("ok") is True and len(names) == 1 and names != [old]

    await eventually(fixed, 60, "the fixed file to roll out")
    assert site.status("sum").rollout_error is None
    # the same through the API: a 400 naming the cause, nothing deployed
    controller = server_app(site.client)[SUPERVISOR].controller("sum")
    assert controller is not None
    deployment = {
        "service": "big",
        "image": controller.image,
        "limits": {"cpu": str(TOO_MANY_CPUS)},
    }
    status, body = await site.call("POST", "/system/functions", deployment)
    assert status == 400 and "Range of CPUs" in body["error"], body
    assert (await site.call("GET", "/system/function/big"))[0] == 404
    assert await containers_of(site.state, "big", running=False) == []


async def test_a_missing_secret_names_its_fix_and_starts_once_created(site_factory: Any) -> None:
    site = await site_factory(
        "functions:\n  needs: {source: sum, runtime: python, secrets: [api-key]}\n"
        "routes:\n  /needs: needs\n",
        wait_ready=False,
    )

    async def failed() -> bool:
        return site.status("needs").phase is Phase.FAILED

    await eventually(failed, 120, "the function to be reported failed")
    error = site.status("needs").error or ""
    assert "api-key" in error and "faaso secret create api-key" in error, error
    status, body = await site.healthz()
    assert status == 503 and "faaso secret create api-key" in body["not_ready"][0]["error"]
    _, fn = await site.call("GET", "/system/function/needs")
    assert fn["phase"] == "failed" and "faaso secret create" in fn["error"]
    # created: it starts now (not after a restart backoff), and serves
    assert (await site.call("POST", "/system/secrets", {"name": "api-key", "value": "k"}))[0] == 200

    async def serving() -> bool:
        return bool(await site.call("GET", "/needs?a=1&b=2") == (200, 3))

    await eventually(serving, 60, "the function to start once its secret exists")
    assert site.status("needs").error is None


async def test_a_function_a_failed_reload_adds_starts_once_its_secret_is_created(
    site_factory: Any,
) -> None:
    """A reload (SIGHUP here; a save is the same) adds a function whose secret does not exist:
    the reload fails, naming the fix. Creating the secret then starts the function at once,
    with no further save or SIGHUP: through the API, and through `faaso secret create`."""
    base = "functions:\n  sum: {source: sum, runtime: python}\n"
    site = await site_factory(base + "routes:\n  /sum: sum\n", watch=False)
    reloader = server_app(site.client)[RELOADER]

    async def reload_failed_on(secret: str) -> bool:
        _, body = await site.healthz()
        return f"faaso secret create {secret}" in (body.get("reload", {}).get("error") or "")

    needs = "  needs: {source: sum, runtime: python, secrets: [api-key]}\n"
    site.write(base + needs + "routes:\n  /sum: sum\n  /needs: needs\n")
    reloader.trigger()  # what SIGHUP does
    await eventually(lambda: reload_failed_on("api-key"), 240, "the reload to fail on api-key")
    assert (await site.call("GET", "/needs?a=1&b=2"))[0] == 404  # not added
    # 1. the API
    status, _ = await site.call("POST", "/system/secrets", {"name": "api-key", "value": "k"})
    assert status == 200

    async def serving(path: str) -> bool:
        return bool(await site.call("GET", path) == (200, 3))

    await eventually(lambda: serving("/needs?a=1&b=2"), 120, "needs to start with its secret")
    _, body = await site.healthz()
    assert body["reload"]["ok"] is True, body
    # 2. `faaso secret create`, for a function a second failed reload adds
    more = "  more: {source: sum, runtime: python, secrets: [key-two]}\n"
    site.write(base + needs + more + "routes:\n  /sum: sum\n  /needs: needs\n")
    reloader.trigger()
    await eventually(lambda: reload_failed_on("key-two"), 240, "the reload to fail on key-two")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "faaso", "secret", "create", "key-two", "--value", "v",
        "--gateway", str(site.client.make_url("/")), "--state-dir", str(site.state),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k not in ("FAASO_GATEWAY", "FAASO_PASSWORD")},
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, (out, err)
    await eventually(
        lambda: serving("/function/more?a=1&b=2"), 120, "more to start with its secret"
    )
    assert site.status("more").error is None


async def _early_exit(site_factory: Any) -> Any:
    """A site whose ``dies`` function exits before it is healthy, once that is reported."""
    site = await site_factory(
        "functions:\n  dies: {source: dies, runtime: python}\nroutes:\n  /dies: dies\n",
        wait_ready=False,
    )

    async def reported() -> bool:
        return "before it was healthy" in (site.status("dies").error or "")

    await eventually(reported, 120, "the early exit to be reported")
    return site


async def test_an_early_exit_reports_its_exit_code_and_last_output(site_factory: Any) -> None:
    site = await _early_exit(site_factory)
    status = site.status("dies")
    error = status.error or ""
    assert "exited (code 7)" in error and "dying-marker-42" in error, error
    assert status.last_exit_code == 7
    assert any("dying-marker-42" in line for line in status.last_logs)


async def test_an_early_exit_keeps_its_code_and_output_after_its_container_is_gone(
    site_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the test above cannot force, forced: the engine's die event is handled and the
    dead container removed before the start's health wait looks at it. The wait must still
    report the real exit code and the last output (read before the removal), not
    "exited (code None)" with nothing after "its last output:"."""
    gated: list[str] = []
    check = Prober.check

    async def removed(container: str) -> bool:
        proc = await asyncio.create_subprocess_exec(
            "docker", "inspect", container, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return await proc.wait() != 0

    async def late_check(self: Prober, instance: Instance, path: str, timeout: float) -> bool:
        """The real probe; for a `dies` container that has stopped answering, it returns only
        once faaso removed that container (what the die event's clean-up does)."""
        if await check(self, instance, path, timeout):
            return True
        if instance.function == "dies" and instance.id not in gated:
            gated.append(instance.id)
            deadline = asyncio.get_running_loop().time() + 60
            while not await removed(instance.id):
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.05)  # poll with a deadline
        return False

    monkeypatch.setattr(Prober, "check", late_check)
    site = await _early_exit(site_factory)
    assert gated, "the probe gate never held a container"
    assert await removed(gated[0]), "the first container is not gone"
    error = site.status("dies").error or ""
    assert "exited (code 7)" in error and "dying-marker-42" in error, error
    assert site.status("dies").last_exit_code == 7


async def test_state_changes_answer_202_before_the_old_instances_drain(
    site_factory: Any, workdir: Path
) -> None:
    """A delete, a scale to 0 and a secret update each answer while a request is still in
    flight on the instances they retire: the drain happens after the answer, in the background,
    and the request still finishes."""
    SecretStore(workdir / "state" / "function-secrets").put("token", b"one")
    site = await site_factory(
        "functions:\n  slow: {source: slow, runtime: python, secrets: [token],"
        " scale: {min: 1, max: 1}}\nroutes:\n  /slow: slow\n"
    )
    supervisor = server_app(site.client)[SUPERVISOR]
    slow = supervisor.controller("slow")
    assert slow is not None
    status, _ = await site.call(
        "POST", "/system/functions", {"service": "gone", "image": slow.image}
    )
    assert status == 202

    async def in_flight(path: str, function: str) -> asyncio.Task[tuple[int, Any]]:
        task = asyncio.create_task(site.call("GET", path))
        controller = supervisor.controller(function)
        assert controller is not None

        async def arrived() -> bool:
            return controller.inflight() > 0

        await eventually(arrived, 30, f"a request in flight to {function}")
        return task

    # 1. delete
    pending = await in_flight("/function/gone?s=20", "gone")
    status, _ = await site.call("DELETE", "/system/functions", {"functionName": "gone"})
    assert status == 202 and not pending.done()
    assert (await site.call("GET", "/system/function/gone"))[0] == 404
    assert await pending == (200, "done")  # drained, not cut

    async def gone() -> bool:
        return await containers_of(site.state, "gone", running=False) == []

    await eventually(gone, 60, "the deleted function's container to go")
    # 2. a secret update rolls the function over in the background
    (before,) = await containers_of(site.state, "slow")
    pending = await in_flight("/slow?s=20", "slow")
    status, _ = await site.call("PUT", "/system/secrets", {"name": "token", "value": "two"})
    assert status == 202 and not pending.done()
    assert await pending == (200, "done")

    async def rolled() -> bool:
        names = await containers_of(site.state, "slow")
        return len(names) == 1 and names != [before] and site.status("slow").phase is Phase.READY

    await eventually(rolled, 120, "the roll-over to the new secret value")
    # 3. scale to zero
    pending = await in_flight("/slow?s=20", "slow")
    status, _ = await site.call("POST", "/system/scale-function/slow", {"replicas": 0})
    assert status == 202 and not pending.done()
    assert await pending == (200, "done")

    async def parked() -> bool:
        return site.status("slow").phase is Phase.PAUSED

    await eventually(parked, 60, "the function at zero")
