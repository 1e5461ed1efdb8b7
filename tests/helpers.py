"""Helpers shared by the tests: ports, polling with a deadline, raw sockets, a faaso process.

Fixtures live in conftest.py; everything a test imports lives here (no test module imports
another).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from faaso.api.async_jobs import AsyncJobsHolder, Waker, add_async_routes
from faaso.api.auth import basic_auth_middleware
from faaso.api.handlers import ApiHolder, api_app
from faaso.config.routes_file import AsyncSettings
from faaso.control.async_workers import AsyncWorkers
from faaso.gateway.app import GatewayState, gateway_app
from faaso.gateway.async_enqueue import INTAKE, AsyncIntake, IntakeSlot
from faaso.gateway.fast.relay import FAST_PATH, FastPath, FastSite, FrontConnection
from faaso.logs import get_logger
from faaso.server import async_plane
from faaso.spec.endpoint import Endpoint
from faaso.spec.function import FunctionSpec
from faaso.spec.routing import RouteTable
from faaso.state.paths import owner_id
from faaso.state.queue import JobQueue

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_request(
    port: int, path: str, *, method: str = "GET", body: bytes | None = None
) -> tuple[int, bytes]:
    """One blocking request to 127.0.0.1:``port``: (status, body), or (0, b"") when nothing
    answers (so it can be polled)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except OSError:
        return 0, b""
    finally:
        conn.close()


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and localhost), made with Debian's openssl:
    (certificate, private key), PEM files in ``directory``."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


def docker_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def swarm_state() -> str:
    """The engine's Swarm state: ``active``, ``inactive``, ``pending`` ..."""
    out = subprocess.run(
        ["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"], capture_output=True, text=True
    )
    return out.stdout.strip()


