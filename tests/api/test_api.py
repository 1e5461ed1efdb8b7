"""The OpenFaaS management API, in-process, against a real engine and real containers."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from faaso.api.auth import password_path
from faaso.config.routes_file import load_config
from faaso.errors import BackendError
from faaso.server.app import BACKEND, SUPERVISOR, create_app
from faaso.state.secret_store import SecretStore
from tests.helpers import ROOT, containers_of, docker, eventually, server_app

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("require_docker"),
    pytest.mark.timeout(300),
]

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class Api:
    client: TestClient[Any, Any]
    state: Path
    auth: dict[str, str]

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: bool = True,
        raw: bytes | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        data: Any = (
            raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        )
        if isinstance(data, bytes) and len(data) > 65536:
            data = io.BytesIO(data)
        async with self.client.session.request(
            method, self.client.make_url(path), data=data, headers=self.auth if auth else None
        ) as resp:
            text = await resp.text()
            if resp.content_type == "application/x-ndjson":
                return resp.status, text, dict(resp.headers)  # lines, parsed by the caller
            try:
                parsed: Any = json.loads(text)
            except ValueError:
                parsed = text
            return resp.status, parsed, dict(resp.headers)

    def sum_image(self) -> str:
        controller = server_app(self.client)[SUPERVISOR].controller("sum")
        assert controller is not None
        return controller.image

    async def containers(self, function: str, *, paused: bool = False) -> list[str]:
        return await containers_of(self.state, function, paused=paused)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "conf" / "functions" / "sum", tmp_path / "sum")
    path = tmp_path / "routes.yml"
    path.write_text("functions:\n  sum: {source: sum}\nroutes:\n  /sum: sum\n")
    return path


@pytest.fixture
async def start_api(
    aiohttp_client: ClientFactory, config_file: Path, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Api]]]:
    started: list[Api] = []

    async def start(**options: Any) -> Api:
        state = tmp_path / "state"
        app = create_app(load_config(config_file), state, pull=False, **options)
        client = await aiohttp_client(app)
        password = password_path(state).read_text().strip()
        api = Api(client, state, basic("admin", password))
        started.append(api)

        async def ready() -> bool:
            status, _, _ = await api.call("GET", "/healthz", auth=False)
            return status == 200

        await eventually(ready, 240, "faaso to be ready")
        return api

    yield start
    for api in started:
        await api.client.close()


@pytest.fixture
async def api(start_api: Callable[..., Awaitable[Api]]) -> Api:
    return await start_api()


async def test_auth(api: Api) -> None:
    for method, path in [
        ("GET", "/system/functions"),
        ("GET", "/system/info"),
        ("POST", "/system/secrets"),
        ("GET", "/system/nope"),
        ("GET", "/system"),
    ]:
        status, body, headers = await api.call(method, path, auth=False)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Basic realm=")
        assert "error" in body
    bad = Api(api.client, api.state, basic("admin", "wrong"))
    assert (await bad.call("GET", "/system/functions"))[0] == 401
    # open routes
    assert (await api.call("GET", "/healthz", auth=False))[0] == 200
    assert (await api.call("GET", "/metrics", auth=False))[0] == 200
    assert (await api.call("GET", "/function/sum?a=1&b=2", auth=False))[:2] == (200, 3)
    mode = password_path(api.state).stat().st_mode & 0o777
    assert mode == 0o600


async def test_info_namespaces_and_unknown_route(api: Api) -> None:
    status, info, _ = await api.call("GET", "/system/info")
    assert status == 200
    # the gateway's shape (faaso is the gateway), with the build's commit: never empty
    assert info["provider"]["provider"] == "faaso"
    assert info["provider"]["orchestration"] == "docker"
    assert info["version"]["release"]
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert info["version"]["sha"] == info["provider"]["version"]["sha"] == head
    assert (await api.call("GET", "/system/namespaces"))[:2] == (200, ["openfaas-fn"])
    status, body, _ = await api.call("GET", "/system/nothing-here")
    assert status == 404 and "error" in body


async def test_list_and_describe_file_function(api: Api) -> None:
    status, functions, _ = await api.call("GET", "/system/functions")
    assert status == 200
    (fn,) = functions
    assert fn["name"] == "sum" and fn["namespace"] == "openfaas-fn"
    assert fn["image"] == api.sum_image()
    assert (fn["replicas"], fn["availableReplicas"]) == (1, 1)
    assert "invocationCount" not in fn  # zero counts are left out
    assert fn["createdAt"]
    # what was not configured is left out, not empty (Go's omitempty, as faasd and faas-netes)
    for absent in ("envVars", "annotations", "secrets", "limits", "requests"):
        assert absent not in fn, absent
    assert fn["labels"] == {"faas_function": "sum"}
    status, one, _ = await api.call("GET", "/system/function/sum?namespace=openfaas-fn")
    assert status == 200 and one["name"] == "sum"
    assert (await api.call("GET", "/system/function/sum.openfaas-fn"))[0] == 200
    assert (await api.call("GET", "/system/function/nope"))[0] == 404
    assert (await api.call("GET", "/system/function/sum?namespace=other"))[0] == 400


async def test_file_functions_are_read_only_but_scalable(api: Api) -> None:
    image = api.sum_image()
    for method in ("POST", "PUT"):
        status, body, _ = await api.call(
            method, "/system/functions", {"service": "sum", "image": image}
        )
        assert status == 409 and "edit that file" in body["error"]
    status, body, _ = await api.call("DELETE", "/system/functions", {"functionName": "sum"})
    assert status == 409
    status, _, _ = await api.call(
        "POST",
        "/system/scale-function/sum",
        {"serviceName": "sum", "namespace": "openfaas-fn", "replicas": 2},
    )
    assert status == 202  # accepted: the second instance starts in the background

    async def two_ready() -> bool:
        _, fn, _ = await api.call("GET", "/system/function/sum")
        return bool(fn.get("availableReplicas") == 2)

    await eventually(two_ready, 60, "the second instance")
    assert len(await api.containers("sum")) == 2
    _, fn, _ = await api.call("GET", "/system/function/sum")
    assert (fn["replicas"], fn["availableReplicas"]) == (2, 2)
    status, _, _ = await api.call("POST", "/system/scale-function/sum", {"replicas": 0})
    assert status == 202

    async def parked() -> bool:
        _, fn, _ = await api.call("GET", "/system/function/sum")
        return bool(fn.get("phase") == "paused")

    await eventually(parked, 60, "both instances paused")
    # at zero: both instances paused (the first step), none serving
    assert await api.containers("sum", paused=True) == await api.containers("sum")
    assert len(await api.containers("sum")) == 2
    _, fn, _ = await api.call("GET", "/system/function/sum")
    assert "replicas" not in fn and "availableReplicas" not in fn
    # a request wakes it (min replicas: 1)
    status, body, headers = await api.call("GET", "/sum?a=1", auth=False)
    assert (status, body, headers.get("X-Faaso-Cold-Start")) == (200, 1, "paused")
    _, fn, _ = await api.call("GET", "/system/function/sum")
    assert (fn["replicas"], fn["availableReplicas"]) == (1, 1)
    bad: object
    for bad in ({"replicas": -1}, {"replicas": "2"}, {"replicas": True}, {}, [], {"replicas": 99}):
        status, body, _ = await api.call("POST", "/system/scale-function/sum", bad)
        assert status == 400, bad
        assert "error" in body
    assert (await api.call("POST", "/system/scale-function/nope", {"replicas": 1}))[0] == 404


async def test_deploy_update_remove_and_restart(
    start_api: Callable[..., Awaitable[Api]],
) -> None:
    api = await start_api()
    image = api.sum_image()
    deployment = {
        "service": "adder",
        "image": image,
        "envVars": {"MODE": "one"},
        "labels": {"team": "maths"},
        "annotations": {"note": "x"},
        "limits": {"memory": "96Mi", "cpu": "0.5"},
        "requests": {"memory": "32Mi"},
        "readOnlyRootFilesystem": True,
    }
    status, _, _ = await api.call("POST", "/system/functions", deployment)
    assert status == 202
    # reachable at once
    assert (await api.call("GET", "/function/adder?a=40&b=2", auth=False))[:2] == (200, 42)
    _, fn, _ = await api.call("GET", "/system/function/adder")
    assert fn["image"] == image and fn["envVars"] == {"MODE": "one"}
    assert fn["labels"] == {"team": "maths", "faas_function": "adder"}
    assert fn["annotations"] == {"note": "x"}
    assert fn["limits"] == {"memory": "96Mi", "cpu": "0.5"}
    assert fn["requests"] == {"memory": "32Mi"}
    assert fn["readOnlyRootFilesystem"] is True and fn["invocationCount"] == 1
    (name,) = await api.containers("adder")
    inspect = json.loads(await docker("inspect", name))[0]
    assert inspect["HostConfig"]["ReadonlyRootfs"] is True
    assert inspect["HostConfig"]["Memory"] == 96 * 2**20
    assert inspect["HostConfig"]["NanoCpus"] == 500_000_000
    assert "MODE=one" in inspect["Config"]["Env"]
    assert inspect["Config"]["Labels"]["team"] == "maths"
    # update: a rolling update to the new env
    status, _, _ = await api.call(
        "PUT", "/system/functions", {**deployment, "envVars": {"MODE": "two"}}
    )
    assert status == 202
    (renamed,) = await api.containers("adder")
    assert renamed != name
    _, fn, _ = await api.call("GET", "/system/function/adder")
    assert fn["envVars"] == {"MODE": "two"}
    # PUT of an unknown function is 404 (faas-cli then falls back to POST)
    status, _, _ = await api.call("PUT", "/system/functions", {**deployment, "service": "ghost"})
    assert status == 404
    # survives a restart of faaso, with its state
    await api.client.close()
    api = await start_api()
    _, fn, _ = await api.call("GET", "/system/function/adder")
    assert fn["envVars"] == {"MODE": "two"}
    assert (await api.call("GET", "/function/adder?a=1&b=1", auth=False))[:2] == (200, 2)
    # remove
    status, _, _ = await api.call("DELETE", "/system/functions", {"functionName": "adder"})
    assert status == 202  # accepted: its container drains and stops in the background

    async def adder_gone() -> bool:
        return await api.containers("adder") == []

    await eventually(adder_gone, 60, "the removed function's container to go")
    assert (await api.call("GET", "/system/function/adder"))[0] == 404
    assert (await api.call("GET", "/function/adder", auth=False))[0] == 404
    assert (await api.call("DELETE", "/system/functions", {"functionName": "adder"}))[0] == 404


async def test_bad_deployments_are_4xx(api: Api) -> None:
    """What only a running server can refuse (the body's bytes, a missing secret, a missing
    image), plus one invalid field to show validation errors are 400s (the field-by-field cases
    are unit tests in tests/config/test_deployment.py). Nothing is half-deployed."""
    cases: list[tuple[str, Any, bytes | None]] = [
        ("POST", None, b"{not json"),
        ("POST", None, b"\xff\xfe"),
        ("POST", {"service": "ok", "image": "x", "envVars": "A=1"}, None),
        ("POST", {"service": "ok", "image": "x", "secrets": ["missing"]}, None),
        ("POST", {"service": "ok", "image": "no-such-image:never"}, None),
        ("POST", {"service": "ok", "image": "x", "registryAuth": "bm8tY29sb24="}, None),
        ("DELETE", {"function": "x"}, None),
    ]
    for method, body, raw in cases:
        status, answer, _ = await api.call(method, "/system/functions", body, raw=raw)
        assert 400 <= status < 500, (body, raw, status, answer)
        assert "error" in answer
        _, functions, _ = await api.call("GET", "/system/functions")
        assert [f["name"] for f in functions] == ["sum"]  # nothing half-deployed
        assert await api.containers("ok") == []


async def test_oversized_body_is_413(api: Api) -> None:
    status, _, _ = await api.call("POST", "/system/functions", raw=b"x" * (2 * 2**20))
    assert status == 413


async def test_secrets(api: Api) -> None:
    status, _, _ = await api.call(
        "POST", "/system/secrets", {"name": "db-pass", "value": "hunter2"}
    )
    assert status == 200
    assert (await api.call("POST", "/system/secrets", {"name": "db-pass", "value": "x"}))[0] == 409
    status, listed, _ = await api.call("GET", "/system/secrets")
    assert listed == [{"name": "db-pass", "namespace": "openfaas-fn"}]
    assert "hunter2" not in json.dumps(listed)
    stored = api.state / "function-secrets"
    assert stored.stat().st_mode & 0o777 == 0o700
    # a function that uses it reads it from /var/openfaas/secrets
    image = api.sum_image()
    status, _, _ = await api.call(
        "POST", "/system/functions", {"service": "reader", "image": image, "secrets": ["db-pass"]}
    )
    assert status == 202

    async def read_in_container() -> str:
        (name,) = await api.containers("reader")
        return await docker("exec", name, "cat", "/var/openfaas/secrets/db-pass")

    assert await read_in_container() == "hunter2"
    # an update rolls the function to the new value, in the background
    status, _, _ = await api.call("PUT", "/system/secrets", {"name": "db-pass", "rawValue": "bmV3"})
    assert status == 202

    async def rolled() -> bool:
        names = await api.containers("reader")
        return len(names) == 1 and await read_in_container() == "new"

    await eventually(rolled, 120, "the function to roll over to the new value")
    # in use: refused, with the reason
    status, body, _ = await api.call("DELETE", "/system/secrets", {"name": "db-pass"})
    assert status == 409 and "reader" in body["error"]
    assert (await api.call("DELETE", "/system/functions", {"functionName": "reader"}))[0] == 202
    assert (await api.call("DELETE", "/system/secrets", {"name": "db-pass"}))[0] == 200
    assert (await api.call("GET", "/system/secrets"))[1] == []
    # bad input
    for bad in (
        {"name": "../x", "value": "v"},
        {"name": "a/b", "value": "v"},
        {"name": "..", "value": "v"},
        {"name": "ok"},
        {"value": "v"},
        {"name": "ok", "rawValue": "%%%"},
        {"name": "ok", "value": "v", "namespace": "x"},
    ):
        status, body, _ = await api.call("POST", "/system/secrets", bad)
        assert status == 400, bad
    assert (await api.call("PUT", "/system/secrets", {"name": "nope", "value": "v"}))[0] == 404
    assert (await api.call("DELETE", "/system/secrets", {"name": "nope"}))[0] == 404
    assert not any(p.name in ("x", "..") for p in stored.iterdir())


async def test_logs(api: Api) -> None:
    for i in range(3):
        await api.call("GET", f"/sum?a={i}", auth=False)
    status, text, headers = await api.call("GET", "/system/logs?name=sum&tail=1")
    assert status == 200
    assert headers["Content-Type"].startswith("application/x-ndjson")
    entries = (
        [json.loads(line) for line in str(text).splitlines()] if isinstance(text, str) else [text]
    )
    assert len(entries) == 1
    entry = entries[0]
    assert set(entry) == {"name", "namespace", "instance", "timestamp", "text"}
    assert entry["name"] == "sum" and entry["instance"].startswith("faaso-sum-")
    status, text, _ = await api.call("GET", "/system/logs?name=sum&since=2999-01-01T00:00:00Z")
    assert status == 200 and text == ""
    for bad in ("tail=x", "since=yesterday", "follow=maybe"):
        assert (await api.call("GET", f"/system/logs?name=sum&{bad}"))[0] == 422, bad
    assert (await api.call("GET", "/system/logs?name=nope"))[0] == 404
    assert (await api.call("GET", "/system/logs"))[0] == 400
    # follow: new lines arrive while the stream is open; closing it ends cleanly.
    # The runtime prints a line per request when FAASO_ACCESS_LOG=1.
    image = api.sum_image()
    status, _, _ = await api.call(
        "POST",
        "/system/functions",
        {"service": "talker", "image": image, "envVars": {"FAASO_ACCESS_LOG": "1"}},
    )
    assert status == 202
    url = api.client.make_url("/system/logs?name=talker&follow=true")
    async with api.client.session.get(url, headers=api.auth) as resp:
        assert resp.status == 200
        first = json.loads(await asyncio.wait_for(resp.content.readline(), 20))
        assert "serving" in first["text"]  # history first (tail <= 0 is unlimited)
        for attempt in range(50):  # then each request adds a line as it happens
            assert (await api.call("GET", f"/function/talker?a={attempt}", auth=False))[0] == 200
            try:
                line = await asyncio.wait_for(resp.content.readline(), 0.5)
            except TimeoutError:
                continue
            break
        else:
            pytest.fail("no log line arrived while following")
        entry = json.loads(line)
        assert entry["name"] == "talker" and "GET /?a=" in entry["text"]
    # the server still serves after the client went away
    assert (await api.call("GET", "/system/logs?name=sum&tail=1"))[0] == 200


async def test_metrics_count_invocations(api: Api) -> None:
    for i in range(5):
        assert (await api.call("GET", f"/sum?a={i}&b=1", auth=False))[0] == 200
    assert (await api.call("GET", "/sum?a=x", auth=False))[0] == 400
    _, text, headers = await api.call("GET", "/metrics", auth=False)
    assert headers["Content-Type"].startswith("text/plain")
    lines = str(text).splitlines()
    assert (
        'gateway_function_invocation_total{code="200",function_name="sum.openfaas-fn"} 5.0' in lines
    )
    assert (
        'gateway_function_invocation_total{code="400",function_name="sum.openfaas-fn"} 1.0' in lines
    )
    assert 'gateway_function_invocation_started{function_name="sum.openfaas-fn"} 6.0' in lines
    assert 'gateway_service_count{function_name="sum.openfaas-fn"} 1.0' in lines
    assert any(line.startswith("gateway_functions_seconds_bucket{") for line in lines)
    assert any(line.startswith("faaso_function_restarts_total{") for line in lines)
    _, fn, _ = await api.call("GET", "/system/function/sum")
    assert fn["invocationCount"] == 6


async def test_logs_follow_picks_up_new_instances(api: Api) -> None:
    url = api.client.make_url("/system/logs?name=sum&follow=true&tail=1")
    async with api.client.session.get(url, headers=api.auth) as resp:
        assert resp.status == 200
        first = json.loads(await asyncio.wait_for(resp.content.readline(), 20))
        status, _, _ = await api.call("POST", "/system/scale-function/sum", {"replicas": 2})
        assert status == 202
        # the new instance's startup line arrives on the same stream
        async with asyncio.timeout(30):
            while True:
                entry = json.loads(await resp.content.readline())
                if entry["instance"] != first["instance"]:
                    break
        assert entry["instance"] in await api.containers("sum")
        assert "serving" in entry["text"]


GUARDED_HANDLER = """
from pathlib import Path

