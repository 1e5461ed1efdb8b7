"""The OpenFaaS provider/gateway management API under ``/system``.

Shapes and status codes follow the real servers where they differ from the spec (see
``../shared/README.md``): list of secrets as ``[{name, namespace}]``, zero counts left out of
FunctionStatus, 404 on PUT of an unknown function, streaming NDJSON logs with 422 on a bad
``tail`` or ``since``. Every error is a 4xx with a JSON ``{"error": ...}``: bad input never
becomes a 500.

Namespaces as faasd and faas-netes have them: ``NAME.NAMESPACE`` in a path, ``namespace`` in
the query for reads and in the body for writes (when several are given they must agree);
absent, the default ``openfaas-fn``. A function's key inside faaso is ``NAME`` in the default
namespace and ``NAME.NAMESPACE`` in another (:func:`faaso.spec.function.function_key`).

``/system/info`` has two shapes: a gateway's (the default, faaso is the gateway) and, with
``provider_mode``, a provider's, which a real OpenFaaS gateway in front of faaso reads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import json
import platform
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from faaso import __version__
from faaso.api.openfaas import function_status
from faaso.backends.base import Instance, LogSource
from faaso.backends.swarm.secrets import SwarmSecrets
from faaso.buildinfo import build_sha
from faaso.config.deployment import namespace_name
from faaso.config.desired import DesiredState
from faaso.control.autoscaler import Autoscaler
from faaso.control.supervisor import ImageProvider, Supervisor
from faaso.errors import (
    BackendError,
    ConflictError,
    FaasoError,
    InvalidRequest,
    NotFoundError,
    ReloadError,
)
from faaso.gateway.metrics import Metrics
from faaso.logs import get_logger
from faaso.spec.function import NAMESPACE, function_key, split_key
from faaso.spec.timefmt import rfc3339
from faaso.state.secret_store import SecretStore

MAX_BODY = 1024 * 1024
FOLLOW_RESCAN = 1.0  # seconds: how often a followed log looks for new instances
SLOW_CALL = 1.0  # seconds: a management call slower than this is logged


@dataclass(slots=True)
class ApiContext:
    desired: DesiredState
    supervisor: Supervisor
    secrets: SecretStore
    metrics: Metrics
    backend: LogSource  # where instances' logs come from (the engine, or the Swarm's tasks)
    # The function's asynchronous queue for its status (set when the queue runs).
    queue_of: Callable[[str], dict[str, Any]] | None = None
    autoscaler: Autoscaler | None = None
    images: ImageProvider | None = None  # builds store entries that name a source folder
    orchestration: str = "docker"  # or swarm: reported by /system/info
    # Called when a secret (name, namespace) is created: retries a reload that failed for
    # want of it (set by the server to the reloader's).
    retry_reload: Callable[[str, str], None] | None = None
    # A cluster (swarm: {cluster: NAME}): the secrets are Swarm's versions, not ``secrets``.
    shared_secrets: SwarmSecrets | None = None


class ApiHolder:
    """The API's view of the server, filled in when the server has started."""

    def __init__(self) -> None:
        self.ctx: ApiContext | None = None

    def get(self) -> ApiContext:
        if self.ctx is None:
            raise web.HTTPServiceUnavailable(reason="faaso is starting")
        return self.ctx


HOLDER = web.AppKey("faaso_api", ApiHolder)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn faaso's exceptions into 4xx JSON answers; log slow calls."""
    started = time.monotonic()
    try:
        return await handler(request)
    except InvalidRequest as exc:
        return error(400, str(exc))
    except NotFoundError as exc:
        return error(404, str(exc))
    except ConflictError as exc:
        return error(409, str(exc))
    except ReloadError as exc:
        return error(400, f"the change was not applied: {exc}")
    except BackendError as exc:
        return error(503, f"the container engine failed: {exc}")
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            return error(exc.status, exc.reason)
        raise
    finally:
        elapsed = time.monotonic() - started
        if elapsed > SLOW_CALL and request.path != "/system/logs":
            get_logger("faaso.api").warning(
                "api.slow", method=request.method, path=request.path, seconds=round(elapsed, 3)
            )


