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
from prometheus_client.core import Metric

from faaso import docker_client, metrics
from faaso.api import ApiContext, ApiHolder, api_app
from faaso.auth import basic_auth_middleware, ensure_password, password_path
from faaso.builder import Builder
from faaso.config import Config
from faaso.controller import Prober
from faaso.desired import DesiredState
from faaso.docker_backend import DockerBackend
from faaso.fastpath import FAST_PATH, FastPath
from faaso.fsutil import private_dir
from faaso.logs import get_logger
from faaso.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from faaso.metrics import Metrics
from faaso.pool import Pools
from faaso.proxy import Proxy
from faaso.reloader import Reloader
from faaso.routing import RouteTable
from faaso.runtimes import RuntimeCatalog
from faaso.secrets import SecretStore
from faaso.supervisor import Supervisor

DEFAULT_TIMEOUT = 30.0


class GatewayState:
    """What request handlers read. Reconfiguring swaps ``routes`` in one assignment."""

    def __init__(
        self, routes: RouteTable, pools: Pools | None = None, metrics: Metrics | None = None
    ) -> None:
        self.routes = routes
        self.pools = pools or Pools()
        self.metrics = metrics or Metrics()
        self.not_ready: Callable[[], list[dict[str, object]]] = list
        self.timeout_of: Callable[[str], float] = lambda _name: DEFAULT_TIMEOUT
        self.max_inflight_of: Callable[[str], int | None] = lambda _name: None
        self.reload_status: Callable[[], dict[str, object]] = dict


STATE = web.AppKey("faaso_state", GatewayState)
PROXY = web.AppKey("faaso_proxy", Proxy)
SUPERVISOR = web.AppKey("faaso_supervisor", Supervisor)
RELOADER = web.AppKey("faaso_reloader", Reloader)
DESIRED = web.AppKey("faaso_desired", DesiredState)


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


async def metrics_handler(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


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
        # The proxy adds no headers of its own (set once here, not per request).
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        timeout=aiohttp.ClientTimeout(total=None),
    )


async def _proxy_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    async with _new_client_session() as session:
        app[PROXY] = Proxy(
            session,
            state.pools,
            lambda: state.routes,
            lambda name: state.timeout_of(name),
            metrics=state.metrics,
            max_inflight_of=lambda name: state.max_inflight_of(name),
        )
        yield