def swarm_services(owner: str) -> dict[str, dict[str, Any]]:
    """The Swarm services a faaso with this owner id made, by function: their inspect JSON."""
    ids = subprocess.run(
        ["docker", "service", "ls", "-q", "--filter", f"label=faaso.owner={owner}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not ids:
        return {}
    # A service removed between the two commands is left out: inspect still prints the others
    # (and exits 1), so its exit status is not checked.
    shown = subprocess.run(
        ["docker", "service", "inspect", *ids], capture_output=True, text=True, check=False
    ).stdout
    return {s["Spec"]["Labels"]["faaso.function"]: s for s in json.loads(shown or "[]")}


def remove_swarm_services(owner: str) -> None:
    """Remove the services (and secret versions) a test's faaso made: only those."""
    for found in swarm_services(owner).values():
        subprocess.run(["docker", "service", "rm", found["ID"]], capture_output=True, check=False)
    secrets = subprocess.run(
        ["docker", "secret", "ls", "-q", "--filter", f"label=faaso.owner={owner}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    if secrets:
        subprocess.run(["docker", "secret", "rm", *secrets], capture_output=True, check=False)


def swarm_tasks_running(owner: str, function: str) -> set[str]:
    """The ids of a test's faaso's Swarm tasks of ``function`` that are meant to run."""
    found = swarm_services(owner).get(function)
    if found is None:
        return set()
    out = subprocess.run(
        ["docker", "service", "ps", found["ID"], "-q", "--filter", "desired-state=running"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(0.3)  # poll with a deadline
    pytest.fail(f"{what}: not within {timeout} s (last: {last!r})")


def get_json(served: Served, path: str) -> tuple[int, Any]:
    """GET ``path`` from a running faaso: its status and JSON (0 and None while it does not
    listen yet). Fails the test when faaso has exited."""
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


def available(served: Served, name: str, count: int) -> bool:
    """``availableReplicas`` of the function is ``count`` (0 is left out of the JSON)."""
    status, doc = get_json(served, f"/system/function/{name}")
    return status == 200 and isinstance(doc, dict) and doc.get("availableReplicas", 0) == count


class Load:
    """A bounded load on a running faaso: ``connections`` clients in a thread of their own, each
    on one keep-alive connection, sending the same request again and again until :meth:`stop`,
    ``seconds`` or ``max_requests`` in all (so it stops by itself). Every answer is counted:
    ``ok`` when ``check(status, body)`` says so, otherwise by what came back; every connection
    error too."""

    def __init__(
        self,
        port: int,
        method: str,
        path: str,
        check: Callable[[int, bytes], bool],
        *,
        body: bytes | None = None,
        connections: int = 32,
        seconds: float = 300.0,
        max_requests: int = 400_000,
    ) -> None:
        self.url = f"http://127.0.0.1:{port}{path}"
        self.method, self.body, self.check = method, body, check
        self.connections, self.seconds, self.max_requests = connections, seconds, max_requests
        self.outcomes: dict[str, int] = {}
        self.bodies: list[bytes] = []  # the last answers that passed the check (a few)
        self._stop = False
        self._thread: threading.Thread | None = None

    def _count(self, key: str) -> None:
        self.outcomes[key] = self.outcomes.get(key, 0) + 1  # one event loop: no race

    async def _worker(self, deadline: float) -> None:
        connector = aiohttp.TCPConnector(limit=1)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            while not self._stop and time.monotonic() < deadline:
                if sum(self.outcomes.values()) >= self.max_requests:
                    return
                try:
                    async with session.request(self.method, self.url, data=self.body) as resp:
                        body = await resp.read()
                    if self.check(resp.status, body):
                        self._count("ok")
                        self.bodies = [*self.bodies[-15:], body]
                    else:
                        self._count(f"{resp.status} {body[:100]!r}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self._count(f"error {exc!r}"[:120])

    async def _main(self) -> None:
        deadline = time.monotonic() + self.seconds
        await asyncio.gather(*(self._worker(deadline) for _ in range(self.connections)))

    def start(self) -> Load:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, int]:
        """Stop, wait for the clients, and return the outcomes."""
        self._stop = True
        assert self._thread is not None, "the load was not started"
        self._thread.join(90)
        assert not self._thread.is_alive(), "the load did not stop"
        return dict(self.outcomes)

    @property
    def ok(self) -> int:
        return self.outcomes.get("ok", 0)

    def failures(self) -> dict[str, int]:
        return {k: v for k, v in self.outcomes.items() if k != "ok"}


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll ``check`` until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)  # poll with a deadline


class FastTestServer(TestServer):
    """An aiohttp test server listening the way ``faaso serve`` does: through the fast path,
    which hands what it does not relay itself to the app."""

    async def start_server(
        self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any
    ) -> None:
        if self.runner:
            return
        self.runner = await self._make_runner(handler_cancellation=True, **kwargs)
        await self.runner.setup()
        site = FastSite(self.runner, self.app[FAST_PATH], self.host, 0, drain_timeout=2.0)
        await site.start()
        self.port = site.port
        self.scheme = "http"
        self._root = URL(f"http://{self.host}:{self.port}")


async def raw_function(
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> tuple[asyncio.Server, Endpoint]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await answer(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, Endpoint("127.0.0.1", server.sockets[0].getsockname()[1])


def answer_once(
    response: bytes,
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A scripted function: reads one request, sends ``response`` as it is, closes."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response)
        await writer.drain()

    return answer


async def read_request(reader: asyncio.StreamReader) -> bytes:
    data = await reader.readuntil(b"\r\n\r\n")
    for line in data.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            data += await reader.readexactly(int(line.split(b":")[1]))
    return data


async def read_response(reader: asyncio.StreamReader, *, to_head: bool = False) -> bytes:
    """One HTTP/1.x response as it came, framed by its head: a Content-Length body, chunks up
    to the last one and the trailers, or until the connection closes. ``to_head``: the answer
    to a HEAD (no body whatever the head says). 1xx heads are read past. Raises
    IncompleteReadError (with what came) when the connection closes early."""
    data = b""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        data += head
        status = int(head[9:12])
        if status >= 200:
            break
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip().lower()
    if to_head or status in (204, 304):
        return data
    if fields.get(b"transfer-encoding", b"").endswith(b"chunked"):
        while True:
            size_line = await reader.readuntil(b"\r\n")
            data += size_line
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            data += await reader.readexactly(size + 2)
        while True:  # trailers, up to the empty line
            line = await reader.readuntil(b"\r\n")
            data += line
            if line == b"\r\n":
                return data
    if b"content-length" in fields:
        try:
            return data + await reader.readexactly(int(fields[b"content-length"]))
        except asyncio.IncompleteReadError as exc:
            raise asyncio.IncompleteReadError(data + exc.partial, None) from None
    return data + await reader.read()


async def exchange(
    port: int,
    raw: bytes,
    responses: int = 1,
    *,
    to_head: Collection[int] = (),
    until_close: bool = False,
    timeout: float = 20.0,
) -> bytes:
    """Send raw bytes on one connection and read ``responses`` framed responses (fewer if the
    connection closes first; ``to_head``: the indexes of those answering a HEAD), then, with
    ``until_close``, whatever else comes until it closes. What came, as it came."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = b""
    try:
        async with asyncio.timeout(timeout):
            writer.write(raw)
            await writer.drain()
            try:
                for i in range(responses):
                    data += await read_response(reader, to_head=i in to_head)
            except asyncio.IncompleteReadError as exc:
                return data + exc.partial  # closed early: what came is the answer
            if until_close:
                data += await reader.read()
    finally:
        writer.close()
    return data


async def poll(check: Callable[[], bool], timeout: float) -> bool:
    """Poll ``check`` until it holds or the deadline passes; whether it held."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)  # poll with a deadline
    return True


def fast_of(client: Any) -> FastPath:
    """The fast path of a test client's gateway app."""
    fast: FastPath = client.server.app[FAST_PATH]
    return fast


async def slow_reader(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client connection with a tiny receive window that does not read until told to."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock, limit=1024)


def small_send_buffer(front: FrontConnection) -> None:
    """The proxy's socket to that client: a fixed, small kernel send buffer (no autotuning),
    so that the proxy has to buffer after a few KiB."""
    assert front.transport is not None
    front.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


READY_DEADLINE = 900.0  # a cold first build (apt in the image, wheels) fits well inside this


@dataclass
class Served:
    port: int
    proc: subprocess.Popen[bytes]
    state_dir: Path
    log: Path

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


async def docker(*argv: str) -> str:
    """Run the docker CLI without blocking the event loop; its stdout. Fails the test on error."""
    proc = await asyncio.create_subprocess_exec(
        "docker", *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        pytest.fail(f"docker {' '.join(argv)} failed ({proc.returncode}): {err.decode()}")
    return out.decode()


async def containers_of(
    state_dir: Path, function: str | None = None, running: bool = True, paused: bool = False
) -> list[str]:
    """Names of the containers a faaso on ``state_dir`` owns (of one function, if given; only
    the paused ones with ``paused``)."""
    owner = f"label=faaso.owner={owner_id(state_dir)}"
    argv = ["ps", "--format", "{{.Names}}", "--filter", owner]
    if paused:
        argv += ["--filter", "status=paused"]
    if not running:
        argv.insert(1, "-a")
    if function:
        argv += ["--filter", f"label=faaso.function={function}"]
    return sorted((await docker(*argv)).split())


def docker_ps(*filters: str) -> list[str]:
    argv = ["docker", "ps", "-a", "--format", "{{.Names}}"]
    for f in filters:
        argv += ["--filter", f]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return sorted(out.split())


def wait_ready(served: Served, deadline: float) -> None:
    """Poll /healthz until 200, failing early if the server died."""
    end = time.monotonic() + deadline
    last = ""
    while time.monotonic() < end:
        if served.proc.poll() is not None:
            pytest.fail(f"faaso exited with {served.proc.returncode}:\n{served.log_text()[-4000:]}")
        try:
            status, _, body = served.request("GET", "/healthz")
            last = body.decode(errors="replace")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)  # poll with a deadline
    pytest.fail(
        f"faaso not ready after {deadline} s; /healthz said {last}\n{served.log_text()[-4000:]}"
    )


def start_serve(config: Path, state_dir: Path, log: Path, *extra: str) -> Served:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "faaso",
                "serve",
                str(config),
                "--port",
                str(port),
                "--state-dir",
                str(state_dir),
                "--log-format",
                "json",
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    return Served(port, proc, state_dir, log)


def stop_serve(served: Served, timeout: float = 60.0) -> int:
    if served.proc.poll() is None:
        served.proc.send_signal(signal.SIGTERM)
    try:
        return served.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        served.proc.kill()
        served.proc.wait()
        raise


def server_app(client: Any) -> web.Application:
    """The aiohttp app behind a test client (typed loosely: tests reach into its state)."""
    server = client.server
    assert isinstance(server, TestServer)
    return server.app


def port_of(server: TestServer) -> int:
    """The port a started test server listens on."""
    assert server.port is not None
    return server.port


# -- asynchronous invocations: a callback server of our own and the gateway with its workers --


@dataclass
class Callback:
    """One POST the callback server received."""

    path: str
    headers: dict[str, str]
    body: bytes


class CallbackSink:
    """A real callback server on 127.0.0.1. ``answers`` scripts its first statuses (then 200);
    ``down()`` / ``up()`` stop and restart it on the same port."""

    def __init__(self) -> None:
        self.received: list[Callback] = []
        self.answers: list[int] = []
        self.changed = asyncio.Event()
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.answers.pop(0) if self.answers else 200
        if status < 400:
            self.received.append(Callback(request.path_qs, dict(request.headers), body))
        self.changed.set()
        return web.Response(status=status)

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def ids(self) -> list[str]:
        return [c.headers.get("X-Call-Id", "") for c in self.received]

    async def wait_for(self, count: int, timeout: float) -> list[Callback]:
        """Wait until ``count`` callbacks arrived (fails at the deadline)."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"{len(self.received)} callbacks of {count} after {timeout} s")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.changed.wait()
        return self.received


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text as {(sample name, sorted labels): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


RIG_PASSWORD = "rig-password"  # the /system API's password in an async rig


@dataclass
class AsyncRig:
    """The gateway (listening as ``faaso serve`` does) with its queue, intake and workers, in
    front of real aiohttp servers standing for functions."""

    url: str
    queue: JobQueue
    intake: AsyncIntake
    workers: AsyncWorkers
    state: GatewayState
    session: aiohttp.ClientSession
    specs: dict[str, FunctionSpec]

    async def enqueue(
        self,
        path: str,
        *,
        method: str = "POST",
        body: bytes | AsyncIterator[bytes] = b"",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        url = URL(self.url + path, encoded=True)  # sent as written
        async with self.session.request(method, url, data=body, headers=headers) as resp:
            return resp.status, dict(resp.headers), await resp.read()

    async def api(
        self, method: str, path: str, body: Any = None, *, auth: bool = True
    ) -> tuple[int, Any]:
        """A call to the ``/system`` API (basic auth as admin with :data:`RIG_PASSWORD`)."""
        token = base64.b64encode(f"admin:{RIG_PASSWORD}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"} if auth else {}
        async with self.session.request(
            method, self.url + path, json=body, headers=headers
        ) as resp:
            raw = await resp.read()
            return resp.status, json.loads(raw) if raw else None

    async def metrics(self) -> str:
        async with self.session.get(self.url + "/metrics") as resp:
            assert resp.status == 200
            return await resp.text()


@contextlib.asynccontextmanager
async def async_rig(
    tmp: Path,
    functions: dict[str, web.Application],
    *,
    settings: AsyncSettings | None = None,
    specs: dict[str, FunctionSpec] | None = None,
    start_workers: bool = True,
    lease: float = 30.0,
    renew_every: float = 10.0,
) -> AsyncIterator[AsyncRig]:
    settings = settings or AsyncSettings()
    specs = dict(specs or {})
    for name in functions:
        specs.setdefault(name, FunctionSpec(name=name, image="test"))
    async with contextlib.AsyncExitStack() as stack:
        state = GatewayState(RouteTable({}, set(functions)))
        for name, fapp in functions.items():
            server = TestServer(fapp)
            await server.start_server()
            stack.push_async_callback(server.close)
            state.pools.get(name).add(f"{name}-1", Endpoint("127.0.0.1", port_of(server)))
        queue = await JobQueue.open(tmp / "queue.db")
        stack.push_async_callback(queue.close)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        invoke_session = await stack.enter_async_context(aiohttp.ClientSession())
        plane = async_plane.compose(
            queue,
            state,
            invoke_session,
            session,
            settings=settings,
            spec_of=specs.get,
            timeout_of=lambda _name: 5.0,
            log=get_logger("faaso.test"),
            lease=lease,
            renew_every=renew_every,
        )
        workers, intake = plane.workers, plane.intake
        # The /system API with its auth and the asynchronous routes, as the server mounts it.
        holder = AsyncJobsHolder()
        holder.queue = queue
        waker = Waker()
        waker.wake = workers.wake

        def mount(gateway: web.Application) -> None:
            gateway.add_subapp(
                "/system",
                api_app(
                    ApiHolder(),
                    [basic_auth_middleware(RIG_PASSWORD)],
                    (lambda api: add_async_routes(api, holder, waker),),
                ),
            )

        app = gateway_app(state, mount)
        app[INTAKE] = IntakeSlot(intake)
        front = FastTestServer(app)
        await front.start_server()
        stack.push_async_callback(front.close)
        if start_workers:
            await workers.start()
            stack.push_async_callback(workers.close, 5.0)
        yield AsyncRig(
            f"http://127.0.0.1:{port_of(front)}", queue, intake, workers, state, session, specs
        )


# -- a registry that requires a login (Debian's docker-registry with an htpasswd file) --------


@contextlib.contextmanager
def auth_registry(directory: Path, username: str, password: str) -> Iterator[str]:
    """A registry on 127.0.0.1 (a free port) that refuses anyone but ``username``: Debian's
    ``docker-registry`` with htpasswd auth (bcrypt, the only hash it takes), its storage in
    ``directory``. Yields its address; stops it (this process only) at the end."""
    import bcrypt  # test dependency, for the htpasswd line

    directory.mkdir(parents=True, exist_ok=True)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5, prefix=b"2a")).decode()
    (directory / "htpasswd").write_text(f"{username}:{hashed}\n")
    port = free_port()
    conf = directory / "registry.yml"
    conf.write_text(
        "version: 0.1\n"
        f"storage: {{filesystem: {{rootdirectory: {directory / 'storage'}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
        f"auth: {{htpasswd: {{realm: faaso-test, path: {directory / 'htpasswd'}}}}}\n"
    )
    with (directory / "registry.log").open("wb") as out:
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(conf)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        end = time.monotonic() + 30
        while http_request(port, "/v2/")[0] != 401:
            if proc.poll() is not None or time.monotonic() > end:
                log = (directory / "registry.log").read_text(errors="replace")
                pytest.fail(f"the registry with auth did not start:\n{log[-2000:]}")
            time.sleep(0.1)  # poll with a deadline
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tiny_image(directory: Path, tag: str) -> str:
    """A small local image (FROM scratch, one file), built offline: something to push."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "payload.txt").write_text(f"{tag}\n")
    (directory / "Dockerfile").write_text("FROM scratch\nCOPY payload.txt /payload.txt\n")
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, str(directory)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return tag