async def read_json(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from exc


def namespace_of(ctx: ApiContext, *given: object) -> str:
    """The namespace a call names (path suffix, query, body: those given must agree), which
    must exist; the default one when none is given. Raises InvalidRequest."""
    names = {namespace_name(g) for g in given if g not in (None, "")}
    if len(names) > 1:
        raise InvalidRequest(f"the namespaces given do not agree: {', '.join(sorted(names))}")
    return ctx.desired.namespace(names.pop() if names else None)


def name_of(request: web.Request, *given: object) -> str:
    """The key of the function in the path (``NAME`` or ``NAME.NAMESPACE``), in the namespace
    of the query (and of ``given``, from a body)."""
    ctx = request.app[HOLDER].get()
    base, _, suffix = request.match_info["name"].partition(".")
    return function_key(base, namespace_of(ctx, suffix, request.query.get("namespace"), *given))


def _status(ctx: ApiContext, name: str) -> dict[str, Any] | None:
    spec = ctx.desired.spec(name)
    if spec is None:
        return None
    controller = ctx.supervisor.controller(name)
    image = spec.image or (controller.image if controller else "")
    available = controller.ready_count() if controller else 0
    created = None
    if spec.created_at is not None:
        created = rfc3339(spec.created_at)
    elif controller is not None:
        stamps = [i.created for i in controller.instances() if i.created]
        created = min(stamps) if stamps else None
    stored = ctx.desired.deployed.get(name)
    status = function_status(
        spec,
        image=image,
        available=available,
        invocations=ctx.metrics.invocations(name),
        created_at=created,
        deployment=stored.deployment if stored else None,
        replicas=controller.replicas if controller is not None else None,
    )
    if controller is not None and controller.error:
        # faaso's own field: why it does not run (a task error such as "No such image")
        status["error"] = controller.error
    if ctx.queue_of is not None:
        status["asyncQueue"] = ctx.queue_of(name)
    # What the background is doing with it (a change answered with 202 is applied there).
    current = next((s for s in ctx.supervisor.statuses() if s.function == name), None)
    if current is not None:
        status["phase"] = str(current.phase)
        if current.error:
            status["error"] = current.error
        if current.rollout_error:
            status["rolloutError"] = current.rollout_error
    return status


# -- functions ---------------------------------------------------------------------------------


async def list_functions(request: web.Request) -> web.Response:
    ctx = request.app[HOLDER].get()
    names = ctx.desired.functions_in(namespace_of(ctx, request.query.get("namespace")))
    return web.json_response([s for n in names if (s := _status(ctx, n)) is not None])


async def get_function(request: web.Request) -> web.Response:
    ctx = request.app[HOLDER].get()
    name = name_of(request)
    status = _status(ctx, name)
    if status is None:
        return error(404, f"function {split_key(name)[0]!r} not found in {split_key(name)[1]!r}")
    return web.json_response(status)


async def deploy_function(request: web.Request) -> web.Response:
    ctx = request.app[HOLDER].get()
    body = await read_json(request)
    update = request.method == "PUT"
    spec = await ctx.desired.deploy(body, update=update)
    return web.json_response(
        {"message": f"function {spec.short_name!r} deployed in {spec.namespace!r}"}, status=202
    )


async def delete_function(request: web.Request) -> web.Response:
    ctx = request.app[HOLDER].get()
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("functionName"), str):
        raise InvalidRequest('the body must be {"functionName": NAME}')
    name = body["functionName"]
    base, _, suffix = name.partition(".")
    await ctx.desired.remove(function_key(base, namespace_of(ctx, suffix, body.get("namespace"))))
    return web.json_response({"message": f"function {base!r} removed"}, status=202)


async def scale_to(ctx: ApiContext, name: str, replicas: int, *, wait: bool = True) -> None:
    """Set the API's replica override of ``name`` and the replicas now, even when the override
    did not change (the autoscaler or a wake moved the count since); with ``wait``, until the
    function has converged. The UI's scale form calls this too."""
    await ctx.desired.scale(name, replicas)
    controller = ctx.supervisor.controller(name)
    if controller is not None and controller.replicas != replicas:
        controller.set_replicas(replicas, "scaled through the API")
        if wait:
            await controller.wait_converged(controller.spec.startup_timeout + 30)