def gateway_app(
    state: GatewayState,
    mount: Callable[[web.Application], None] | None = None,
    *,
    header_timeout: float = 15.0,
) -> web.Application:
    """The HTTP side: /healthz, /metrics, whatever ``mount`` adds, and the proxy for the rest.

    ``header_timeout`` bounds both the wait for a request's headers (all of them, however
    slowly they dribble in: a slowloris client is cut off) and an idle keep-alive connection.
    A slow request body is bounded by the function's timeout instead.
    """
    app = web.Application(
        handler_args={
            "max_field_size": 16384,
            "max_line_size": 16384,
            # aiohttp arms this timer when a connection opens and after each response; data
            # arriving does not push it back, so it is a deadline for the next request's headers.
            "keepalive_timeout": header_timeout,
        }
    )
    app[STATE] = state
    app.cleanup_ctx.append(_proxy_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
    if mount is not None:
        mount(app)
    # What the app serves itself; the fast path hands those requests to it.
    reserved = [r.canonical for r in app.router.resources()]
    app.router.add_route("*", "/{tail:.*}", proxy_handler)
    fast = FastPath(
        state.pools,
        lambda: state.routes,
        lambda name: state.timeout_of(name),
        lambda name: state.max_inflight_of(name),
        state.metrics,
        header_timeout=header_timeout,
    )
    fast.reserve(reserved)
    app[FAST_PATH] = fast
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
    auth: bool = True,
    pull: bool = True,
) -> web.Application:
    """The whole server for one config: gateway, API, Docker, builder, supervisor, reloader."""
    log = get_logger("faaso")
    private_dir(state_dir)
    state = GatewayState(RouteTable(config.routes, set(config.functions)))
    holder = ApiHolder()
    middlewares = []
    if auth:
        password, created = ensure_password(state_dir)
        log.info(
            "auth.password", file=str(password_path(state_dir)), user="admin", generated=created
        )
        middlewares.append(basic_auth_middleware(password))
    else:
        log.warning("auth.disabled", note="the /system API is open to anyone who can connect")

    def mount_api(app: web.Application) -> None:
        app.add_subapp("/system", api_app(holder, middlewares))

    app = gateway_app(state, mount_api)
    secrets = SecretStore(state_dir / "function-secrets")

    def on_config(new: Config) -> None:
        # One assignment: a request sees the old table or the new one, never a mix.
        state.routes = RouteTable(new.routes, set(new.functions))

    async def supervisor_ctx(app: web.Application) -> AsyncIterator[None]:
        docker = await docker_client.connect()
        backend = DockerBackend(docker, owner_id(state_dir), state_dir / "sockets")
        builder = Builder(
            docker, RuntimeCatalog(config.runtime_dirs), get_logger("faaso.build"), allow_pull=pull
        )
        probe_session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        supervisor = Supervisor(
            backend,
            builder,
            state.pools,
            Prober(probe_session),
            get_logger("faaso.supervisor"),
            on_config=on_config,
            secrets=secrets,
        )
        desired = DesiredState(config, state_dir / "deployments.json", supervisor.apply)
        reloader = Reloader(
            config,
            desired.apply_file,
            get_logger("faaso.reload"),
            extra_runtime_dirs=extra_runtime_dirs,
            watch=watch,
        )
        app[SUPERVISOR] = supervisor
        app[RELOADER] = reloader
        app[DESIRED] = desired
        state.not_ready = supervisor.not_ready
        state.timeout_of = supervisor.timeout_of
        state.max_inflight_of = supervisor.max_inflight_of
        state.reload_status = lambda: reloader.last
        state.metrics.add_collector(lambda: _live_metrics(supervisor, state.pools, reloader))
        holder.ctx = ApiContext(desired, supervisor, secrets, state.metrics, backend)
        loop = asyncio.get_running_loop()
        try:
            await supervisor.start(desired.effective())
            reloader.start()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGHUP, reloader.trigger)
            log.info(
                "faaso.started",
                config=str(config.path),
                functions=sorted(desired.effective().functions),
                routes=dict(config.routes),
            )
            yield
        finally:
            holder.ctx = None
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)
            await reloader.close()
            await supervisor.close()
            await probe_session.close()
            await backend.close()

    app.cleanup_ctx.append(supervisor_ctx)
    return app


def _live_metrics(supervisor: Supervisor, pools: Pools, reloader: Reloader) -> list[Metric]:
    statuses = supervisor.statuses()
    replicas = {str(s["function"]): float(s["replicas"]) for s in statuses}  # type: ignore[arg-type]
    restarts = {str(s["function"]): float(s.get("restarts") or 0) for s in statuses}  # type: ignore[arg-type]
    inflight = {n: float(sum(m.inflight for m in pools.get(n).members())) for n in replicas}
    available = {n: float(len(pools.get(n))) for n in replicas}
    return [
        metrics.gauge("gateway_service_count", "Desired replicas of each function", replicas),
        metrics.gauge("faaso_function_inflight", "Requests in flight to each function", inflight),
        metrics.gauge(
            "faaso_function_available_replicas", "Healthy instances in each pool", available
        ),
        metrics.counter(
            "faaso_function_restarts",
            "Instances replaced after dying",
            ["function_name"],
            {(metrics.label(n),): v for n, v in restarts.items()},
        ),
        metrics.counter(
            "faaso_reloads",
            "Reloads attempted, by result",
            ["result"],
            {("ok",): float(reloader.reloads_ok), ("failed",): float(reloader.reloads_failed)},
        ),
    ]
