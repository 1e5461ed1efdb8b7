"""Scaling through the API: AlertManager's webhook (``POST /system/alert``, as OpenFaaS CE
scales) and the reset of an API replica override (``DELETE /system/scale-function/{name}``,
faaso's own, used by ``faaso scale NAME --reset``).

The alert body is AlertManager's webhook payload: ``{"status": "firing"|"resolved", "alerts":
[{"status": ..., "labels": {"function_name": NAME, ...}}, ...]}``. Each alert's own status
counts (the top-level one when an alert has none). Firing adds ``ceil(max x factor / 100)``
replicas up to max; resolved returns to min. The whole body is checked before anything changes.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from faaso.api.handlers import HOLDER, ApiContext, name_of, namespace_of, read_json
from faaso.control.autoscaler import Autoscaler
from faaso.errors import InvalidRequest, NotFoundError
from faaso.spec.function import FunctionSpec, function_key

ALERT_STATES = ("firing", "resolved")


def _autoscaler(ctx: ApiContext) -> Autoscaler:
    if ctx.autoscaler is None:
        raise web.HTTPServiceUnavailable(reason="the autoscaler is not running")
    return ctx.autoscaler


def _alerts(ctx: ApiContext, body: Any) -> list[tuple[str, bool]]:
    if not isinstance(body, dict) or not isinstance(body.get("alerts"), list):
        raise InvalidRequest('the body must be an AlertManager webhook payload: {"alerts": [...]}')
    top = body.get("status")
    out: list[tuple[str, bool]] = []
    for i, alert in enumerate(body["alerts"]):
        if not isinstance(alert, dict):
            raise InvalidRequest(f"alerts[{i}] must be an object")
        labels = alert.get("labels")
        name = labels.get("function_name") if isinstance(labels, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"alerts[{i}].labels.function_name must name a function")
        status = alert.get("status") or top
        if status not in ALERT_STATES:
            raise InvalidRequest(f"alerts[{i}].status {status!r} must be firing or resolved")
        base, _, namespace = name.partition(".")  # the gateway's NAME.NAMESPACE
        out.append((function_key(base, namespace_of(ctx, namespace)), status == "firing"))
    return out


async def alert(request: web.Request) -> web.Response:
    ctx = request.app[HOLDER].get()
    autoscaler = _autoscaler(ctx)
    alerts = _alerts(ctx, await read_json(request))
    for name, _ in alerts:
        if ctx.supervisor.controller(name) is None:
            raise NotFoundError(f"function {name!r} does not exist")
    results = [
        {
            "function": name,
            "status": "firing" if firing else "resolved",
            "replicas": autoscaler.alert(name, firing),
        }
        for name, firing in alerts
    ]
    return web.json_response({"message": f"{len(results)} alert(s) applied", "results": results})


async def reset_override(ctx: ApiContext, name: str, *, wait: bool = True) -> FunctionSpec:
    """Drop the API's replica override of ``name`` and set the replicas it falls back to (the
    file's or the deployment's; the autoscaler takes over from there). With ``wait``, until the
    function has converged. The UI's "back to automatic" calls this too. Raises NotFoundError."""
    spec = await ctx.desired.reset_scale(name)
    controller = ctx.supervisor.controller(name)
    if controller is not None and controller.replicas != spec.replicas:
        controller.set_replicas(spec.replicas, "the API override was reset")
        if wait:
            await controller.wait_converged(controller.spec.startup_timeout + 30)
    return spec


async def reset_scale(request: web.Request) -> web.Response:
    ctx = request.app[HOLDER].get()
    name = name_of(request)
    spec = await reset_override(ctx, name)
    return web.json_response(
        {"message": f"function {name!r}: replica override dropped; {spec.replicas} replicas"},
        status=202,
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/alert", alert)
    router.add_delete("/scale-function/{name}", reset_scale)
