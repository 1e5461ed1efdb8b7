"""The aiohttp application: HTTP routes, and the background parts it starts and stops.

``gateway_app()`` is the HTTP side alone (health, proxy), fed by a :class:`GatewayState`; the
proxy tests use it with hand-made pools. ``create_app()`` adds the Docker side through
``cleanup_ctx``: the engine connection, the builder and the supervisor, started when the app
starts and stopped, in reverse order, when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from faaso import docker_client
from faaso.builder import Builder
from faaso.config import Config
from faaso.controller import Prober
from faaso.docker_backend import DockerBackend
from faaso.logs import get_logger
from faaso.pool import Pools
from faaso.proxy import Proxy
from faaso.reloader import Reloader
from faaso.routing import RouteTable
from faaso.runtimes import RuntimeCatalog
from faaso.supervisor import Supervisor

DEFAULT_TIMEOUT = 30.0


class GatewayState:
    """What request handlers read. Reconfiguring swaps ``routes`` in one assignment."""

    def __init__(self, routes: RouteTable, pools: Pools | None = None) -> None:
        self.routes = routes
        self.pools = pools or Pools()
        self.not_ready: Callable[[], list[dict[str, object]]] = list
        self.timeout_of: Callable[[str], float] = lambda _name: DEFAULT_TIMEOUT
        self.reload_status: Callable[[], dict[str, object]] = dict


STATE = web.AppKey("faaso_state", GatewayState)
PROXY = web.AppKey("faaso_proxy", Proxy)
SUPERVISOR = web.AppKey("faaso_supervisor", Supervisor)
RELOADER = web.AppKey("faaso_reloader", Reloader)


async def healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    not_ready = state.not_ready()
    body: dict[str, object] = {"status": "starting" if not_ready else "ok"}
    if not_ready:
        body["not_ready"] = not_ready
    reload_status = state.reload_status()
    if reload_status:
        body["reload"] = reload_status
    return web.json_response(body, status=503 if not_ready else 200)


async def proxy_handler(request: web.Request) -> web.StreamResponse:
    return await request.app[PROXY].handle(request)


def _new_client_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=0,  # per-function limits belong to the function, not to a global pool
        keepalive_timeout=30,
        enable_cleanup_closed=False,
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
    )


async def _proxy_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    async with _new_client_session() as session:
        app[PROXY] = Proxy(
            session, state.pools, lambda: state.routes, lambda name: state.timeout_of(name)
        )
        yield


def gateway_app(state: GatewayState) -> web.Application:
    """The HTTP side: /healthz and the proxy for everything else."""
    app = web.Application(handler_args={"max_field_size": 16384, "max_line_size": 16384})
    app[STATE] = state
    app.cleanup_ctx.append(_proxy_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{tail:.*}", proxy_handler)
    return app


def owner_id(state_dir: Path) -> str:
    """Labels containers with the faaso that owns them: one per state directory."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]


def create_app(
    config: Config,
    state_dir: Path,
    *,
    extra_runtime_dirs: tuple[Path, ...] = (),
    watch: bool = True,
) -> web.Application:
    """The whole server for one config: gateway plus Docker, builder, supervisor and reloader."""
    state = GatewayState(RouteTable(config.routes, set(config.functions)))
    app = gateway_app(state)
    log = get_logger("faaso")

    def on_config(new: Config) -> None:
        # One assignment: a request sees the old table or the new one, never a mix.
        state.routes = RouteTable(new.routes, set(new.functions))

    async def supervisor_ctx(app: web.Application) -> AsyncIterator[None]:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        docker = await docker_client.connect()
        backend = DockerBackend(docker, owner_id(state_dir))
        builder = Builder(docker, RuntimeCatalog(config.runtime_dirs), get_logger("faaso.build"))
        probe_session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        supervisor = Supervisor(
            backend,
            builder,
            state.pools,
            Prober(probe_session),
            get_logger("faaso.supervisor"),
            on_config=on_config,
        )
        reloader = Reloader(
            config,
            supervisor.apply,
            get_logger("faaso.reload"),
            extra_runtime_dirs=extra_runtime_dirs,
            watch=watch,
        )
        app[SUPERVISOR] = supervisor
        app[RELOADER] = reloader
        state.not_ready = supervisor.not_ready
        state.timeout_of = supervisor.timeout_of
        state.reload_status = lambda: reloader.last
        try:
            await supervisor.start(config)
            reloader.start()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.trigger)
            log.info(
                "faaso.started",
                config=str(config.path),
                functions=sorted(config.functions),
                routes=dict(config.routes),
            )
            yield
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            await reloader.close()
            await supervisor.close()
            await probe_session.close()
            await backend.close()

    app.cleanup_ctx.append(supervisor_ctx)
    return app