if Path("/var/openfaas/secrets/api-key").read_text() == "bad":
    raise RuntimeError("refusing to start with a bad key")


def handle(event, context):
    return "ok"
"""


async def test_secret_update_that_cannot_roll_out_is_rolled_back(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    """The new value breaks the function that uses it: accepted (202), then undone in the
    background: the old value is back, on disk and in the running container, the function
    still serves, and its status says why."""
    source = tmp_path / "guarded"
    source.mkdir()
    (source / "handler.py").write_text(GUARDED_HANDLER)
    config = tmp_path / "routes.yml"
    config.write_text(
        "functions:\n  guarded: {source: guarded, secrets: [api-key], startup_timeout: 5}\n"
        "routes:\n  /guarded: guarded\n"
    )
    state = tmp_path / "state"
    SecretStore(state / "function-secrets").put("api-key", b"good")
    client = await aiohttp_client(create_app(load_config(config), state, pull=False))
    api = Api(client, state, basic("admin", password_path(state).read_text().strip()))

    async def ready() -> bool:
        return (await api.call("GET", "/healthz", auth=False))[0] == 200

    await eventually(ready, 240, "faaso to be ready")
    (before,) = await api.containers("guarded")
    status, body, _ = await api.call("PUT", "/system/secrets", {"name": "api-key", "value": "bad"})
    assert status == 202, body

    async def undone() -> bool:
        _, fn, _ = await api.call("GET", "/system/function/guarded")
        return "was not applied" in fn.get("rolloutError", "")

    await eventually(undone, 120, "the update to be undone")
    assert (state / "function-secrets" / "api-key").read_bytes() == b"good"
    assert (await api.call("GET", "/guarded", auth=False))[:2] == (200, "ok")
    await eventually(ready, 60, "faaso to be ready again")
    (after,) = await api.containers("guarded")
    assert after == before  # the instance with the old value was kept
    await client.close()


async def test_logs_engine_error_is_503_before_any_byte(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backend is asked before the status line: its error is a JSON 503, not a cut 200."""
    backend = server_app(api.client)[BACKEND]

    async def refusing(*args: object, **kwargs: object) -> AsyncIterator[tuple[str, str]]:
        for _ in range(1):  # an async generator whose first step fails
            raise BackendError("cannot read the logs: the engine refused")
        yield ("", "")  # pragma: no cover

    monkeypatch.setattr(backend, "logs", refusing)
    status, body, headers = await api.call("GET", "/system/logs?name=sum&tail=5")
    assert status == 503, (status, body)
    assert headers["Content-Type"].startswith("application/json")
    assert "engine refused" in body["error"]


