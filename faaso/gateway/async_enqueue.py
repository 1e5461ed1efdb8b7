"""``/async-function/NAME[.openfaas-fn][/sub/path][?query]``: OpenFaaS's asynchronous
invocation, made durable.

Any method; the method, sub-path, query, headers and body are stored as sent and replayed to
the function by the workers (:mod:`faaso.control.async_workers`). The answer is 202 with
``X-Call-Id`` (the caller's own when it sent one: the same id twice is one job) and
``X-Start-Time``, sent only once the job is committed to disk. Refused at once: an unknown
function (404), a body over the limit (413), a malformed or not allowed ``X-Callback-Url`` or
a bad ``X-Call-Id`` (400).

``DELETE /async-function/X`` is OpenFaaS's asynchronous DELETE call when X names a function
(the contract is kept); only when X names no function and is a call id (no sub-path) does it
cancel the job with that id that has not started: 200, 404 when there is no such job, 409 when
it already started. ``DELETE /system/async/CALL-ID`` (the API) cancels whatever the id.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from aiohttp import web

from faaso.gateway.messages import CALL_ID, START_TIME, new_call_id
from faaso.gateway.proxy import json_error, upstream_headers
from faaso.spec.asyncjob import CALL_ID_RE, CallbackHosts, parse_callback_url
from faaso.spec.function import function_key
from faaso.spec.routing import RouteTable
from faaso.state.queue import JobQueue, NewJob

PREFIX = "/async-function/"
CALLBACK_URL = "X-Callback-Url"
DEFAULT_MAX_BODY = 1024 * 1024


class AsyncIntake:
    """What the enqueue endpoint needs; ``hosts`` and ``max_body`` may be swapped on reload.
    ``wake(function)`` tells the workers a job of that function is waiting."""

    def __init__(
        self,
        queue: JobQueue,
        routes: Callable[[], RouteTable],
        *,
        wake: Callable[[str], None] = lambda _function: None,
        hosts: CallbackHosts | None = None,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.queue = queue
        self.routes = routes
        self.wake = wake
        self.hosts = hosts or CallbackHosts()
        self.max_body = max_body
        self.enqueued: defaultdict[str, int] = defaultdict(int)


class IntakeSlot:
    """Where the server puts the intake once its queue is open. The slot itself is stored on
    the app before the app starts (a started aiohttp app must not change its own state)."""

    def __init__(self, intake: AsyncIntake | None = None) -> None:
        self.intake = intake


INTAKE = web.AppKey("faaso_async_intake", IntakeSlot)


def _error(status: int, message: str, function: str | None = None) -> web.Response:
    """A proxy-made error, as the proxy makes them (marked, logged when a 5xx)."""
    return json_error(status, message, function, None)


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None when it is over ``limit`` bytes."""
    length = request.content_length
    if length is not None and length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


def function_of(raw_path: str) -> str:
    """The function key an ``/async-function/NAME[.NAMESPACE][/...]`` path names (it may name
    none: a call id, an unknown function)."""
    name = raw_path[len(PREFIX) :].partition("/")[0]
    short, _, namespace = name.partition(".")
    return function_key(short, namespace)


async def async_function(request: web.Request) -> web.StreamResponse:
    slot = request.app.get(INTAKE)
    intake = None if slot is None else slot.intake
    if intake is None:
        return _error(503, "asynchronous invocations are not enabled on this server")
    raw_path, _, query = request.raw_path.partition("?")
    rest = raw_path[len(PREFIX) :]
    name, slash, sub = rest.partition("/")
    short, dot, namespace = name.partition(".")
    base = function_key(short, namespace)  # the function's key: NAME, or NAME.NAMESPACE
    known = (not dot or namespace) and base in intake.routes().functions
    if not known:
        if request.method == "DELETE" and not slash and CALL_ID_RE.match(name):
            return await _cancel(intake, name)
        return _error(404, f"no function named {name!r}", name)
    callback = request.headers.get(CALLBACK_URL)
    if callback is not None:
        try:
            url = parse_callback_url(callback)
        except ValueError as exc:
            return _error(400, str(exc))
        if not intake.hosts.allows(url):
            return _error(
                400,
                f"callback host {url.host}:{url.port} is not allowed by async.callback_hosts",
            )
    call_id = request.headers.get(CALL_ID)
    if call_id is not None and not CALL_ID_RE.match(call_id):
        return _error(400, "X-Call-Id must be 1 to 128 letters, digits or ._:~+=@- characters")
    body = await _read_body(request, intake.max_body)
    if body is None:
        return _error(
            413, f"the body is over the {intake.max_body} bytes an asynchronous call may carry"
        )
    headers = upstream_headers(request)
    headers.popall(CALL_ID, None)
    job = NewJob(
        id=call_id or new_call_id(),
        function=base,
        method=request.method,
        path="/" + sub if slash else "/",
        query=query,
        headers=tuple(headers.items()),
        body=body,
        callback_url=callback,
        created=time.time(),
    )
    stored, created = await intake.queue.enqueue(job)
    if created:
        intake.enqueued[base] += 1
        intake.wake(base)
    return web.Response(
        status=202,
        headers={CALL_ID: stored.id, START_TIME: str(int(stored.created * 1e9))},
    )


async def _cancel(intake: AsyncIntake, call_id: str) -> web.Response:
    outcome = await intake.queue.cancel(call_id, time.time())
    if outcome == "missing":
        return _error(404, f"no function and no asynchronous call named {call_id!r}")
    if outcome == "started":
        return _error(
            409,
            f"call {call_id!r} has already started (or ended); only a queued call can be cancelled",
        )
    return web.json_response({"callId": call_id, "state": "cancelled"})
