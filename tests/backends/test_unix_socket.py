"""The Unix-socket way into an instance, with a real engine: no published port, no NAT.

DockerBackend gives each instance a directory under its socket root, bind-mounted at
/run/faaso with FAASO_SOCKET set; the python runtime listens there beside TCP 8080. Everything
here talks to 127.0.0.1 or to Unix sockets on the host, never to a container's bridge address.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from faaso.backends.base import InstanceSpec
from faaso.backends.docker.backend import DockerBackend
from faaso.build import engine as docker_client
from faaso.build.builder import Builder
from faaso.config.routes_file import load_config
from faaso.config.runtimes import RuntimeCatalog
from faaso.dev.loop import load_function_dir
from faaso.gateway.app import STATE
from faaso.logs import get_logger
from faaso.server.app import create_app
from faaso.spec.endpoint import Endpoint
from tests.helpers import ROOT, docker, eventually, free_port, server_app

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("require_docker"),
    pytest.mark.timeout(300),
]

FUNCTIONS = ROOT / "conf" / "functions"
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


async def get_unix(path: str, target: str) -> tuple[int, bytes]:
    connector = aiohttp.UnixConnector(path=path)
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        session.get(f"http://function{target}") as resp,
    ):
        return resp.status, await resp.read()


async def get_tcp(endpoint: Endpoint, target: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(endpoint.base_url + target) as resp,
    ):
        return resp.status, await resp.read()


async def answers_tcp(endpoint: Endpoint) -> bool:
    try:
        return (await get_tcp(endpoint, "/_/health"))[0] == 200
    except (aiohttp.ClientError, OSError):
        return False


async def docker_inspect(ref: str) -> dict[str, Any]:
    out = await docker("inspect", ref)
    inspected: list[dict[str, Any]] = json.loads(out)
    return inspected[0]


async def build(folder: Path) -> str:
    catalog = RuntimeCatalog()
    docker = await docker_client.connect()
    try:
        builder = Builder(docker, catalog, get_logger("test"), allow_pull=False)
        return await builder.ensure(load_function_dir(folder, catalog).spec)
    finally:
        await docker.close()


@pytest.fixture(scope="module")
def sum_image(require_docker: None) -> str:
    return asyncio.run(build(FUNCTIONS / "sum"))  # once, in a loop of its own


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[DockerBackend]:
    docker = await docker_client.connect()
    backend = DockerBackend(docker, f"test-{secrets.token_hex(4)}", tmp_path / "sockets")
    yield backend
    for instance in await backend.list_instances():
        await backend.stop(instance.id, timeout=0)
    await backend.close()


@pytest.mark.parametrize("read_only_root", [False, True], ids=["rw-root", "read-only-root"])
async def test_an_instance_answers_on_its_unix_socket_and_its_directory_goes_with_it(
    backend: DockerBackend, sum_image: str, tmp_path: Path, read_only_root: bool
) -> None:
    spec = InstanceSpec(
        function="sock-sum",
        image=sum_image,
        fingerprint="f1",
        read_only_root=read_only_root,
    )
    instance = await backend.start(spec)
    endpoint = instance.endpoint
    assert endpoint is not None and endpoint.unix is not None
    socket_dir = Path(endpoint.unix).parent
    assert socket_dir.parent == (tmp_path / "sockets").resolve()
    assert Path(endpoint.unix).name == "function.sock"
    assert socket_dir.stat().st_mode & 0o777 == 0o777
    assert (tmp_path / "sockets").stat().st_mode & 0o777 == 0o700

    inspected = await docker_inspect(instance.id)
    assert "FAASO_SOCKET=/run/faaso/function.sock" in inspected["Config"]["Env"]
    (mount,) = [m for m in inspected["Mounts"] if m["Destination"] == "/run/faaso"]
    assert mount["Type"] == "bind" and mount["RW"] is True
    assert Path(mount["Source"]) == socket_dir
    assert inspected["HostConfig"]["ReadonlyRootfs"] is read_only_root

    await eventually(lambda: answers_tcp(endpoint), 60, "the instance to answer on TCP")
    # The runtime listens on the socket before its TCP port: healthy means the socket is there.
    assert Path(endpoint.unix).is_socket()
    assert await get_unix(endpoint.unix, "/?a=2&b=3") == (200, b"5")
    assert await get_unix(endpoint.unix, "/_/health") == (200, b'{"status":"ok"}')
    assert await get_tcp(endpoint, "/?a=20&b=3") == (200, b"23")

    # inspect, and another backend over the same root (a restarted faaso adopting), agree
    again = await backend.inspect(instance.id)
    assert again is not None and again.endpoint == endpoint
    other = DockerBackend(await docker_client.connect(), backend.owner, tmp_path / "sockets")
    try:
        stale = (tmp_path / "sockets" / "0badc0de").resolve()
        stale.mkdir(mode=0o777)  # a directory no container uses (a faaso that died)
        (found,) = await other.list_instances()
        assert found.id == instance.id and found.endpoint == endpoint
        assert not stale.exists() and socket_dir.is_dir()
    finally:
        await other.close()

    await backend.stop(instance.id, timeout=5)
    assert not socket_dir.exists()
    assert await backend.inspect(instance.id) is None


async def test_a_node_instance_answers_on_its_unix_socket_too(backend: DockerBackend) -> None:
    image = await build(FUNCTIONS / "greet")
    instance = await backend.start(InstanceSpec("sock-greet", image, "f1", read_only_root=True))
    endpoint = instance.endpoint
    assert endpoint is not None and endpoint.unix is not None
    await eventually(lambda: answers_tcp(endpoint), 60, "the node instance to answer on TCP")
    assert Path(endpoint.unix).is_socket()
    assert Path(endpoint.unix).stat().st_mode & 0o777 == 0o666
    assert await get_unix(endpoint.unix, "/?name=Ada") == (200, b'{"greeting":"hello Ada"}')
    await backend.stop(instance.id, timeout=5)
    assert not Path(endpoint.unix).parent.exists()


async def test_an_instance_without_socket_root_is_tcp_only(sum_image: str) -> None:
    docker = await docker_client.connect()
    backend = DockerBackend(docker, f"test-{secrets.token_hex(4)}")
    try:
        instance = await backend.start(InstanceSpec("sock-tcp", sum_image, "f1"))
        try:
            assert instance.endpoint is not None and instance.endpoint.unix is None
            inspected = await docker_inspect(instance.id)
            assert not any(e.startswith("FAASO_SOCKET=") for e in inspected["Config"]["Env"])
            assert not inspected["Mounts"]
        finally:
            await backend.stop(instance.id, timeout=0)
    finally:
        await backend.close()


async def test_docker_run_without_faaso_socket_still_serves_tcp(sum_image: str) -> None:
    port = free_port()
    cid = (await docker("run", "-d", "--rm", "-p", f"127.0.0.1:{port}:8080", sum_image)).strip()
    try:
        endpoint = Endpoint("127.0.0.1", port)
        await eventually(lambda: answers_tcp(endpoint), 60, "the plain container to answer")
        assert await get_tcp(endpoint, "/?a=2&b=3") == (200, b"5")
        assert "FAASO_SOCKET" not in " ".join((await docker_inspect(cid))["Config"]["Env"])
    finally:
        await docker("rm", "-f", cid)


async def test_the_pool_gets_unix_only_where_the_socket_exists(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    """sum (python runtime) makes its socket; shout (dockerfile runtime's watchdog) does not."""
    for name in ("sum", "shout"):
        shutil.copytree(FUNCTIONS / name, tmp_path / name)
    config = tmp_path / "routes.yml"
    config.write_text(
        "functions:\n  sum: {source: sum}\n  shout: {source: shout}\n"
        "routes:\n  /sum: sum\n  /shout: shout\n"
    )
    state = tmp_path / "state"
    client = await aiohttp_client(create_app(load_config(config), state, auth=False, pull=False))
    try:

        async def ready() -> bool:
            async with client.get("/healthz") as resp:
                return resp.status == 200

        await eventually(ready, 240, "both functions ready")
        pools = server_app(client)[STATE].pools
        (sum_member,) = pools.get("sum").members()
        (shout_member,) = pools.get("shout").members()

        unix = sum_member.endpoint.unix
        assert unix is not None and Path(unix).is_socket()
        assert Path(unix).parent.parent == (state / "sockets").resolve()
        assert await get_unix(unix, "/?a=4&b=5") == (200, b"9")

        # shout got a socket directory too (the backend cannot know), but made no socket there
        assert shout_member.endpoint.unix is None
        shout_dirs = [d for d in (state / "sockets").iterdir() if d.resolve() != Path(unix).parent]
        assert len(shout_dirs) == 1 and list(shout_dirs[0].iterdir()) == []
        async with client.post("/shout", data=b"hi") as resp:
            assert (resp.status, await resp.read()) == (200, b"HI")
    finally:
        await client.close()
    assert list((state / "sockets").iterdir()) == [], "socket directories left after shutdown"