async def test_status_echoes_the_deployment_as_sent(api: Api) -> None:
    """OpenFaaS's conformance tests and clients compare what they read with what they sent:
    unsent fields left out, limits and requests as sent, the faas_function label; a memory limit
    below Docker's 6 MiB floor is accepted and run at the floor, and the status says so."""
    image = api.sum_image()
    status, _, _ = await api.call("POST", "/system/functions", {"service": "bare", "image": image})
    assert status == 202
    _, fn, _ = await api.call("GET", "/system/function/bare")
    for absent in ("envVars", "annotations", "secrets", "limits", "requests", "notes"):
        assert absent not in fn, absent
    assert fn["labels"] == {"faas_function": "bare"}
    tiny = await tiny_image(api.state.parent)
    deployment = {
        "service": "tiny",
        "image": tiny,
        "labels": {"team": "qa"},
        "limits": {"memory": "5Mi", "cpu": "100m"},
        "requests": {"memory": "1Mi", "cpu": "50m"},
    }
    status, body, _ = await api.call("POST", "/system/functions", deployment)
    assert status == 202, body  # not a 400
    _, fn, _ = await api.call("GET", "/system/function/tiny")
    assert fn["limits"] == {"memory": "5Mi", "cpu": "100m"}
    assert fn["requests"] == {"memory": "1Mi", "cpu": "50m"}
    assert fn["labels"] == {"team": "qa", "faas_function": "tiny"}
    (note,) = fn["notes"]
    assert "5Mi" in note and "6Mi" in note
    _, listed, _ = await api.call("GET", "/system/functions")
    assert [f for f in listed if f["name"] == "tiny"] == [fn]
    (name,) = await api.containers("tiny")
    inspect = json.loads(await docker("inspect", name))[0]
    assert inspect["HostConfig"]["Memory"] == 6 * 2**20
    assert inspect["HostConfig"]["NanoCpus"] == 100_000_000
    for gone in ("bare", "tiny"):
        assert (await api.call("DELETE", "/system/functions", {"functionName": gone}))[0] == 202

    async def stopped() -> bool:  # a delete answers 202; its containers stop in the background
        return not await api.containers("bare") and not await api.containers("tiny")

    await eventually(stopped, 60, "the deleted functions' containers to go")
    await docker("rmi", tiny)