async def scale_function(request: web.Request) -> web.Response:
    ctx = request.app[HOLDER].get()
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a ScaleServiceRequest object")
    name = name_of(request, body.get("namespace"))
    service = body.get("serviceName")
    if service not in (None, "", split_key(name)[0], name):
        raise InvalidRequest(f"serviceName {service!r} does not match the path ({name!r})")
    replicas = body.get("replicas")
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise InvalidRequest("replicas must be a whole number")
    # 202: accepted; the instances start or drain in the background (the status shows it)
    await scale_to(ctx, name, replicas, wait=False)
    return web.json_response({"message": f"function {name!r} scaled to {replicas}"}, status=202)


# -- secrets -----------------------------------------------------------------------------------


def _secret_value(body: dict[str, Any]) -> bytes:
    if isinstance(body.get("value"), str):
        return str(body["value"]).encode()
    if isinstance(body.get("rawValue"), str):
        try:
            return base64.b64decode(body["rawValue"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest("rawValue must be base64") from exc
    raise InvalidRequest("give the secret's value as 'value' (text) or 'rawValue' (base64)")


async def _secret_body(request: web.Request) -> tuple[dict[str, Any], str]:
    """The Secret body and its namespace (the body's, or the query's)."""
    ctx = request.app[HOLDER].get()
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise InvalidRequest("the body must be a Secret object with a 'name'")
    return body, namespace_of(ctx, body.get("namespace"), request.query.get("namespace"))


def _users_of(ctx: ApiContext, secret: str, namespace: str) -> list[str]:
    functions = ctx.desired.effective().functions
    return sorted(
        s.short_name for s in functions.values() if s.namespace == namespace and secret in s.secrets
    )


def secret_names(ctx: ApiContext, namespace: str) -> list[str]:
    """The secrets of a namespace: the state directory's, or in a cluster Swarm's."""
    if ctx.shared_secrets is not None:
        return ctx.shared_secrets.names(namespace)
    return ctx.secrets.names(namespace)


def check_secret(ctx: ApiContext, name: str, namespace: str) -> None:
    """Raises NotFoundError when it does not exist, InvalidRequest when the name is bad."""
    if ctx.shared_secrets is not None:
        ctx.shared_secrets.newest_version(name, namespace)
    else:
        ctx.secrets.path(name, namespace)


async def list_secrets(request: web.Request) -> web.Response:
    ctx = request.app[HOLDER].get()
    namespace = namespace_of(ctx, request.query.get("namespace"))
    names = secret_names(ctx, namespace)
    return web.json_response([{"name": n, "namespace": namespace} for n in names])


def secret_created(ctx: ApiContext, name: str, namespace: str) -> None:
    """A secret now exists: the functions waiting for it start. Those of the running config
    roll over to it (a refresh); a reload that failed because it was missing is tried again
    (the function it adds is not in the running config)."""
    if _users_of(ctx, name, namespace):
        ctx.supervisor.refresh_soon(f"secret {name!r} created")
    if ctx.retry_reload is not None:
        ctx.retry_reload(name, namespace)


async def put_secret(
    ctx: ApiContext, name: str, value: bytes, namespace: str, *, create: bool
) -> None:
    """Create (``create``) or replace a secret, and start what follows: the functions waiting
    for a new one start; those that use a replaced one roll over in the background, and when
    they cannot, the old value is back (and they converge on it) and their status says why
    (``rolloutError``). In a cluster the value becomes a Swarm secret version at once, which
    every member sees. The API and the UI call this. Raises InvalidRequest, NotFoundError,
    ConflictError, BackendError."""
    undo: Callable[[], None]
    after_failure: Callable[[], Awaitable[None]] | None = None
    shared = ctx.shared_secrets
    if shared is not None:
        version = await shared.put(name, value, must_exist=not create, namespace=namespace)

        def undo() -> None:
            shared.withdraw(version)  # the version before is the newest again here

        async def after_failure() -> None:
            await shared.remove_version(version)  # ... and for every member

    else:
        previous = None if create else ctx.secrets.value(name, namespace)  # 404 when missing
        ctx.secrets.put(name, value, must_exist=not create, namespace=namespace)

        def undo() -> None:
            # Before the controllers roll back (the supervisor calls this first): they go
            # back to the old value's fingerprint, and the instances made with the new one are
            # replaced. Without it they rolled back to the new value's fingerprint, and an
            # instance started just after the old value came back (old content, new label)
            # could replace the one that had served all along.
            with contextlib.suppress(FaasoError):
                if previous is not None and ctx.secrets.value(name, namespace) == value:
                    ctx.secrets.put(name, previous, must_exist=True, namespace=namespace)

    if create:
        secret_created(ctx, name, namespace)
        return
    users = _users_of(ctx, name, namespace)
    if users:
        ctx.supervisor.run_soon(
            f"secret-update-{name}",
            lambda: _roll_secret(ctx, name, users, namespace, undo, after_failure),
        )


async def create_secret(request: web.Request) -> web.Response:
    ctx = request.app[HOLDER].get()
    body, namespace = await _secret_body(request)
    await put_secret(ctx, body["name"], _secret_value(body), namespace, create=True)
    return web.json_response({"message": f"secret {body['name']!r} created"}, status=200)


async def update_secret(request: web.Request) -> web.Response:
    """202: the value is stored, the functions that use it roll over in the background (see
    :func:`put_secret`)."""
    ctx = request.app[HOLDER].get()
    body, namespace = await _secret_body(request)
    name, value = body["name"], _secret_value(body)
    await put_secret(ctx, name, value, namespace, create=False)
    return web.json_response({"message": f"secret {name!r} updated"}, status=202)


async def _roll_secret(
    ctx: ApiContext,
    name: str,
    users: list[str],
    namespace: str,
    undo: Callable[[], None],
    after_failure: Callable[[], Awaitable[None]] | None,
) -> None:
    try:
        await ctx.desired.refresh(undo=undo)  # the functions that use it roll over
    except ReloadError as exc:
        get_logger("faaso.api").error("secret.update_not_applied", secret=name, error=str(exc))
        why = f"the new value of secret {name!r} was not applied, the old one is back: {exc}"
        for user in users:
            controller = ctx.supervisor.controller(function_key(user, namespace))
            if controller is not None:
                controller.rollout_error = why
        if after_failure is not None:
            await after_failure()


async def remove_secret(ctx: ApiContext, name: str, namespace: str) -> None:
    """Remove a secret (every version of it, in a cluster). Raises NotFoundError,
    InvalidRequest, ConflictError while a function uses it (naming the functions)."""
    check_secret(ctx, name, namespace)
    users = _users_of(ctx, name, namespace)
    if users:
        raise ConflictError(
            f"secret {name!r} is used by {', '.join(users)}; remove it from those functions first"
        )
    if ctx.shared_secrets is not None:
        await ctx.shared_secrets.delete(name, namespace)
    else:
        ctx.secrets.delete(name, namespace)


async def delete_secret(request: web.Request) -> web.Response:
    ctx = request.app[HOLDER].get()
    body, namespace = await _secret_body(request)
    await remove_secret(ctx, body["name"], namespace)
    return web.json_response({"message": f"secret {body['name']!r} removed"}, status=200)


# -- logs --------------------------------------------------------------------------------------


def _parse_logs_query(
    ctx: ApiContext, request: web.Request
) -> tuple[str, str | None, int | None, bool, float | None]:
    query = request.query
    name = query.get("name", "")
    if not name:
        raise InvalidRequest("the 'name' query parameter is required")
    base, _, suffix = name.partition(".")
    key = function_key(base, namespace_of(ctx, suffix, query.get("namespace")))
    tail: int | None = None
    if query.get("tail") not in (None, ""):
        try:
            tail = int(query["tail"])
        except ValueError:
            raise web.HTTPUnprocessableEntity(reason="tail must be a whole number") from None
        if tail <= 0:
            tail = None
    follow_raw = query.get("follow", "false").lower()
    if follow_raw not in ("true", "false", "1", "0", ""):
        raise web.HTTPUnprocessableEntity(reason="follow must be true or false")
    since: float | None = None
    if query.get("since") not in (None, ""):
        try:
            stamp = dt.datetime.fromisoformat(query["since"].replace("Z", "+00:00"))
        except ValueError:
            raise web.HTTPUnprocessableEntity(reason="since must be an RFC 3339 time") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)
        since = stamp.timestamp()
    return key, query.get("instance") or None, tail, follow_raw in ("true", "1"), since


async def get_logs(request: web.Request) -> web.StreamResponse:
    ctx = request.app[HOLDER].get()
    name, instance, tail, follow, since = _parse_logs_query(ctx, request)
    short, namespace = split_key(name)
    if ctx.desired.spec(name) is None:
        return error(404, f"function {short!r} not found in {namespace!r}")
    controller = ctx.supervisor.controller(name)
    instances: list[Instance] = controller.instances() if controller else []
    if instance:
        instances = [i for i in instances if instance in (i.name, i.id, i.id[:12])]

    def entry(inst: Instance, stamp: str, text: str) -> bytes:
        doc = {
            "name": short,
            "namespace": namespace,
            "instance": inst.name,
            "timestamp": stamp,
            "text": text,
        }
        return json.dumps(doc).encode() + b"\n"

    # The backend is asked before the status line goes out: an engine error is a 503 with a
    # JSON error (errors_middleware), never a 200 cut short.
    if not follow:
        lines: list[tuple[str, bytes]] = []
        for inst in instances:
            async for stamp, text in ctx.backend.logs(
                inst.id, follow=False, since=since, tail=tail
            ):
                lines.append((stamp, entry(inst, stamp, text)))
        lines.sort(key=lambda item: item[0])
        if tail is not None:
            lines = lines[-tail:]
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for _, line in lines:
            await response.write(line)
        await response.write_eof()
        return response
    for inst in instances:  # following: the engine must answer before the stream starts
        await ctx.backend.inspect(inst.id)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)

    try:
        async with contextlib.aclosing(follow_logs(ctx, name, instance, since, tail)) as items:
            async for item in items:
                if item is not None:
                    await response.write(entry(*item))  # raises once the client has gone away
                    continue
                transport = request.transport
                if transport is None or transport.is_closing():
                    break  # the client left while nothing was being written
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


