"""The UI's pages and partials. Every change goes through the objects the /system API uses."""

from __future__ import annotations

import asyncio
import contextlib
import platform
from collections.abc import Mapping
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from aiohttp_sse import sse_response

from faaso import __version__
from faaso.api.handlers import (
    HOLDER,
    ApiContext,
    follow_logs,
    put_secret,
    remove_secret,
    scale_to,
    secret_names,
)
from faaso.api.scaling import reset_override
from faaso.api.store import current_store, deploy_entry, store_entry
from faaso.api.ui.csrf import SESSION, Csrf
from faaso.api.ui.history import GATEWAY, HISTORY, SAMPLE_EVERY, Sample
from faaso.config.stack import stack_to_deployments
from faaso.config.store import machine_architecture
from faaso.errors import InvalidRequest
from faaso.spec.function import MAX_REPLICAS, NAMESPACE, FunctionSpec
from faaso.spec.status import FunctionStatus, Phase

CSRF = web.AppKey("faaso_ui_csrf", Csrf)
LOG_TAIL = 50


def _ctx(request: web.Request) -> ApiContext:
    return request.app[HOLDER].get()


def base_context(request: web.Request, page: str, title: str) -> dict[str, Any]:
    return {
        "page": page,
        "title": title,
        "csrf_token": request.app[CSRF].token(request[SESSION]),
        "version": __version__,
    }


def message(request: web.Request, text: str, *, ok: bool, status: int = 200) -> web.Response:
    return aiohttp_jinja2.render_template(
        "_message.html", request, {"text": text, "ok": ok}, status=status
    )


# -- the functions ------------------------------------------------------------------------------


def _phase(ctx: ApiContext, spec: FunctionSpec, status: FunctionStatus | None) -> str:
    if status is not None:
        return str(status.phase)  # ready, starting, crash-looping, paused, scaled-to-zero ...
    return "scaled-to-zero" if spec.replicas == 0 else str(Phase.STARTING)


def _origin(ctx: ApiContext, name: str) -> str:
    return "file" if ctx.desired.is_from_file(name) else "api"


def _routes_of(ctx: ApiContext, name: str) -> list[str]:
    routes = [p for p, f in sorted(ctx.desired.file_config.routes.items()) if f == name]
    return [*routes, f"/function/{name}"]


def function_rows(request: web.Request) -> list[dict[str, Any]]:
    ctx = _ctx(request)
    history = request.app[HISTORY]
    statuses = {s.function: s for s in ctx.supervisor.statuses()}
    rows = []
    for name, spec in sorted(ctx.desired.effective().functions.items()):
        status = statuses.get(name)
        controller = ctx.supervisor.controller(name)
        samples = history.samples(name)
        latest = samples[-1] if samples else None
        count, errors, _ = ctx.metrics.totals(name)
        rows.append(
            {
                "name": name,
                "phase": _phase(ctx, spec, status),
                "available": len(request.app[GATEWAY].pools.get(name)),
                "desired": controller.replicas if controller else spec.replicas,
                "invocations": count,
                "error_rate": (errors / count) if count else None,
                "p50": latest.p50 if latest else None,
                "p50_series": [s.p50 or 0.0 for s in samples],
                "image": spec.image or (controller.image if controller else "") or "",
                "routes": _routes_of(ctx, name),
                "origin": _origin(ctx, name),
                "error": status.error if status else None,
                "queue": _queue_of(ctx, name),
            }
        )
    return rows


@aiohttp_jinja2.template("functions.html")
async def functions_page(request: web.Request) -> dict[str, Any]:
    return {**base_context(request, "functions", "Functions"), "rows": function_rows(request)}


async def functions_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the functions table's rows, re-rendered every sample."""
    async with sse_response(request) as sse:
        while sse.is_connected():
            html = aiohttp_jinja2.render_string(
                "_function_rows.html", request, {"rows": function_rows(request)}
            )
            await sse.send(html, event="rows")
            await asyncio.sleep(SAMPLE_EVERY)  # the refresh period of a live page
    return sse


