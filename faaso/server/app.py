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
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.core import Metric

from faaso.api import scaling as scaling_api
from faaso.api.async_jobs import AsyncJobsHolder, Waker, add_async_routes
from faaso.api.auth import basic_auth_middleware, ensure_password, password_path
from faaso.api.handlers import ApiContext, ApiHolder, api_app
from faaso.api.ui import mount_ui
from faaso.backends.base import LogSource
from faaso.backends.docker.backend import DockerBackend
from faaso.backends.swarm.orchestrator import SwarmOrchestrator
from faaso.backends.swarm.secrets import SwarmSecrets
from faaso.build import engine as docker_client
from faaso.build.builder import Builder
from faaso.build.prune import DEFAULT_KEEP, prune
from faaso.build.registry import RegistryImages
from faaso.config.cors import cors_table
from faaso.config.desired import DesiredState
from faaso.config.reloader import Reloader
from faaso.config.routes_file import Config
from faaso.config.runtimes import RuntimeCatalog
from faaso.control.async_workers import AsyncWorkers
from faaso.control.autoscaler import Autoscaler
from faaso.control.cluster import ClusterSync
from faaso.control.controller import Prober
from faaso.control.supervisor import ImageProvider, Supervisor
from faaso.errors import ConfigError
from faaso.gateway import metrics
from faaso.gateway.access_log import AccessLog
from faaso.gateway.app import METRICS_PATH, GatewayState, gateway_app
from faaso.gateway.async_enqueue import INTAKE, IntakeSlot
from faaso.gateway.pools import Pools
from faaso.logs import get_logger
from faaso.server import async_plane
from faaso.server.provider import ProviderMetrics
from faaso.server.serve import HOOKS, Hooks
from faaso.spec.cors import CorsPolicy
from faaso.spec.routing import RouteTable
from faaso.spec.status import FunctionStatus, Phase
from faaso.state.files import private_dir
from faaso.state.paths import cluster_owner_id, owner_id
from faaso.state.queue import JobQueue
from faaso.state.secret_store import SecretStore

SUPERVISOR = web.AppKey("faaso_supervisor", Supervisor)
RELOADER = web.AppKey("faaso_reloader", Reloader)
DESIRED = web.AppKey("faaso_desired", DesiredState)
AUTOSCALER = web.AppKey("faaso_autoscaler", Autoscaler)
BACKEND = web.AppKey("faaso_backend", DockerBackend)


