"""The data plane's HTTP application: /healthz, /metrics, /async-function/ (enqueue, see
:mod:`faaso.gateway.async_enqueue`) and the proxy for everything else.

``gateway_app()`` is the HTTP side alone, fed by a :class:`GatewayState`; the proxy tests use it
with hand-made pools. :mod:`faaso.server.app` composes it with the API, the control plane and the
backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from types import MappingProxyType

import aiohttp
from aiohttp import web

from faaso.gateway import cors
from faaso.gateway.access_log import AccessLog, access_log_middleware
from faaso.gateway.admission import Admission
from faaso.gateway.async_enqueue import PREFIX as ASYNC_PREFIX
from faaso.gateway.async_enqueue import async_function, function_of
from faaso.gateway.fast.relay import FAST_PATH, FastPath
from faaso.gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from faaso.gateway.metrics import Metrics
from faaso.gateway.policy import UPSTREAM_IDLE
from faaso.gateway.pools import Pools
from faaso.gateway.proxy import Proxy
from faaso.spec.cors import CorsPolicy
from faaso.spec.routing import RouteTable

DEFAULT_TIMEOUT = 30.0
METRICS_PATH = "/metrics"


class GatewayState:
    """What request handlers read. Reconfiguring swaps ``routes`` (and ``cors``, each
    function's CORS policy; empty: CORS is off) in one assignment each.

    ``admission`` is the one admission both front-ends use, and what a programmatic caller
    (an async worker) calls to invoke a function without an HTTP request of its own.
    """

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
        self.cors: Mapping[str, CorsPolicy] = MappingProxyType({})
        # Set before gateway_app() is called (read once there): one line per request.
        self.access_log: AccessLog | None = None
        self.admission = Admission(
            self.pools,
            lambda name: self.timeout_of(name),
            lambda name: self.max_inflight_of(name),
            self.metrics,
        )


STATE = web.AppKey("faaso_state", GatewayState)
PROXY = web.AppKey("faaso_proxy", Proxy)


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
    state = request.app[STATE]
    handle = request.app[PROXY].handle
    if state.cors and cors.ORIGIN in request.headers:
        match = state.routes.resolve(request.raw_path.partition("?")[0])
        policy = state.cors.get(match.function) if match is not None else None
        if policy is not None and match is not None:
            return await cors.handle(request, policy, match.function, handle)
    return await handle(request)


async def async_handler(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if state.cors and cors.ORIGIN in request.headers:
        function = function_of(request.raw_path.partition("?")[0])
        policy = state.cors.get(function)
        if policy is not None:
            return await cors.handle(request, policy, function, async_function)
    return await async_function(request)


def _function_of(request: web.Request) -> str | None:
    """The function a request went to, for the access log (None: one of faaso's own paths)."""
    handler = request.match_info.route.handler
    raw_path = request.raw_path.partition("?")[0]
    if handler is proxy_handler:
        match = request.app[STATE].routes.resolve(raw_path)
        return match.function if match is not None else None
    if handler is async_handler:
        return function_of(raw_path)
    return None


def _new_client_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=0,  # per-function limits belong to the function, not to a global pool
        keepalive_timeout=UPSTREAM_IDLE,  # the same idle policy as the fast path's pool
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
        app[PROXY] = Proxy(session, state.admission, lambda: state.routes)
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
    middlewares = []
    if state.access_log is not None:
        middlewares.append(access_log_middleware(state.access_log, _function_of))
    app = web.Application(
        middlewares=middlewares,
        handler_args={
            "max_field_size": 16384,
            "max_line_size": 16384,
            # aiohttp arms this timer when a connection opens and after each response; data
            # arriving does not push it back, so it is a deadline for the next request's headers.
            "keepalive_timeout": header_timeout,
        },
    )
    app[STATE] = state
    app.cleanup_ctx.append(_proxy_ctx)
    app.on_response_prepare.append(cors.on_response_prepare)
    app.router.add_get("/healthz", healthz)
    app.router.add_get(METRICS_PATH, metrics_handler)
    if mount is not None:
        mount(app)
    # What the app serves itself; the fast path hands those requests to it.
    reserved = [r.canonical for r in app.router.resources()]
    # Asynchronous invocations (enqueue, cancel): served by aiohttp, never relayed.
    app.router.add_route("*", ASYNC_PREFIX + "{tail:.*}", async_handler)
    reserved.append(ASYNC_PREFIX.rstrip("/"))
    app.router.add_route("*", "/{tail:.*}", proxy_handler)
    fast = FastPath(
        state.admission,
        lambda: state.routes,
        header_timeout=header_timeout,
        cors=lambda: state.cors,
        access_log=state.access_log,
    )
    fast.reserve(reserved)
    app[FAST_PATH] = fast
    return app