def _spec_or_404(ctx: ApiContext, name: str) -> FunctionSpec:
    spec = ctx.desired.spec(name)
    if spec is None:
        raise web.HTTPNotFound(text=f"no function {name!r}")
    return spec


def _series(samples: list[Sample]) -> dict[str, list[float]]:
    return {
        "rate": [s.rate for s in samples],
        "p50": [s.p50 or 0.0 for s in samples],
        "p95": [s.p95 or 0.0 for s in samples],
        "errors": [s.error_rate for s in samples],
        "inflight": [float(s.inflight) for s in samples],
        "replicas": [float(s.available) for s in samples],
    }


def _queue_of(ctx: ApiContext, name: str) -> dict[str, Any] | None:
    """The function's queued, running and dead jobs; None while the queue is not open."""
    found = ctx.queue_of(name) if ctx.queue_of is not None else {}
    return found or None


def _marks(samples: list[Sample], decisions: list[dict[str, object]]) -> list[float]:
    """Where on the charts' time axis (0..1) each decision falls, for those inside it."""
    if len(samples) < 2:
        return []
    first, last = samples[0].at, samples[-1].at
    out = []
    for d in decisions:
        at = d.get("at")
        if isinstance(at, int | float) and first <= at <= last:
            out.append((at - first) / (last - first))
    return out


def _autoscaling(ctx: ApiContext, spec: FunctionSpec, samples: list[Sample]) -> dict[str, Any]:
    """What the function's page shows of the autoscaler: its view, decisions and charts."""
    name = spec.name
    view = ctx.autoscaler.status(name) if ctx.autoscaler is not None else None
    decisions = ctx.autoscaler.decisions(name) if ctx.autoscaler is not None else []
    override = ctx.desired.replicas.get(name)
    policy = spec.scale
    latest = samples[-1] if samples else None
    return {
        "override": override,
        "autoscaling": policy.autoscaling,
        "scale_mode": "override" if override is not None else "automatic",
        "autoscaler": view,
        "decisions": list(reversed(decisions)),
        "decision_marks": _marks(samples, decisions),
        "replica_series": [
            ("wanted", [float(s.desired if s.wanted is None else s.wanted) for s in samples]),
            ("ready", [float(s.available) for s in samples]),
        ],
        "load_series": [s.load or 0.0 for s in samples],
        "load_now": f"{latest.load:.2f}" if latest and latest.load is not None else "\u2013",
        "load_unit": {"rps": "requests/s", "capacity": "requests in flight", "cpu": "% CPU"}[
            str(policy.type)
        ],
        "per_replica": f"{policy.per_replica:g}",
    }


def function_live(request: web.Request, name: str) -> dict[str, Any]:
    ctx = _ctx(request)
    spec = _spec_or_404(ctx, name)
    status = next((s for s in ctx.supervisor.statuses() if s.function == name), None)
    controller = ctx.supervisor.controller(name)
    samples = request.app[HISTORY].samples(name)
    count, errors, _ = ctx.metrics.totals(name)
    reload = request.app[GATEWAY].reload_status()
    return {
        "name": name,
        "phase": _phase(ctx, spec, status),
        "available": len(request.app[GATEWAY].pools.get(name)),
        # What the function is being taken to now (the autoscaler's last word, or the spec's).
        "desired": controller.replicas if controller else spec.replicas,
        "invocations": count,
        "errors": errors,
        "latest": samples[-1] if samples else None,
        "series": _series(samples),
        "window_seconds": int(len(samples) * SAMPLE_EVERY),
        "instances": [
            {"name": i.name, "id": i.id[:12], "running": i.running}
            for i in (controller.instances() if controller else [])
        ],
        "image": spec.image or (controller.image if controller else "") or "",
        "status": status.to_json() if status is not None else {},
        "reload": reload,
        "queue": _queue_of(ctx, name),
        **_autoscaling(ctx, spec, samples),
    }


@aiohttp_jinja2.template("function.html")
async def function_page(request: web.Request) -> dict[str, Any]:
    ctx = _ctx(request)
    name = request.match_info["name"]
    spec = _spec_or_404(ctx, name)
    return {
        **base_context(request, "functions", name),
        "spec": spec,
        "live": function_live(request, name),
        "routes": _routes_of(ctx, name),
        "max_replicas": MAX_REPLICAS,
        "origin": _origin(ctx, name),
        "removable": _origin(ctx, name) == "api",
    }


