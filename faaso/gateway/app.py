"""The data plane's HTTP application: /healthz, /metrics, /async-function/ (enqueue, see
:mod:`faaso.gateway.async_enqueue`) and the proxy for everything else.

``gateway_app()`` is the HTTP side alone, fed by a :class:`GatewayState`; the proxy tests use it
with hand-made pools. :mod:`faaso.server.app` composes it with the API, the control plane and the
backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from faaso.gateway.admission import Admission
from faaso.gateway.async_enqueue import PREFIX as ASYNC_PREFIX
from faaso.gateway.async_enqueue import async_function
from faaso.gateway.fast.relay import FAST_PATH, FastPath
from faaso.gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from faaso.gateway.metrics import Metrics
from faaso.gateway.policy import UPSTREAM_IDLE
from faaso.gateway.pools import Pools
from faaso.gateway.proxy import Proxy
from faaso.spec.routing import RouteTable

DEFAULT_TIMEOUT = 30.0


class GatewayState:
    """What request handlers read. Reconfiguring swaps ``routes`` in one assignment.

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
    return await request.app[PROXY].handle(request)


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
    # Asynchronous invocations (enqueue, cancel): served by aiohttp, never relayed.
    app.router.add_route("*", ASYNC_PREFIX + "{tail:.*}", async_function)
    reserved.append(ASYNC_PREFIX.rstrip("/"))
    app.router.add_route("*", "/{tail:.*}", proxy_handler)
    fast = FastPath(state.admission, lambda: state.routes, header_timeout=header_timeout)
    fast.reserve(reserved)
    app[FAST_PATH] = fast
    return app
