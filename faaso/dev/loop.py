"""The function developer's loop, with no server: new, build, test, run, export.

Every command takes a function folder. Its name is the folder's name, lowercased, and must be a
valid function name; its runtime is ``runtime:`` in its ``function.yml``, else the one asked for
on the command line, else ``python``. Containers started here publish port 8080 on 127.0.0.1
only (on a port of their own; ``faaso run`` serves its port through the gateway's proxy), carry
the label ``faaso.dev=true`` and are removed when the command ends (Ctrl-C included).

Library code: it raises :class:`faaso.errors.FaasoError` subclasses and reports through a
structlog logger and callbacks; :mod:`faaso.cli.dev` prints and picks exit codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import watchfiles
import yarl
from aiohttp import web
from structlog.typing import FilteringBoundLogger

from faaso.build import engine as docker_client
from faaso.build.builder import IGNORED_NAMES, IGNORED_SUFFIXES, Builder, ignored_by
from faaso.config.runtimes import (
    FUNCTION_FILE,
    STARTER_DIR,
    Runtime,
    RuntimeCatalog,
    TestCase,
    load_function_file,
)
from faaso.errors import ConfigError, DevError, FaasoError
from faaso.gateway.admission import Admission
from faaso.gateway.pools import Pools, drain
from faaso.gateway.proxy import Proxy
from faaso.spec.endpoint import Endpoint
from faaso.spec.function import FUNCTION_NAME_RE, FunctionSpec
from faaso.spec.routing import RouteTable

DEFAULT_RUNTIME = "python"
FUNCTION_PORT = 8080
HEALTH_PATH = "/_/health"
DEV_LABEL = "faaso.dev"
STARTUP_TIMEOUT = 60.0  # seconds a container gets to answer its health check
REQUEST_TIMEOUT = 30.0
POLL = 0.02
LOG_TAIL = 20
WATCH_DEBOUNCE_MS = 300


# --------------------------------------------------------------------------- function folders


@dataclass(frozen=True, slots=True)
class FunctionDir:
    """A function folder, as the local commands see it."""

    name: str
    source: Path
    runtime: Runtime
    tests: tuple[TestCase, ...] = ()

    @property
    def spec(self) -> FunctionSpec:
        return FunctionSpec(name=self.name, source=self.source, runtime=self.runtime.name)


def function_name(folder: Path) -> str:
    """The function's name: the folder's name, lowercased. Raises DevError if it is not valid."""
    name = folder.name.lower()
    if not FUNCTION_NAME_RE.match(name):
        raise DevError(
            f"{folder}: the function's name comes from its folder's name, and {name!r} is not a "
            "valid one: lowercase letters, digits and '-', starting and ending with a letter or "
            "digit, at most 63 characters"
        )
    return name


def load_function_dir(
    path: Path, catalog: RuntimeCatalog, runtime: str | None = None
) -> FunctionDir:
    """Read a function folder. Raises DevError or ConfigError naming the file and what is wrong."""
    source = path.resolve()
    if not source.is_dir():
        raise DevError(f"{path}: not a function folder (no such directory)")
    name = function_name(source)
    declared = load_function_file(source)
    if runtime and declared.runtime and runtime != declared.runtime:
        raise ConfigError(
            declared.path,
            "runtime",
            declared.runtime,
            f"--runtime {runtime} was asked for, but the function says otherwise",
        )
    chosen = declared.runtime or runtime or DEFAULT_RUNTIME
    found = catalog.find(chosen)
    if found is None:
        available = ", ".join(catalog.names()) or "none"
        if declared.runtime:
            raise ConfigError(
                declared.path, "runtime", chosen, f"no such runtime; available: {available}"
            )
        raise DevError(f"no runtime {chosen!r}; available: {available}")
    return FunctionDir(name=name, source=source, runtime=found, tests=declared.tests)


def new_function(name: str, runtime_name: str, parent: Path, catalog: RuntimeCatalog) -> Path:
    """Start a function folder ``parent/name`` from a runtime's ``template/``; return it."""
    if not FUNCTION_NAME_RE.match(name):
        raise DevError(
            f"{name!r} is not a valid function name: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    runtime = catalog.find(runtime_name)
    if runtime is None:
        raise DevError(
            f"no runtime {runtime_name!r}; available: {', '.join(catalog.names()) or 'none'}"
        )
    starter = runtime.path / STARTER_DIR
    if not starter.is_dir():
        raise DevError(f"the {runtime.name} runtime has no {starter} to start a function from")
    target = parent / name
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DevError(f"{target} already exists and is not empty")
    shutil.copytree(
        starter,
        target,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns(*IGNORED_NAMES, *(f"*{s}" for s in IGNORED_SUFFIXES)),
    )
    spec_file = target / FUNCTION_FILE
    if not spec_file.exists():
        spec_file.write_text(f"runtime: {runtime.name}\n")
    elif load_function_file(target).runtime is None:
        spec_file.write_text(f"runtime: {runtime.name}\n" + spec_file.read_text())
    return target


def runtime_list(catalog: RuntimeCatalog) -> list[Runtime]:
    """Every runtime the catalog finds (earlier folders win), sorted by name."""
    out: list[Runtime] = []
    for name in catalog.names():
        found = catalog.find(name)
        if found is not None:
            out.append(found)
    return out


# --------------------------------------------------------------------------- containers


@dataclass(slots=True)
class LocalContainer:
    """One container of a function image, its port 8080 published on 127.0.0.1."""

    docker: aiodocker.Docker
    id: str
    name: str
    port: int
    image: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    async def start(
        cls, docker: aiodocker.Docker, image: str, function: str, port: int | None = None
    ) -> LocalContainer:
        """Create and start a container of ``image``; ``port`` None picks a free one."""
        name = f"faaso-dev-{function}-{secrets.token_hex(3)}"
        config: dict[str, Any] = {
            "Image": image,
            "Labels": {DEV_LABEL: "true", "faaso.function": function},
            "ExposedPorts": {f"{FUNCTION_PORT}/tcp": {}},
            "HostConfig": {
                "PortBindings": {
                    f"{FUNCTION_PORT}/tcp": [
                        {"HostIp": "127.0.0.1", "HostPort": "" if port is None else str(port)}
                    ]
                },
                "RestartPolicy": {"Name": "no"},
            },
        }
        try:
            container = await docker.containers.create(config, name=name)
        except aiodocker.DockerError as exc:
            raise DevError(f"cannot create a container of {image}: {exc.message}") from exc
        try:
            await container.start()
            info = await container.show()
        except aiodocker.DockerError as exc:
            with contextlib.suppress(aiodocker.DockerError):
                await container.delete(force=True)
            problem = str(exc.message).strip()
            if "port is already allocated" in problem or "address already in use" in problem:
                problem = f"port {port} on 127.0.0.1 is taken; choose another with --port"
            raise DevError(f"cannot start a container of {image}: {problem}") from exc
        bindings = (info["NetworkSettings"]["Ports"] or {}).get(f"{FUNCTION_PORT}/tcp") or []
        if not bindings and not info["State"].get("Running"):
            return cls(docker, container.id, name, 0, image)  # exited already: wait_healthy says
        if not bindings:
            with contextlib.suppress(aiodocker.DockerError):
                await container.delete(force=True)
            raise DevError(f"container {name} started without a published port")
        return cls(docker, container.id, name, int(bindings[0]["HostPort"]), image)

    async def state(self) -> dict[str, Any]:
        info = await self.docker.containers.container(self.id).show()
        return dict(info["State"])

    async def logs_tail(self, lines: int = LOG_TAIL) -> list[str]:
        try:
            out = await self.docker.containers.container(self.id).log(
                stdout=True, stderr=True, tail=lines
            )
        except aiodocker.DockerError:
            return []
        return [line.rstrip("\n") for chunk in out for line in chunk.splitlines()][-lines:]

    async def follow_logs(self) -> AsyncIterator[str]:
        stream = self.docker.containers.container(self.id).log(
            stdout=True, stderr=True, follow=True
        )
        async for chunk in stream:
            for line in chunk.splitlines():
                yield line.rstrip("\n")

    async def wait_healthy(
        self, session: aiohttp.ClientSession, timeout: float = STARTUP_TIMEOUT
    ) -> float:
        """Poll ``/_/health`` until it answers 200; return the seconds it took.

        Raises DevError when the container exits or does not answer in time, with its log tail.
        """
        started = time.monotonic()
        deadline = started + timeout
        checks = 0
        while True:
            try:
                async with session.get(
                    self.url + HEALTH_PATH, timeout=aiohttp.ClientTimeout(total=2)
                ) as resp:
                    await resp.read()
                    if resp.status == 200:
                        return time.monotonic() - started
            except (aiohttp.ClientError, TimeoutError):
                pass
            checks += 1
            if checks % 10 == 1:  # a dead container never answers: say so at once
                state = await self.state()
                if not state.get("Running"):
                    raise DevError(
                        f"the container of {self.image} exited with code {state.get('ExitCode')} "
                        "before answering its health check" + await self._tail_text()
                    )
            if time.monotonic() > deadline:
                raise DevError(
                    f"the container of {self.image} did not answer GET {HEALTH_PATH} with 200 on "
                    f"port {FUNCTION_PORT} within {timeout:g} s (every faaso image must serve "
                    f"HTTP on port {FUNCTION_PORT} and answer {HEALTH_PATH})"
                    + await self._tail_text()
                )
            await asyncio.sleep(POLL)  # poll with a deadline

    async def _tail_text(self) -> str:
        tail = await self.logs_tail()
        if not tail:
            return "; it printed nothing"
        return "; its output ends with:\n" + "\n".join("  | " + line for line in tail)

    async def remove(self) -> None:
        with contextlib.suppress(aiodocker.DockerError):
            await self.docker.containers.container(self.id).delete(force=True)


# --------------------------------------------------------------------------- tests


@dataclass(frozen=True, slots=True)
class TestResult:
    """What one test of function.yml gave."""

    __test__ = False  # not a pytest class

    case: TestCase
    problems: tuple[str, ...] = ()
    status: int | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def _shown(data: bytes | str, limit: int = 200) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    return repr(text if len(text) <= limit else text[:limit] + "...")


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (2 and 2.0 are one JSON number), but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def check_response(case: TestCase, status: int, headers: Any, body: bytes) -> tuple[str, ...]:
    """Compare a response with a test's ``expect``; return what differs (empty: it passed)."""
    problems: list[str] = []
    if case.status is not None and status != case.status:
        problems.append(f"status {status}, expected {case.status}")
    if case.expect_body is not None and body != case.expect_body.encode():
        problems.append(f"body {_shown(body)}, expected {_shown(case.expect_body)}")
    if case.has_json:
        try:
            parsed = json.loads(body)
        except ValueError:
            problems.append(f"body {_shown(body)} is not JSON, expected {case.expect_json!r}")
        else:
            if not json_equal(parsed, case.expect_json):
                problems.append(f"JSON {parsed!r}, expected {case.expect_json!r}")
    for name, value in case.expect_headers.items():
        got = headers.getall(name, [])
        if value not in got:
            problems.append(
                f"header {name}: {got[0] if len(got) == 1 else got or 'missing'!s}, "
                f"expected {value}"
            )
    return tuple(problems)


async def run_test(session: aiohttp.ClientSession, base_url: str, case: TestCase) -> TestResult:
    started = time.monotonic()
    url = yarl.URL(base_url + case.path, encoded=True)
    try:
        async with session.request(
            case.method,
            url,
            data=case.body,
            headers=dict(case.headers),
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        ) as resp:
            body = await resp.read()
            problems = check_response(case, resp.status, resp.headers, body)
            return TestResult(case, problems, resp.status, time.monotonic() - started)
    except (aiohttp.ClientError, TimeoutError) as exc:
        problem = f"no answer: {type(exc).__name__}: {exc}".rstrip(": ")
        return TestResult(case, (problem,), None, time.monotonic() - started)


# --------------------------------------------------------------------------- the commands


@contextlib.asynccontextmanager
async def _engine() -> AsyncIterator[aiodocker.Docker]:
    docker = await docker_client.connect()
    try:
        yield docker
    finally:
        await docker.close()


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())


