"""The aiohttp application: HTTP routes, and the background parts it starts and stops.

``gateway_app()`` is the HTTP side alone (health, proxy), fed by a :class:`GatewayState`; the
proxy tests use it with hand-made pools. ``create_app()`` adds the Docker side through
``cleanup_ctx``: the engine connection, the builder and the supervisor, started when the app
starts and stopped, in reverse order, when it stops.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from faaso import docker_client
from faaso.builder import Builder
from faaso.config import Config
from faaso.docker_backend import DockerBackend
from faaso.logs import get_logger
from faaso.pool import Pools
from faaso.proxy import Proxy
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


STATE = web.AppKey("faaso_state", GatewayState)
PROXY = web.AppKey("faaso_proxy", Proxy)
SUPERVISOR = web.AppKey("faaso_supervisor", Supervisor)


async def healthz(request: web.Request) -> web.Response:
    not_ready = request.app[STATE].not_ready()
    if not_ready:
        return web.json_response({"status": "starting", "not_ready": not_ready}, status=503)
    return web.json_response({"status": "ok"})


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


def create_app(config: Config, state_dir: Path) -> web.Application:
    """The whole server for one config: gateway plus Docker, builder and supervisor."""
    state = GatewayState(RouteTable(config.routes, set(config.functions)))
    app = gateway_app(state)
    log = get_logger("faaso")

    async def supervisor_ctx(app: web.Application) -> AsyncIterator[None]:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        docker = await docker_client.connect()
        backend = DockerBackend(docker, owner_id(state_dir))
        builder = Builder(docker, RuntimeCatalog(config.runtime_dirs), get_logger("faaso.build"))
        probe = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        supervisor = Supervisor(
            backend, builder, state.pools, probe, get_logger("faaso.supervisor")
        )
        app[SUPERVISOR] = supervisor
        state.not_ready = lambda: [s.as_json(state.pools) for s in supervisor.not_ready()]
        state.timeout_of = supervisor.timeout_of
        try:
            await supervisor.start(config)
            log.info(
                "faaso.started",
                config=str(config.path),
                functions=sorted(config.functions),
                routes=dict(config.routes),
            )
            yield
        finally:
            await supervisor.close()
            await probe.close()
            await backend.close()

    app.cleanup_ctx.append(supervisor_ctx)
    return app