async def follow_logs(
    ctx: ApiContext, name: str, instance: str | None, since: float | None, tail: int | None
) -> AsyncGenerator[tuple[Instance, str, str] | None, None]:
    """Follow the logs of every replica of ``name`` (or of one ``instance``): ``(instance,
    timestamp, text)`` as lines arrive, and ``None`` after each ``FOLLOW_RESCAN`` seconds of
    silence, so that the caller can see whether its client is still there. Instances that
    start later (a scale-up, a replacement) are picked up too. Used by /system/logs and the UI.
    """
    queue: asyncio.Queue[tuple[Instance, str, str]] = asyncio.Queue(maxsize=1024)
    pumps: dict[str, asyncio.Task[None]] = {}

    async def pump(inst: Instance, since_: float | None, tail_: int | None) -> None:
        with contextlib.suppress(FaasoError):
            async for stamp, text in ctx.backend.logs(
                inst.id, follow=True, since=since_, tail=tail_
            ):
                await queue.put((inst, stamp, text))

    def current() -> list[Instance]:
        live = ctx.supervisor.controller(name)
        found = live.instances() if live else []
        return [i for i in found if not instance or instance in (i.name, i.id, i.id[:12])]

    def attach(found: list[Instance], since_: float | None, tail_: int | None) -> None:
        for inst in found:
            if inst.id not in pumps:
                pumps[inst.id] = asyncio.create_task(pump(inst, since_, tail_))

    attach(current(), since, tail)
    last_scan = time.monotonic()
    try:
        while True:
            try:
                yield await asyncio.wait_for(queue.get(), FOLLOW_RESCAN)
            except TimeoutError:
                yield None
            now = time.monotonic()
            if now - last_scan >= FOLLOW_RESCAN:
                last_scan = now
                attach(current(), None, None)  # a new instance: everything it printed
    finally:
        for task in pumps.values():
            task.cancel()
        await asyncio.gather(*pumps.values(), return_exceptions=True)


