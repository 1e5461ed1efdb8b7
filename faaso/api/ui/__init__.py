"""faaso's web UI at ``/ui/``: server-rendered pages (Jinja2), htmx for partial updates,
server-sent events for live data. Mounted by :func:`mount_ui` on the server's app.

Pages: Functions (``/ui/``), a function (``/ui/function/{name}``), Deploy, Async jobs
(``/ui/async``, :mod:`faaso.api.ui.jobs`), Secrets, System.
Same basic auth as ``/system``; CSRF tokens on every change (:mod:`faaso.api.ui.csrf`). The
UI calls the objects the /system API uses (:class:`~faaso.api.handlers.ApiContext`), never
faaso over HTTP; only the invoke form's request goes from the browser to ``/function/<name>``,
as any client's would.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from faaso.api.async_jobs import ASYNC_HOLDER, WAKE, AsyncJobsHolder, Waker
from faaso.api.auth import basic_auth_middleware
from faaso.api.handlers import HOLDER, ApiHolder
from faaso.api.ui import jobs, views
from faaso.api.ui.csrf import Csrf
from faaso.api.ui.history import GATEWAY, HISTORY, History, sampler_ctx
from faaso.api.ui.templating import FILTERS
from faaso.errors import ConflictError, InvalidRequest, NotFoundError, ReloadError
from faaso.gateway.app import STATE, GatewayState, proxy_handler

HERE = Path(__file__).parent
PREFIX = "/ui"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _refused(request: web.Request, text: str) -> web.StreamResponse:
    return views.message(request, text, ok=False, status=403)


@web.middleware
async def ui_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """faaso's exceptions as a message the page shows (htmx swaps 4xx answers in too)."""
    try:
        return await handler(request)
    except (InvalidRequest, ReloadError) as exc:
        return views.message(request, str(exc), ok=False, status=400)
    except NotFoundError as exc:
        return views.message(request, str(exc), ok=False, status=404)
    except ConflictError as exc:
        return views.message(request, str(exc), ok=False, status=409)


@web.middleware
async def no_store(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``Cache-Control: no-store`` on the UI's pages and event streams (not its static files):
    they are a logged-in user's live pages, each with a CSRF token, not to be stored. (It does
    not keep every browser from holding a page left by navigation in its back/forward cache,
    event streams open: Chromium does even so. The pages close their streams on ``pagehide``
    for that, in ``static/ui.js``.)"""
    response = await handler(request)
    if not request.path.startswith(f"{PREFIX}/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def ui_app(
    holder: ApiHolder,
    middlewares: list[Any],
    gateway: GatewayState,
    async_jobs: AsyncJobsHolder,
    waker: Waker,
) -> web.Application:
    csrf = Csrf()
    stack: list[Any] = [*middlewares, no_store, csrf.middleware(_refused), ui_errors]
    app = web.Application(middlewares=stack)
    app[HOLDER] = holder
    app[views.CSRF] = csrf
    app[HISTORY] = History()
    app[GATEWAY] = gateway
    app[ASYNC_HOLDER] = async_jobs
    app[WAKE] = waker
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(FILTERS)
    app.cleanup_ctx.append(sampler_ctx)
    r = app.router
    r.add_static("/static", HERE / "static", name="static")
    r.add_get("/", views.functions_page)
    r.add_get("/events/functions", views.functions_events)
    r.add_get("/function/{name}", views.function_page)
    r.add_get("/function/{name}/events", views.function_events)
    r.add_get("/function/{name}/logs", views.function_logs)
    r.add_post("/function/{name}/scale", views.scale)
    r.add_post("/function/{name}/scale/reset", views.scale_reset)
    r.add_post("/function/{name}/remove", views.remove)
    r.add_get("/deploy", views.deploy_page)
    r.add_post("/deploy/image", views.deploy_image)
    r.add_post("/deploy/stack", views.deploy_stack)
    r.add_post("/deploy/store/{name}", views.deploy_from_store)
    jobs.add_routes(r)
    r.add_get("/secrets", views.secrets_page)
    r.add_post("/secrets", views.secret_create)
    r.add_post("/secrets/{name}/update", views.secret_update)
    r.add_post("/secrets/{name}/delete", views.secret_delete)
    r.add_get("/system", views.system_page)
    return app


def mount_ui(
    app: web.Application,
    holder: ApiHolder,
    password: str | None,
    async_jobs: AsyncJobsHolder | None = None,
    waker: Waker | None = None,
) -> None:
    """Mount the UI at /ui/ on the server's app; redirect /ui, and / when no route claims it.
    ``async_jobs`` and ``waker`` are the ones the /system/async API uses (the jobs pages answer
    503 without a queue)."""
    middlewares = [basic_auth_middleware(password, PREFIX)] if password is not None else []
    state = app[STATE]

    async def to_ui(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(PREFIX + "/")

    async def root(request: web.Request) -> web.StreamResponse:
        match = state.routes.resolve("/")
        if match is not None:  # a route claims /: the proxy answers
            return await proxy_handler(request)
        raise web.HTTPFound(PREFIX + "/")

    app.router.add_get(PREFIX, to_ui)
    app.router.add_get("/", root)
    app.add_subapp(
        PREFIX,
        ui_app(holder, middlewares, state, async_jobs or AsyncJobsHolder(), waker or Waker()),
    )