# A function small enough for Docker's 6 MiB floor (the python runtime needs more): perl from
# the base image, answering 200 to anything (its health check included); about 4 MiB resident.
TINY_SERVER = r"""use IO::Socket::INET;
my $s = IO::Socket::INET->new(LocalAddr => "0.0.0.0:8080", Listen => 16, ReuseAddr => 1)
  or die "$!";
while (my $c = $s->accept) {
  while (my $l = <$c>) { last if $l =~ /^\r?\n$/; }
  print $c "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
  close $c;
}
"""


async def tiny_image(where: Path) -> str:
    context = where / "tiny-image"
    context.mkdir()
    (context / "tiny.pl").write_text(TINY_SERVER)
    (context / "Dockerfile").write_text(
        'FROM faaso/debian:bookworm\nCOPY tiny.pl /tiny.pl\nCMD ["perl", "/tiny.pl"]\n'
    )
    tag = f"faaso-tests/tiny:{where.name.lower()}"
    await docker("build", "-q", "-t", tag, str(context))
    return tag


async def test_provider_mode_and_an_empty_functions_map(
    start_api: Callable[..., Awaitable[Api]], config_file: Path
) -> None:
    """API-only use: a routes file with no functions serves; behind an OpenFaaS gateway
    (--provider-mode) /system/info has the provider's shape and the gateway's metrics are
    faaso's, so a Prometheus scraping both does not count a call twice."""
    original = config_file.read_text()
    config_file.write_text("functions: {}\n")
    api = await start_api(provider_mode=True)
    status, info, _ = await api.call("GET", "/system/info")
    assert status == 200
    assert set(info) == {"provider", "orchestration", "version"}
    assert (info["provider"], info["orchestration"]) == ("faaso", "docker")
    assert info["version"]["release"] and info["version"]["sha"]
    assert (await api.call("GET", "/system/functions"))[:2] == (200, [])
    # a function arrives (here by the file's hot reload); calls to it are counted as faaso's
    config_file.write_text(original)

    async def served() -> bool:
        status, _, _ = await api.call("GET", "/function/sum?a=1&b=2", auth=False)
        return status == 200

    await eventually(served, 240, "sum to be served after the reload")
    _, text, _ = await api.call("GET", "/metrics", auth=False)
    lines = str(text).splitlines()
    assert 'faaso_function_invocation_total{code="200",function_name="sum.openfaas-fn"} 1.0' in (
        lines
    )
    assert any(line.startswith("faaso_functions_seconds_bucket{") for line in lines)
    assert 'faaso_service_count{function_name="sum.openfaas-fn"} 1.0' in lines
    assert any(line.startswith("faaso_function_restarts_total{") for line in lines)
    assert not [line for line in lines if line.startswith(("gateway_", "# HELP gateway_"))]