async def build(
    fdir: FunctionDir, catalog: RuntimeCatalog, log: FilteringBoundLogger, *, nocache: bool = False
) -> str:
    """Build (unless the engine has it already) and return the image tag."""
    async with _engine() as docker:
        return await Builder(docker, catalog, log).ensure(fdir.spec, nocache=nocache)


async def run_tests(
    fdir: FunctionDir,
    catalog: RuntimeCatalog,
    log: FilteringBoundLogger,
    on_result: Callable[[TestResult], None] | None = None,
) -> list[TestResult]:
    """Build, start a fresh container, run every test of function.yml against it, remove it."""
    async with _engine() as docker, _session() as session:
        tag = await Builder(docker, catalog, log).ensure(fdir.spec)
        container = await LocalContainer.start(docker, tag, fdir.name)
        try:
            seconds = await container.wait_healthy(session)
            log.info("test.container_ready", image=tag, seconds=round(seconds, 2))
            results: list[TestResult] = []
            for case in fdir.tests:
                result = await run_test(session, container.url, case)
                if on_result is not None:
                    on_result(result)
                results.append(result)
            if any(not r.ok for r in results):
                for line in await container.logs_tail():
                    log.info("test.container_output", line=line)
            return results
        finally:
            await container.remove()


async def export(
    fdir: FunctionDir, out: Path, catalog: RuntimeCatalog, log: FilteringBoundLogger
) -> tuple[str, int]:
    """Build if needed and write the image as a ``docker load``-able tarball; (tag, bytes)."""
    out = out.resolve()
    if out.is_dir():
        raise DevError(f"{out} is a directory; give the tarball's file name")
    if not out.parent.is_dir():
        raise DevError(f"{out.parent} does not exist")
    async with _engine() as docker:
        tag = await Builder(docker, catalog, log).ensure(fdir.spec)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        size = 0
        try:
            with tmp.open("wb") as fh:
                async with docker.images.export_image(tag) as stream:
                    async for chunk in stream.iter_chunked(1 << 20):
                        fh.write(chunk)
                        size += len(chunk)
            tmp.replace(out)
        except aiodocker.DockerError as exc:
            raise DevError(f"cannot export {tag}: {exc.message}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        log.info("export.done", image=tag, file=str(out), bytes=size)
        return tag, size


@dataclass(slots=True)
class DevRun:
    """``faaso run``: keeps the newest good build of a function serving on one port.

    The port is faaso's own little proxy (the gateway's :class:`Proxy`), not a container's: a
    new build's container starts on a port of its own, and only once it is healthy does the
    proxy send new requests to it; the old container then finishes what it has in flight and is
    removed. So a rebuild never refuses a connection, and a new build that does not start
    leaves the old one serving.
    """

    fdir: FunctionDir
    catalog: RuntimeCatalog
    log: FilteringBoundLogger
    port: int = FUNCTION_PORT
    on_output: Callable[[str], None] = lambda line: None
    on_serving: Callable[[str, str], None] = lambda url, image: None
    container: LocalContainer | None = None
    _follower: asyncio.Task[None] | None = None
    rebuilds: int = 0
    _docker: aiodocker.Docker | None = field(default=None, repr=False)
    _pools: Pools = field(default_factory=Pools, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def run(self) -> None:
        """Build, serve, then rebuild and restart on every change until cancelled (Ctrl-C) or
        sent SIGTERM; the container is removed either way."""
        changed = asyncio.Event()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with _engine() as docker, _session() as session, _proxy_session() as upstream:
            self._docker = docker
            runner = await self._listen(upstream)
            builder = Builder(docker, self.catalog, self.log)
            # Watch before the first build, so that no change made meanwhile goes unseen.
            watcher = asyncio.create_task(self._watch(changed))
            await asyncio.sleep(0)  # let the watcher set up its watches
            try:
                await self._refresh(builder, session)
                while not stop.is_set():
                    waiters = [asyncio.ensure_future(e.wait()) for e in (changed, stop)]
                    await asyncio.wait([*waiters, watcher], return_when=asyncio.FIRST_COMPLETED)
                    for waiter in waiters:
                        waiter.cancel()
                    if watcher.done():
                        watcher.result()  # a watcher that died says why
                        return
                    if changed.is_set() and not stop.is_set():
                        changed.clear()
                        await self._refresh(builder, session)
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
                await runner.cleanup()
                await self._stop()
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(signal.SIGTERM)

    async def _listen(self, upstream: aiohttp.ClientSession) -> web.AppRunner:
        """Serve the function's port with the gateway's proxy, to whichever container is live."""
        name = self.fdir.name
        routes = RouteTable({"/": name}, {name})
        admission = Admission(self._pools, lambda _name: REQUEST_TIMEOUT, lambda _name: None, None)
        proxy = Proxy(upstream, admission, lambda: routes)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", proxy.handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise DevError(
                f"cannot listen on 127.0.0.1:{self.port} ({exc.strerror or exc}); "
                "choose another port with --port"
            ) from exc
        return runner

    async def _watch(self, changed: asyncio.Event) -> None:
        async for changes in watchfiles.awatch(
            *self._watched(),
            watch_filter=self._relevant,
            debounce=WATCH_DEBOUNCE_MS,
            step=50,
            recursive=True,
        ):
            files = sorted({Path(p).name for _, p in changes})[:5]
            self.log.info("run.change", files=files)
            changed.set()

    def _watched(self) -> list[Path]:
        return [self.fdir.source, self.fdir.runtime.path]

    def _relevant(self, change: watchfiles.Change, raw: str) -> bool:
        path = Path(raw)
        if any(part in IGNORED_NAMES for part in path.parts) or path.name.endswith(
            IGNORED_SUFFIXES
        ):
            return False
        return not ignored_by(self.fdir.source)(path)  # .faasoignore: not in the image

    async def _refresh(self, builder: Builder, session: aiohttp.ClientSession) -> None:
        assert self._docker is not None
        try:
            # The runtime itself may have changed (a user's own runtime being written).
            self.fdir = load_function_dir(self.fdir.source, self.catalog, self.fdir.runtime.name)
            tag = await builder.ensure(self.fdir.spec)
        except FaasoError as exc:
            self.log.error("run.build_failed", error=str(exc), note="fix it and save: it rebuilds")
            return
        if self.container is not None and self.container.image == tag:
            state = await self.container.state()
            if state.get("Running"):
                self.log.info("run.unchanged", image=tag)
                return
        try:  # on a port of its own: the old container keeps serving until this one is healthy
            container = await LocalContainer.start(self._docker, tag, self.fdir.name)
        except DevError as exc:
            if self.rebuilds == 0:
                raise
            self.log.error("run.start_failed", error=str(exc))
            return
        follower = asyncio.create_task(self._follow(container))
        try:
            seconds = await container.wait_healthy(session)
        except DevError as exc:
            self.log.error("run.unhealthy", error=str(exc), note="fix it and save: it rebuilds")
            await _cancel(follower)
            await container.remove()
            return
        old, old_follower = self.container, self._follower
        pool = self._pools.get(self.fdir.name)
        pool.add(container.id, Endpoint("127.0.0.1", container.port))
        self.container, self._follower = container, follower
        self.rebuilds += 1
        self.log.info("run.serving", url=self.url, image=tag, ready_s=round(seconds, 2))
        self.on_serving(self.url, tag)
        if old is not None:
            await self._retire(old, old_follower)

    async def _retire(self, container: LocalContainer, follower: asyncio.Task[None] | None) -> None:
        """Take a container out of the proxy, let its requests in flight finish, remove it."""
        member = self._pools.get(self.fdir.name).remove(container.id)
        if member is not None:
            await drain(member, REQUEST_TIMEOUT)
        if follower is not None:
            await _cancel(follower)
        await container.remove()
        self.log.info("run.stopped", container=container.name)

    async def _follow(self, container: LocalContainer) -> None:
        with contextlib.suppress(aiodocker.DockerError, aiohttp.ClientError):
            async for line in container.follow_logs():
                self.on_output(line)

    async def _stop(self) -> None:
        if self.container is not None:
            await self._retire(self.container, self._follower)
            self.container, self._follower = None, None


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def _proxy_session() -> AsyncIterator[aiohttp.ClientSession]:
    """The proxy's client: relays bodies as they are (no decompression), adds no headers."""
    async with aiohttp.ClientSession(
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        timeout=aiohttp.ClientTimeout(total=None),
    ) as session:
        yield session
