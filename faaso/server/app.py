"""The composition root: one server made of the gateway, the API, the control plane and a backend.

``create_app()`` builds the gateway's app (:mod:`faaso.gateway.app`), mounts the API on it, and
adds the Docker side through ``cleanup_ctx``: the engine connection, the builder and the
supervisor, started when the app starts and stopped, in reverse order, when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client.core import Metric

from faaso.api.async_jobs import AsyncJobsHolder, Waker, add_async_routes
from faaso.api.auth import basic_auth_middleware, ensure_password, password_path
from faaso.api.handlers import ApiContext, ApiHolder, api_app
from faaso.backends.docker.backend import DockerBackend
from faaso.build import engine as docker_client
from faaso.build.builder import Builder
from faaso.config.desired import DesiredState
from faaso.config.reloader import Reloader
from faaso.config.routes_file import Config
from faaso.config.runtimes import RuntimeCatalog
from faaso.control.async_workers import AsyncWorkers
from faaso.control.controller import Prober
from faaso.control.supervisor import Supervisor
from faaso.gateway import metrics
from faaso.gateway.app import GatewayState, gateway_app
from faaso.gateway.async_enqueue import INTAKE, AsyncIntake, IntakeSlot
from faaso.gateway.invoke import Invoker
from faaso.gateway.pools import Pools
from faaso.logs import get_logger
from faaso.spec.asyncjob import CallbackHosts
from faaso.spec.routing import RouteTable
from faaso.state.files import private_dir
from faaso.state.paths import owner_id
from faaso.state.queue import JobQueue
from faaso.state.secret_store import SecretStore

SUPERVISOR = web.AppKey("faaso_supervisor", Supervisor)
RELOADER = web.AppKey("faaso_reloader", Reloader)
DESIRED = web.AppKey("faaso_desired", DesiredState)


def create_app(
    config: Config,
    state_dir: Path,
    *,
    extra_runtime_dirs: tuple[Path, ...] = (),
    watch: bool = True,
    auth: bool = True,
    pull: bool = True,
    drain_timeout: float = 15.0,
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

    async_holder = AsyncJobsHolder()
    async_waker = Waker()

    def mount_api(app: web.Application) -> None:
        app.add_subapp(
            "/system",
            api_app(
                holder,
                middlewares,
                lambda api: add_async_routes(api, async_holder, async_waker),
            ),
        )

    app = gateway_app(state, mount_api)
    secrets = SecretStore(state_dir / "function-secrets")

    on_async_config: list[Callable[[Config], None]] = []

    def on_config(new: Config) -> None:
        # One assignment: a request sees the old table or the new one, never a mix.
        state.routes = RouteTable(new.routes, set(new.functions))
        for hook in on_async_config:
            hook(new)

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

    # -- asynchronous invocations (issue 15) ---------------------------------------------------
    # The queue in the state directory, the enqueue endpoint's intake, the workers. Appended
    # after the supervisor's context so that it stops first: the workers drain while the
    # functions still run. Kept in this one block.
    async def async_ctx(app: web.Application) -> AsyncIterator[None]:
        settings = config.async_settings
        queue = await JobQueue.open(state_dir / "async" / "queue.db")
        invoke_session = _invoke_session()
        callback_session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        supervisor = app[SUPERVISOR]
        desired = app[DESIRED]
        workers = AsyncWorkers(
            queue,
            Invoker(invoke_session, state.pools, state.metrics, supervisor.max_inflight_of),
            callback_session,
            functions=lambda: state.routes.functions,
            spec_of=desired.spec,
            timeout_of=supervisor.timeout_of,
            settings=settings,
            log=get_logger("faaso.async"),
        )
        intake = AsyncIntake(
            queue,
            lambda: state.routes,
            wake=workers.enqueued,
            hosts=CallbackHosts(settings.callback_hosts),
            max_body=settings.max_body,
        )

        def on_reload(new: Config) -> None:
            workers.settings = new.async_settings
            intake.hosts = CallbackHosts(new.async_settings.callback_hosts)
            intake.max_body = new.async_settings.max_body

        on_async_config.append(on_reload)
        state.metrics.add_collector(workers.collect)
        state.metrics.add_collector(
            lambda: [
                metrics.counter(
                    "faaso_async_enqueued",
                    "Asynchronous jobs accepted",
                    ["function_name"],
                    {(metrics.label(f),): float(n) for f, n in intake.enqueued.items()},
                )
            ]
        )
        await workers.start()
        intake_slot.intake = intake
        async_holder.queue = queue
        async_waker.wake = workers.wake
        if holder.ctx is not None:
            holder.ctx.queue_of = workers.queue_of
        running.append(workers)
        try:
            yield
        finally:
            intake_slot.intake = None
            await workers.close(drain_timeout)
            async_holder.queue = None
            await queue.close()
            await callback_session.close()
            await invoke_session.close()

    running: list[AsyncWorkers] = []

    async def stop_claiming(_app: web.Application) -> None:
        # Shutdown begins: claim nothing more (the cleanup above then drains).
        for workers in running:
            workers.stop_claiming()

    intake_slot = IntakeSlot()
    app[INTAKE] = intake_slot
    app.cleanup_ctx.append(async_ctx)
    app.on_shutdown.append(stop_claiming)
    return app


def _invoke_session() -> aiohttp.ClientSession:
    """The workers' connections to functions: kept alive, no limit of their own."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        timeout=aiohttp.ClientTimeout(total=None),
    )


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