async def test_namespaces(start_api: Callable[..., Awaitable[Api]]) -> None:
    """Namespaces as faasd and faas-netes have them: functions and secrets per namespace,
    /function/NAME.NAMESPACE, the namespace in the query for reads and in the body for writes.
    A function named like one of the default namespace is another function."""
    api = await start_api()
    image = api.sum_image()
    assert (await api.call("GET", "/system/namespaces"))[:2] == (200, ["openfaas-fn"])
    new = {"name": "dev", "labels": {"team": "a"}}
    assert (await api.call("POST", "/system/namespaces", new))[0] == 200
    assert (await api.call("POST", "/system/namespaces", new))[0] == 409
    assert (await api.call("POST", "/system/namespaces", {"name": "Bad_One"}))[0] == 400
    assert (await api.call("GET", "/system/namespaces"))[1] == ["openfaas-fn", "dev"]
    status, doc, _ = await api.call("GET", "/system/namespace/dev")
    assert (status, doc) == (200, {"name": "dev", "labels": {"team": "a"}, "annotations": {}})
    # secrets: one name, two namespaces, two values
    for namespace, value in (("dev", "dev-value"), (None, "default-value")):
        secret = {"name": "token", "value": value, "namespace": namespace}
        assert (await api.call("POST", "/system/secrets", secret))[0] == 200
    listed = (await api.call("GET", "/system/secrets?namespace=dev"))[1]
    assert listed == [{"name": "token", "namespace": "dev"}]
    listed = (await api.call("GET", "/system/secrets"))[1]
    assert listed == [{"name": "token", "namespace": "openfaas-fn"}]
    # a function 'sum' in dev, beside the routes file's 'sum'
    deployment = {"service": "sum", "image": image, "namespace": "dev", "secrets": ["token"]}
    status, body, _ = await api.call("POST", "/system/functions", deployment)
    assert status == 202, body
    elsewhere = {**deployment, "namespace": "nope"}
    status, body, _ = await api.call("POST", "/system/functions", elsewhere)
    assert status == 400 and "does not exist" in body["error"]
    assert (await api.call("GET", "/function/sum.dev?a=1&b=2", auth=False))[:2] == (200, 3)
    assert (await api.call("GET", "/function/sum?a=1&b=1", auth=False))[:2] == (200, 2)
    (name,) = await api.containers("sum.dev")
    inspect = json.loads(await docker("inspect", name))[0]
    (mount,) = [m for m in inspect["Mounts"] if m["Destination"].endswith("/token")]
    assert Path(mount["Source"]).read_text() == "dev-value"
    _, listed, _ = await api.call("GET", "/system/functions?namespace=dev")
    assert [(f["name"], f["namespace"]) for f in listed] == [("sum", "dev")]
    assert listed[0]["labels"] == {"faas_function": "sum"}
    _, listed, _ = await api.call("GET", "/system/functions")
    assert [(f["name"], f["namespace"]) for f in listed] == [("sum", "openfaas-fn")]
    for path in ("/system/function/sum?namespace=dev", "/system/function/sum.dev"):
        status, fn, _ = await api.call("GET", path)
        assert (status, fn["namespace"], fn["secrets"]) == (200, "dev", ["token"]), path
    assert (await api.call("GET", "/system/function/sum.dev?namespace=openfaas-fn"))[0] == 400
    # writes: the namespace in the body
    scale = {"serviceName": "sum", "namespace": "dev", "replicas": 2}
    assert (await api.call("POST", "/system/scale-function/sum", scale))[0] == 202

    async def two() -> bool:  # a scale answers 202; the instances start in the background
        return len(await api.containers("sum.dev")) == 2

    await eventually(two, 120, "sum.dev at two instances")
    assert len(await api.containers("sum")) == 1
    status, text, headers = await api.call("GET", "/system/logs?name=sum&namespace=dev")
    assert status == 200 and headers["Content-Type"].startswith("application/x-ndjson")
    entries = [json.loads(line) for line in str(text).splitlines() if line.strip()]
    assert all(e["name"] == "sum" and e["namespace"] == "dev" for e in entries)
    status, _, headers = await api.call("POST", "/async-function/sum.dev?a=1", auth=False)
    assert status == 202 and headers["X-Call-Id"]
    _, metrics_text, _ = await api.call("GET", "/metrics", auth=False)
    assert 'gateway_function_invocation_total{code="200",function_name="sum.dev"}' in str(
        metrics_text
    )
    # a namespace in use is not deleted; the default one never is
    status, body, _ = await api.call("DELETE", "/system/namespaces", {"name": "dev"})
    assert status == 409 and "functions" in body["error"]
    assert (await api.call("DELETE", "/system/namespaces", {"name": "openfaas-fn"}))[0] == 400
    # kept across a restart
    await api.client.close()
    api = await start_api()
    assert (await api.call("GET", "/system/namespaces"))[1] == ["openfaas-fn", "dev"]
    assert (await api.call("GET", "/function/sum.dev?a=2&b=2", auth=False))[:2] == (200, 4)
    # removal, in the namespace the body names
    remove = {"functionName": "sum", "namespace": "dev"}
    assert (await api.call("DELETE", "/system/functions", remove))[0] == 202

    async def none() -> bool:
        return await api.containers("sum.dev") == []

    await eventually(none, 60, "sum.dev's containers to go")
    assert (await api.call("GET", "/function/sum.dev", auth=False))[0] == 404
    assert (await api.call("GET", "/function/sum?a=1&b=1", auth=False))[:2] == (200, 2)
    status, body, _ = await api.call("DELETE", "/system/namespaces", {"name": "dev"})
    assert status == 409 and "secrets" in body["error"]
    secret = {"name": "token", "namespace": "dev"}
    assert (await api.call("DELETE", "/system/secrets", secret))[0] == 200
    assert (await api.call("DELETE", "/system/namespace/dev"))[0] == 200
    assert (await api.call("GET", "/system/namespaces"))[1] == ["openfaas-fn"]
    assert (await api.call("GET", "/system/secrets?namespace=dev"))[0] == 400
    assert (await api.call("GET", "/system/secrets"))[1] == [
        {"name": "token", "namespace": "openfaas-fn"}
    ]
