"""``/system/async``: what became of asynchronous calls, and the dead letters (behind the API's
auth, like every ``/system`` route).

- ``GET /system/async?state=&function=&limit=``: jobs, oldest first (``limit`` 1..1000, 100)
- ``GET /system/async/CALL-ID``: one job: state, attempts, timings, callback, and the stored
  response (kept ``async.retention`` seconds after the job finished; dead letters until purged)
- ``DELETE /system/async/CALL-ID``: cancel a job that has not started (200; 409 once it
  started; 404 unknown). The unambiguous way to cancel: ``DELETE /async-function/X`` cancels
  only when X names no function (when it does, it is OpenFaaS's asynchronous DELETE call).
- ``POST /system/async/replay``, ``POST /system/async/purge``: dead letters, selected by a JSON
  body ``{"ids": [...]}`` or ``{"function": NAME}`` (both may be given; ``{}`` is all of them);
  the answer lists the ids replayed or purged.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from faaso.errors import ConflictError, InvalidRequest, NotFoundError
from faaso.spec.asyncjob import STATES
from faaso.spec.timefmt import rfc3339
from faaso.state.queue import Job, JobQueue


class AsyncJobsHolder:
    """The queue, once the server has opened it."""

    def __init__(self) -> None:
        self.queue: JobQueue | None = None

    def get(self) -> JobQueue:
        if self.queue is None:
            raise web.HTTPServiceUnavailable(reason="the asynchronous queue is not open yet")
        return self.queue


ASYNC_HOLDER = web.AppKey("faaso_async_jobs", AsyncJobsHolder)


def _time(value: float | None) -> str | None:
    return None if value is None else rfc3339(value)


def job_json(job: Job, *, full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "callId": job.id,
        "function": job.function,
        "state": job.state,
        "attempts": job.attempts,
        "method": job.method,
        "path": job.path + ("?" + job.query if job.query else ""),
        "createdAt": _time(job.created),
        "startedAt": _time(job.started),
        "finishedAt": _time(job.finished),
        "status": job.status,
        "durationSeconds": job.duration,
        "error": job.error,
    }
    if job.callback_url is not None:
        out["callback"] = {
            "url": job.callback_url,
            "state": job.callback,
            "attempts": job.callback_attempts,
            "status": job.callback_status,
            "error": job.callback_error,
            "at": _time(job.callback_at),
        }
    if full and job.response_body is not None:
        body = job.response_body
        response: dict[str, Any] = {"headers": [list(h) for h in job.response_headers]}
        try:
            response["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            response["bodyBase64"] = base64.b64encode(body).decode()
        out["response"] = response
    return out


async def list_jobs(request: web.Request) -> web.Response:
    queue = request.app[ASYNC_HOLDER].get()
    state = request.query.get("state")
    if state is not None and state not in STATES:
        raise InvalidRequest(f"state must be one of {', '.join(STATES)} (got {state!r})")
    raw_limit = request.query.get("limit", "100")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
        raise InvalidRequest(f"limit must be a whole number from 1 to 1000 (got {raw_limit!r})")
    jobs = await queue.find(
        state=state, function=request.query.get("function"), limit=int(raw_limit)
    )
    return web.json_response([job_json(j, full=False) for j in jobs])


async def get_job(request: web.Request) -> web.Response:
    queue = request.app[ASYNC_HOLDER].get()
    call_id = request.match_info["call_id"]
    job = await queue.get(call_id)
    if job is None:
        raise NotFoundError(f"no asynchronous call {call_id!r} (or it expired)")
    return web.json_response(job_json(job, full=True))


async def cancel_job(request: web.Request) -> web.Response:
    queue = request.app[ASYNC_HOLDER].get()
    call_id = request.match_info["call_id"]
    outcome = await queue.cancel(call_id, time.time())
    if outcome == "missing":
        raise NotFoundError(f"no asynchronous call {call_id!r} (or it expired)")
    if outcome == "started":
        raise ConflictError(
            f"call {call_id!r} has already started (or ended); only a queued call can be cancelled"
        )
    return web.json_response({"callId": call_id, "state": "cancelled"})


async def _selector(request: web.Request) -> tuple[list[str] | None, str | None]:
    raw = await request.read()
    if not raw.strip():
        return None, None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict) or set(body) - {"ids", "function"}:
        raise InvalidRequest('the body must be {"ids": [...]} and/or {"function": NAME}')
    ids = body.get("ids")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
        raise InvalidRequest("ids must be a list of call ids")
    function = body.get("function")
    if function is not None and not isinstance(function, str):
        raise InvalidRequest("function must be a function name")
    return ids, function


async def replay(request: web.Request) -> web.Response:
    queue = request.app[ASYNC_HOLDER].get()
    ids, function = await _selector(request)
    replayed = await queue.replay(time.time(), ids=ids, function=function)
    wake = request.app.get(WAKE)
    if wake is not None and replayed:
        wake.wake()
    return web.json_response({"replayed": replayed})


async def purge(request: web.Request) -> web.Response:
    queue = request.app[ASYNC_HOLDER].get()
    ids, function = await _selector(request)
    return web.json_response({"purged": await queue.purge(ids=ids, function=function)})


class Waker:
    """Tells the workers that replayed jobs wait (set by the server)."""

    def __init__(self) -> None:
        self.wake: Callable[[], None] = lambda: None


WAKE = web.AppKey("faaso_async_wake", Waker)


def add_async_routes(app: web.Application, holder: AsyncJobsHolder, waker: Waker) -> None:
    """Mount the routes on the ``/system`` sub-application."""
    app[ASYNC_HOLDER] = holder
    app[WAKE] = waker
    app.router.add_get("/async", list_jobs)
    app.router.add_post("/async/replay", replay)
    app.router.add_post("/async/purge", purge)
    app.router.add_get("/async/{call_id}", get_job)
    app.router.add_delete("/async/{call_id}", cancel_job)