def create_app(
    config: Config,
    state_dir: Path,
    *,
    extra_runtime_dirs: tuple[Path, ...] = (),
    watch: bool = True,
    auth: bool = True,
    pull: bool = True,
    drain_timeout: float = 15.0,
    keep_images: int = DEFAULT_KEEP,
    provider_mode: bool = False,
    backend_name: str | None = None,
    access_log: bool = False,
    metrics_auth: bool = False,
) -> web.Application:
    """The whole server for one config: gateway, API, Docker, builder, supervisor, reloader.

    ``provider_mode``: faaso runs behind a real OpenFaaS gateway (see
    :mod:`faaso.server.provider`): ``/system/info`` in the provider's shape, the gateway's
    metrics under faaso's names. ``backend_name`` (``--backend``) wins over the routes file's
    ``backend:``; plain Docker when neither says. ``access_log``: a line per request
    (faaso.gateway.access_log); ``metrics_auth``: ``/metrics`` needs the API's password (which
    ``auth`` must give)."""
    log = get_logger("faaso")
    chosen = backend_name or config.backend or "docker"
    private_dir(state_dir)
    state = GatewayState(
        RouteTable(config.routes, set(config.functions)),
        metrics=ProviderMetrics() if provider_mode else None,
    )
    state.cors = _cors_of(config)
    if access_log:
        state.access_log = AccessLog()
    holder = ApiHolder()
    middlewares = []
    password: str | None = None
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
                (
                    lambda api: add_async_routes(api, async_holder, async_waker),
                    lambda api: scaling_api.add_routes(api.router),
                ),
                provider_mode=provider_mode,
            ),
        )
        # The web UI at /ui/ (faaso/api/ui/), with the same password; redirects /ui and /.
        mount_ui(app, holder, password, async_holder, async_waker)

    app = gateway_app(state, mount_api)
    if metrics_auth:
        if password is None:
            raise ConfigError(
                config.path,
                "server.metrics_auth",
                True,
                "needs the API's password, so it cannot be used with --no-auth",
            )
        app.middlewares.append(basic_auth_middleware(password, METRICS_PATH))
    secrets = SecretStore(state_dir / "function-secrets")

    on_async_config: list[Callable[[Config], None]] = []

    def on_config(new: Config) -> None:
        # One assignment: a request sees the old table or the new one, never a mix.
        state.routes = RouteTable(new.routes, set(new.functions))
        state.cors = _cors_of(new)
        for hook in on_async_config:
            hook(new)

    # The function's async queue for its status, once the workers run (see below).
    queue_views: list[Callable[[str], dict[str, Any]]] = []

    def queue_of(function: str) -> dict[str, Any]:
        return queue_views[-1](function) if queue_views else {}

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
            orchestrator: SwarmOrchestrator | None = None
            shared_secrets: SwarmSecrets | None = None  # a cluster's, in Swarm
            images: ImageProvider = builder
            registry_images: RegistryImages | None = None
            logs_source: LogSource = backend
            # A cluster (swarm: {cluster: NAME}): the owner id is the cluster's, so every
            # member owns the same services; Swarm holds the API's deployments (docs/swarm.md).
            cluster = config.swarm.cluster if chosen == "swarm" else None
            if chosen == "swarm":
                owner = cluster_owner_id(cluster) if cluster else owner_id(state_dir)
                orchestrator = SwarmOrchestrator(docker, owner)
                await orchestrator.check()  # not a manager: a one-line error, nothing touched
                if cluster:  # the secrets too are the cluster's: versions in Swarm
                    shared_secrets = SwarmSecrets(docker, owner, orchestrator.prefix)
                registry_images = RegistryImages(
                    builder,
                    docker,
                    config.registry,
                    get_logger("faaso.images"),
                    login=config.registry_login,
                )
                images = registry_images
                logs_source = orchestrator
            log.info(
                "faaso.backend",
                backend=chosen,
                registry=config.registry,
                registry_login=config.registry_login.username if config.registry_login else None,
                cluster=cluster,
            )
            probe_session = await stack.enter_async_context(
                aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
            )
            prune_log = get_logger("faaso.prune")

            async def prune_after_rollout(functions: Sequence[str]) -> None:
                found = await prune(docker, prune_log, keep=keep_images, functions=functions)
                prune_log.info("prune.done", functions=list(functions), **found.as_json())

            supervisor = Supervisor(
                backend,
                images,
                state.pools,
                Prober(probe_session),
                get_logger("faaso.supervisor"),
                on_config=on_config,
                secrets=secrets,
                after_rollout=prune_after_rollout if keep_images > 0 else None,
                orchestrator=orchestrator,
                cluster=cluster is not None,
                pull_auth=registry_images.pull_auth if registry_images is not None else None,
                service_secrets=shared_secrets,
            )
            # stops what it started, if anything; leaves it running after SIGUSR2
            stack.push_async_callback(lambda: supervisor.close(keep_running=hooks.keep_running))
            desired = DesiredState(
                config,
                state_dir / "deployments.json",
                supervisor.apply,
                shared=cluster is not None,
            )
            supervisor.on_woken = desired.note_woken  # a wake ends an API scale to 0
            sync: ClusterSync | None = None
            if cluster is not None and orchestrator is not None:
                sync = ClusterSync(
                    orchestrator, desired, get_logger("faaso.cluster"), secrets=shared_secrets
                )
                await sync.seed()  # the cluster's API deployments, before anything starts
                supervisor.on_service_event = sync.on_event
                stack.push_async_callback(sync.close)  # before the supervisor's close
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
            # -- scaling (issue 11): the autoscaler, its metrics and the /system/alert API --
            autoscaler = Autoscaler(
                supervisor.controllers,
                state.metrics.started_count,
                backend,
                get_logger("faaso.autoscaler"),
            )
            stack.push_async_callback(autoscaler.close)  # before the supervisor's close
            app[AUTOSCALER] = autoscaler
            state.metrics.add_collector(autoscaler.metrics)
            # -- end of scaling ------------------------------------------------------------

            async def start_control() -> None:
                """Touch containers: adopt, clean up, launch. Runs once the socket is bound."""
                await supervisor.start(desired.effective())
                state.not_ready = lambda: [s.to_json() for s in supervisor.not_ready()]
                # In a cluster, one member's autoscaler writes the counts (swarm.autoscaler:
                # true there); the others follow the services' counts (docs/swarm.md).
                if cluster is None or config.swarm.autoscaler:
                    autoscaler.start()  # scaling
                else:
                    log.info("autoscaler.off", why="a cluster member without swarm.autoscaler")
                if sync is not None:
                    sync.start()
                reloader.start()
                ctx = ApiContext(
                    desired, supervisor, secrets, state.metrics, logs_source, images=builder
                )
                ctx.orchestration = chosen
                ctx.autoscaler = autoscaler
                ctx.queue_of = queue_of
                ctx.retry_reload = reloader.retry_for_secret
                ctx.shared_secrets = shared_secrets
                holder.ctx = ctx
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
        plane = async_plane.compose(
            queue,
            state,
            invoke_session,
            callback_session,
            settings=settings,
            spec_of=app[DESIRED].spec,
            timeout_of=supervisor.timeout_of,
            log=get_logger("faaso.async"),
        )
        on_async_config.append(lambda new: plane.apply(new.async_settings))
        workers, intake = plane.workers, plane.intake
        await workers.start()
        app[AUTOSCALER].pending = workers.pending  # queued jobs keep a function from idling
        intake_slot.intake = intake
        async_holder.queue = queue
        async_waker.wake = workers.wake
        queue_views.append(workers.queue_of)
        if holder.ctx is not None:
            holder.ctx.queue_of = queue_of
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


def _cors_of(config: Config) -> Mapping[str, CorsPolicy]:
    """Each function's CORS policy (its own, its annotations', or the file's)."""
    return cors_table(config.cors, config.function_cors, config.functions)


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