# -- the rest ----------------------------------------------------------------------------------


PROVIDER_MODE = web.AppKey("faaso_provider_mode", bool)


async def info(request: web.Request) -> web.Response:
    """A provider's shape behind a real OpenFaaS gateway (which nests it in its own), else
    the gateway's. ``sha`` is the build's id, never empty."""
    holder = request.app[HOLDER]
    orchestration = holder.ctx.orchestration if holder.ctx is not None else "docker"
    version = {"release": __version__, "sha": build_sha()}
    provider = {"provider": "faaso", "orchestration": orchestration, "version": version}
    if request.app[PROVIDER_MODE]:
        return web.json_response(provider)
    return web.json_response(
        {
            "provider": provider,
            "version": {**version, "commit_message": ""},
            "arch": platform.machine(),
        }
    )


# -- namespaces --------------------------------------------------------------------------------
# GET/POST/DELETE /system/namespaces, and faas-provider's /system/namespace/{name} (GET, POST,
# PUT, DELETE). A namespace is a name (with labels and annotations) that functions and secrets
# are kept under; deleting one that still holds functions or secrets is a 409.


async def namespaces(request: web.Request) -> web.Response:
    return web.json_response(request.app[HOLDER].get().desired.namespace_names())


async def _namespace_body(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidRequest('the body must be {"name": NAMESPACE, "labels": {...}}')
    in_path = request.match_info.get("namespace")
    if in_path is not None:
        if body.get("name") not in (None, "", in_path):
            raise InvalidRequest(f"name {body['name']!r} does not match the path ({in_path!r})")
        body = {**body, "name": in_path}
    return body


async def create_namespace(request: web.Request) -> web.Response:
    ctx = request.app[HOLDER].get()
    body = await _namespace_body(request)
    namespace = await ctx.desired.put_namespace(body, create=request.method == "POST")
    verb = "created" if request.method == "POST" else "updated"
    return web.json_response({"message": f"namespace {namespace!r} {verb}"}, status=200)


async def get_namespace(request: web.Request) -> web.Response:
    ctx = request.app[HOLDER].get()
    return web.json_response(
        ctx.desired.namespace_info(namespace_name(request.match_info["namespace"]))
    )


async def delete_namespace(request: web.Request) -> web.Response:
    ctx = request.app[HOLDER].get()
    if "namespace" in request.match_info:
        name: object = request.match_info["namespace"]
    else:
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise InvalidRequest('the body must be {"name": NAMESPACE}')
        name = body["name"]
    namespace = namespace_name(name)
    if namespace == NAMESPACE:
        raise InvalidRequest(f"namespace {NAMESPACE!r} is faaso's default; it stays")
    ctx.desired.namespace_info(namespace)  # 404 when it does not exist
    users = [split_key(k)[0] for k in ctx.desired.functions_in(namespace)]
    if users:  # checked again, under the desired state's lock, by delete_namespace
        raise ConflictError(
            f"namespace {namespace!r} still has functions ({', '.join(users)}); remove them first"
        )
    if secret_names(ctx, namespace):
        raise ConflictError(
            f"namespace {namespace!r} still has secrets "
            f"({', '.join(secret_names(ctx, namespace))}); remove them first"
        )
    await ctx.desired.delete_namespace(namespace)
    ctx.secrets.drop_namespace(namespace)
    return web.json_response({"message": f"namespace {namespace!r} removed"}, status=200)


async def not_found(request: web.Request) -> web.Response:
    return error(404, f"no such API route: {request.method} {request.path}")


def api_app(
    holder: ApiHolder,
    middlewares: list[Any],
    extra: Sequence[Callable[[web.Application], None]] = (),
    *,
    provider_mode: bool = False,
) -> web.Application:
    """The ``/system`` sub-application (auth applies to it alone); each of ``extra`` adds its
    routes (asynchronous jobs, scaling) before the catch-all 404."""
    app = web.Application(middlewares=[*middlewares, errors_middleware], client_max_size=MAX_BODY)
    app[HOLDER] = holder
    app[PROVIDER_MODE] = provider_mode
    build_sha()  # computed once, now, not on the event loop's first /system/info
    r = app.router
    r.add_get("/functions", list_functions)
    r.add_post("/functions", deploy_function)
    r.add_put("/functions", deploy_function)
    r.add_delete("/functions", delete_function)
    r.add_get("/function/{name}", get_function)
    r.add_post("/scale-function/{name}", scale_function)
    r.add_get("/secrets", list_secrets)
    r.add_post("/secrets", create_secret)
    r.add_put("/secrets", update_secret)
    r.add_delete("/secrets", delete_secret)
    r.add_get("/logs", get_logs)
    r.add_get("/info", info)
    r.add_get("/namespaces", namespaces)
    r.add_post("/namespaces", create_namespace)
    r.add_delete("/namespaces", delete_namespace)
    r.add_get("/namespace/{namespace}", get_namespace)
    r.add_post("/namespace/{namespace}", create_namespace)
    r.add_put("/namespace/{namespace}", create_namespace)
    r.add_delete("/namespace/{namespace}", delete_namespace)
    from faaso.api.store import add_store_routes  # here: that module builds on this one

    add_store_routes(app)  # /system/store: faaso's function store
    for add in extra:
        add(app)
    r.add_route("*", "/{tail:.*}", not_found)
    return app