async def function_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events for one function: its live panel, and its log lines as they come."""
    name = request.match_info["name"]
    _spec_or_404(_ctx(request), name)
    async with sse_response(request) as sse:
        while sse.is_connected():
            try:
                live = function_live(request, name)
            except web.HTTPNotFound:
                await sse.send("<p>This function was removed.</p>", event="live")
                break
            html = aiohttp_jinja2.render_string("_function_live.html", request, {"live": live})
            await sse.send(html, event="live")
            await asyncio.sleep(SAMPLE_EVERY)  # the refresh period of a live page
    return sse


async def function_logs(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the last lines of every replica, then each new line."""
    ctx = _ctx(request)
    name = request.match_info["name"]
    _spec_or_404(ctx, name)
    async with (
        sse_response(request) as sse,
        contextlib.aclosing(follow_logs(ctx, name, None, None, LOG_TAIL)) as lines,
    ):
        async for item in lines:
            if not sse.is_connected():
                break
            if item is None:
                continue
            instance, stamp, text = item
            html = aiohttp_jinja2.render_string(
                "_log_line.html",
                request,
                {"instance": instance.name, "stamp": stamp, "text": text},
            )
            await sse.send(html, event="log")
    return sse


async def scale(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    name = request.match_info["name"]
    form = await request.post()
    raw = str(form.get("replicas", "")).strip()
    try:
        replicas = int(raw)
    except ValueError:
        raise InvalidRequest(f"replicas must be a whole number, got {raw!r}") from None
    # The same call as POST /system/scale-function/{name} (without waiting: the live panel
    # shows the replicas come); a second "scale to 2" after the autoscaler took it down works.
    await scale_to(ctx, name, replicas, wait=False)
    return message(request, f"{name} scaled to {replicas}", ok=True)


async def scale_reset(request: web.Request) -> web.Response:
    """Back to automatic: the same call as DELETE /system/scale-function/{name} (the override
    dropped, the file's or deployment's replicas set), without waiting for the containers: the
    live panel shows them come and go."""
    ctx = _ctx(request)
    name = request.match_info["name"]
    spec = await reset_override(ctx, name, wait=False)
    return message(
        request,
        f"{name} is back to automatic: {spec.replicas} replicas now, "
        f"then the autoscaler decides within {spec.scale.min}..{spec.scale.max}",
        ok=True,
    )


async def remove(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    name = request.match_info["name"]
    await ctx.desired.remove(name)
    response = message(request, f"{name} removed", ok=True)
    response.headers["HX-Redirect"] = "/ui/"
    return response


# -- deploy -------------------------------------------------------------------------------------


@aiohttp_jinja2.template("deploy.html")
async def deploy_page(request: web.Request) -> dict[str, Any]:
    ctx = _ctx(request)
    store_error = None
    try:
        store = await current_store(ctx)
        entries, location = list(store.functions), store.location
    except InvalidRequest as exc:
        entries, location, store_error = [], "", str(exc)
    return {
        **base_context(request, "deploy", "Deploy"),
        "entries": entries,
        "store_location": location,
        "store_error": store_error,
        "architecture": machine_architecture(),
    }


def _pairs(text: str, field: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise InvalidRequest(f"{field}, line {number}: write KEY=VALUE, got {line!r}")
        out[key.strip()] = value.strip()
    return out


async def deploy_image(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    form = await request.post()

    def field(key: str) -> str:
        value = form.get(key, "")
        return value.strip() if isinstance(value, str) else ""

    body: dict[str, Any] = {"service": field("name"), "image": field("image")}
    if field("fprocess"):
        body["envProcess"] = field("fprocess")
    for key, target in (("env", "envVars"), ("labels", "labels"), ("annotations", "annotations")):
        pairs = _pairs(field(key), key)
        if pairs:
            body[target] = pairs
    secrets = [s for s in field("secrets").replace(",", " ").split() if s]
    if secrets:
        body["secrets"] = secrets
    limits = {k: field(k) for k in ("memory", "cpu") if field(k)}
    if limits:
        body["limits"] = limits
    if form.get("read_only"):
        body["readOnlyRootFilesystem"] = True
    update = body["service"] in ctx.desired.deployed
    spec = await ctx.desired.deploy(body, update=update)
    return _deployed(request, [spec.name])


def _deployed(request: web.Request, names: list[str]) -> web.Response:
    return aiohttp_jinja2.render_template("_deployed.html", request, {"names": names})


async def deploy_stack(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    form = await request.post()
    text = form.get("stack", "")
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest("paste a stack file first")
    names = []
    for body in stack_to_deployments(text):
        spec = await ctx.desired.deploy(body, update=body["service"] in ctx.desired.deployed)
        names.append(spec.name)
    return _deployed(request, names)


async def deploy_from_store(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    entry = await store_entry(ctx, request.match_info["name"])
    form = await request.post()
    raw = form.get("name", "")
    deployed = await deploy_entry(ctx, entry, raw.strip() if isinstance(raw, str) else None)
    return _deployed(request, [deployed])


# -- secrets ------------------------------------------------------------------------------------


def secret_rows(ctx: ApiContext) -> list[dict[str, Any]]:
    functions = ctx.desired.effective().functions
    return [
        {"name": n, "used_by": sorted(f for f, s in functions.items() if n in s.secrets)}
        for n in secret_names(ctx, NAMESPACE)
    ]


@aiohttp_jinja2.template("secrets.html")
async def secrets_page(request: web.Request) -> dict[str, Any]:
    return {**base_context(request, "secrets", "Secrets"), "rows": secret_rows(_ctx(request))}


def _secrets_fragment(request: web.Request, text: str) -> web.Response:
    """The secrets table, after a change. The forms aim at the message line (where an error
    lands); a success replaces the whole table instead."""
    response = aiohttp_jinja2.render_template(
        "_secrets.html",
        request,
        {
            "rows": secret_rows(_ctx(request)),
            "csrf_token": request.app[CSRF].token(request[SESSION]),
            "flash": text,
        },
    )
    response.headers["HX-Retarget"] = "#secrets"
    return response


def _secret_value(form: Mapping[str, object]) -> bytes:
    value = form.get("value", "")
    if not isinstance(value, str):
        raise InvalidRequest("the value must be text")
    return value.encode()


async def secret_create(request: web.Request) -> web.Response:
    form = await request.post()
    name = str(form.get("name", "")).strip()
    # as POST /system/secrets: functions waiting for it start now
    await put_secret(_ctx(request), name, _secret_value(form), NAMESPACE, create=True)
    return _secrets_fragment(request, f"secret {name} created")


async def secret_update(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    form = await request.post()
    # as PUT /system/secrets: its users roll over in the background (undone if they cannot)
    await put_secret(_ctx(request), name, _secret_value(form), NAMESPACE, create=False)
    return _secrets_fragment(request, f"secret {name} updated")


async def secret_delete(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    name = request.match_info["name"]
    await remove_secret(ctx, name, NAMESPACE)  # 404, 400 or 409 (naming its users)
    return _secrets_fragment(request, f"secret {name} removed")


# -- system -------------------------------------------------------------------------------------


@aiohttp_jinja2.template("system.html")
async def system_page(request: web.Request) -> dict[str, Any]:
    ctx = _ctx(request)
    rows = function_rows(request)
    totals = [ctx.metrics.totals(r["name"]) for r in rows]
    store_location = ctx.desired.file_config.store or "the store faaso ships"
    return {
        **base_context(request, "system", "System"),
        "info": {
            "version": __version__,
            "backend": "docker",
            "architecture": platform.machine(),
            "python": platform.python_version(),
            "config": str(ctx.desired.file_config.path),
            "store": store_location,
        },
        "reload": request.app[GATEWAY].reload_status(),
        "summary": {
            "functions": len(rows),
            "ready": sum(1 for r in rows if r["phase"] == "ready"),
            "replicas": sum(r["available"] for r in rows),
            "invocations": sum(t[0] for t in totals),
            "errors": sum(t[1] for t in totals),
        },
        "rows": rows,
    }
