"""The composition root: one server made of the gateway, the API, the control plane and a backend.

``create_app()`` builds the gateway's app (:mod:`faaso.gateway.app`), mounts the API on it, and
adds the Docker side through ``cleanup_ctx``: the engine connection, the builder, the
supervisor and the reloader, acquired on one ``AsyncExitStack`` when the app starts (a failing
step releases what came before it) and released, in reverse order, when it stops. Touching
containers is a separate step (``Hooks.after_bind``): ``serve()`` runs it once the listening
socket is bound; under aiohttp's test client it runs at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client.core import Metric

from faaso.api.auth import basic_auth_middleware, ensure_password, password_path
from faaso.api.handlers import ApiContext, ApiHolder, api_app
from faaso.backends.docker.backend import DockerBackend
from faaso.build import engine as docker_client
from faaso.build.builder import Builder
from faaso.config.desired import DesiredState
from faaso.config.reloader import Reloader
from faaso.config.routes_file import Config
from faaso.config.runtimes import RuntimeCatalog
from faaso.control.controller import Prober
from faaso.control.supervisor import Supervisor
from faaso.gateway import metrics
from faaso.gateway.app import GatewayState, gateway_app
from faaso.gateway.pools import Pools
from faaso.logs import get_logger
from faaso.server.serve import HOOKS, Hooks
from faaso.spec.routing import RouteTable
from faaso.spec.status import FunctionStatus, Phase
from faaso.state.files import private_dir
from faaso.state.paths import owner_id
from faaso.state.secret_store import SecretStore

SUPERVISOR = web.AppKey("faaso_supervisor", Supervisor)
RELOADER = web.AppKey("faaso_reloader", Reloader)
DESIRED = web.AppKey("faaso_desired", DesiredState)
BACKEND = web.AppKey("faaso_backend", DockerBackend)


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

    hooks = Hooks()
    app[HOOKS] = hooks
    configured = config

    def starting() -> list[FunctionStatus]:
        # Before the control plane has started (the socket is bound first): every function of
        # the config is starting, so /healthz does not say ok too early.
        functions = configured.functions.values()
        return [FunctionStatus(s.name, Phase.STARTING, s.replicas) for s in functions]

    state.not_ready = lambda: [s.to_json() for s in starting()]

    async def control_ctx(app: web.Application) -> AsyncIterator[None]:
        # Every resource is entered on one stack: whichever step fails (the engine is away,
        # deployments.json is corrupt), what was acquired before it is released.
        async with contextlib.AsyncExitStack() as stack:
            docker = await docker_client.connect()
            stack.push_async_callback(docker.close)
            backend = DockerBackend(docker, owner_id(state_dir), state_dir / "sockets")
            builder = Builder(
                docker,
                RuntimeCatalog(config.runtime_dirs),
                get_logger("faaso.build"),
                allow_pull=pull,
            )
            probe_session = await stack.enter_async_context(
                aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
            )
            supervisor = Supervisor(
                backend,
                builder,
                state.pools,
                Prober(probe_session),
                get_logger("faaso.supervisor"),
                on_config=on_config,
                secrets=secrets,
            )
            stack.push_async_callback(supervisor.close)  # stops what it started, if anything
            desired = DesiredState(config, state_dir / "deployments.json", supervisor.apply)
            nonlocal configured
            configured = desired.effective()
            reloader = Reloader(
                config,
                desired.apply_file,
                get_logger("faaso.reload"),
                extra_runtime_dirs=extra_runtime_dirs,
                watch=watch,
            )
            stack.push_async_callback(reloader.close)
            app[SUPERVISOR] = supervisor
            app[RELOADER] = reloader
            app[DESIRED] = desired
            app[BACKEND] = backend
            state.timeout_of = supervisor.timeout_of
            state.max_inflight_of = supervisor.max_inflight_of
            state.reload_status = lambda: reloader.last
            state.metrics.add_collector(lambda: _live_metrics(supervisor, state.pools, reloader))
            hooks.on_hangup = reloader.trigger

            async def start_control() -> None:
                """Touch containers: adopt, clean up, launch. Runs once the socket is bound."""
                await supervisor.start(desired.effective())
                state.not_ready = lambda: [s.to_json() for s in supervisor.not_ready()]
                reloader.start()
                holder.ctx = ApiContext(desired, supervisor, secrets, state.metrics, backend)
                log.info(
                    "faaso.started",
                    config=str(config.path),
                    functions=sorted(desired.effective().functions),
                    routes=dict(config.routes),
                )

            def stop_api() -> None:
                holder.ctx = None
                hooks.on_hangup = None

            stack.callback(stop_api)
            if hooks.defer:
                hooks.after_bind = start_control
            else:
                await start_control()
            yield

    app.cleanup_ctx.append(control_ctx)
    return app


def _live_metrics(supervisor: Supervisor, pools: Pools, reloader: Reloader) -> list[Metric]:
    statuses = supervisor.statuses()
    replicas = {s.function: float(s.replicas) for s in statuses}
    restarts = {s.function: float(s.restarts) for s in statuses}
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
