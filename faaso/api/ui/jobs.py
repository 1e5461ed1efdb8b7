"""The UI's asynchronous jobs: the list (``/ui/async``, filtered by state and function, live),
one job (``/ui/async/job/{id}``, live), and the two changes: replay a dead letter, cancel a
queued job. Every change goes through the queue the ``/system/async`` API uses
(:class:`~faaso.state.queue.JobQueue`), with the same rules: only a dead letter is replayed,
only a queued job is cancelled.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from aiohttp_sse import sse_response

from faaso.api.async_jobs import ASYNC_HOLDER, WAKE
from faaso.api.handlers import HOLDER
from faaso.api.ui.history import SAMPLE_EVERY
from faaso.api.ui.views import base_context, message
from faaso.errors import ConflictError, InvalidRequest, NotFoundError
from faaso.spec.asyncjob import DEAD, QUEUED, STATES
from faaso.state.queue import Job, JobQueue

LIMIT = 200  # jobs listed at most (the oldest first, as GET /system/async)


def _queue(request: web.Request) -> JobQueue:
    return request.app[ASYNC_HOLDER].get()  # 503 while the queue is not open


def _filters(request: web.Request) -> tuple[str | None, str | None]:
    state = request.query.get("state") or None
    if state is not None and state not in STATES:
        raise InvalidRequest(f"state must be one of {', '.join(STATES)} (got {state!r})")
    function = request.query.get("function") or None
    return state, function


def _row(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "function": job.function,
        "state": job.state,
        "attempts": job.attempts,
        "method": job.method,
        "path": job.path + ("?" + job.query if job.query else ""),
        "created": job.created,
        "started": job.started,
        "finished": job.finished,
        "status": job.status,
        "duration": job.duration,
        "error": job.error,
        "cancellable": job.state == QUEUED,
        "replayable": job.state == DEAD,
    }


async def _rows(request: web.Request) -> dict[str, Any]:
    state, function = _filters(request)
    queue = _queue(request)
    jobs = await queue.find(state=state, function=function, limit=LIMIT)
    stats = await queue.stats()
    return {
        "jobs": [_row(j) for j in jobs],
        "limit": LIMIT,
        "totals": {
            "queued": sum(s.queued for s in stats.values()),
            "running": sum(s.running for s in stats.values()),
            "dead": sum(s.dead for s in stats.values()),
        },
        "csrf_token": base_context(request, "async", "")["csrf_token"],
    }


@aiohttp_jinja2.template("async.html")
async def jobs_page(request: web.Request) -> dict[str, Any]:
    state, function = _filters(request)
    ctx = request.app[HOLDER].get()
    functions = sorted(ctx.desired.effective().functions)
    return {
        **base_context(request, "async", "Async jobs"),
        **(await _rows(request)),
        "states": STATES,
        "state": state or "",
        "function": function or "",
        "functions": functions,
        "query": request.query_string,
    }


async def jobs_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the job list (with the page's filters), re-rendered every 2 s."""
    _filters(request)
    _queue(request)
    async with sse_response(request) as sse:
        while sse.is_connected():
            try:
                html = aiohttp_jinja2.render_string("_jobs.html", request, await _rows(request))
            except web.HTTPServiceUnavailable:
                html = "<p>The queue is closed: faaso is stopping.</p>"
            await sse.send(html, event="jobs")
            await asyncio.sleep(SAMPLE_EVERY)  # the refresh period of a live page
    return sse


def _detail(job: Job) -> dict[str, Any]:
    out = _row(job)
    body = job.response_body
    text: str | None = None
    if body is not None:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    out.update(
        {
            "not_before": job.not_before,
            "request_size": len(job.body),
            "callback_url": job.callback_url,
            "callback": job.callback,
            "callback_attempts": job.callback_attempts,
            "callback_status": job.callback_status,
            "callback_error": job.callback_error,
            "callback_at": job.callback_at,
            "response_headers": list(job.response_headers),
            "response_size": None if body is None else len(body),
            "response_text": text,
        }
    )
    return out


async def _job_or_404(request: web.Request) -> Job:
    call_id = request.match_info["call_id"]
    job = await _queue(request).get(call_id)
    if job is None:
        raise NotFoundError(f"no asynchronous call {call_id!r} (or it expired)")
    return job


@aiohttp_jinja2.template("job.html")
async def job_page(request: web.Request) -> dict[str, Any]:
    job = await _job_or_404(request)
    return {**base_context(request, "async", f"Call {job.id}"), "job": _detail(job)}


async def job_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one job's detail, re-rendered every 2 s while it changes."""
    await _job_or_404(request)
    token = base_context(request, "async", "")["csrf_token"]
    async with sse_response(request) as sse:
        while sse.is_connected():
            job = await request.app[ASYNC_HOLDER].get().get(request.match_info["call_id"])
            if job is None:
                await sse.send("<p>This job is gone (expired or purged).</p>", event="job")
                break
            html = aiohttp_jinja2.render_string(
                "_job.html", request, {"job": _detail(job), "csrf_token": token}
            )
            await sse.send(html, event="job")
            await asyncio.sleep(SAMPLE_EVERY)  # the refresh period of a live page
    return sse


async def job_response(request: web.Request) -> web.Response:
    """The stored response's body, as a download (any content type)."""
    job = await _job_or_404(request)
    if job.response_body is None:
        raise NotFoundError(f"call {job.id!r} has no stored response")
    kind = dict((k.lower(), v) for k, v in job.response_headers).get("content-type")
    return web.Response(
        body=job.response_body,
        content_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{job.function}-{job.seq}.out"',
            "X-Stored-Content-Type": kind or "",
        },
    )


async def cancel(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    outcome = await _queue(request).cancel(call_id, time.time())  # as DELETE /system/async/ID
    if outcome == "missing":
        raise NotFoundError(f"no asynchronous call {call_id!r} (or it expired)")
    if outcome == "started":
        raise ConflictError(
            f"call {call_id} has already started (or ended); only a queued call can be cancelled"
        )
    return message(request, f"call {call_id} cancelled", ok=True)


async def replay(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    queue = _queue(request)
    replayed = await queue.replay(time.time(), ids=[call_id])  # as POST /system/async/replay
    if not replayed:
        if await queue.get(call_id) is None:
            raise NotFoundError(f"no asynchronous call {call_id!r} (or it expired)")
        raise ConflictError(f"call {call_id} is not a dead letter; only those are replayed")
    request.app[WAKE].wake()
    return message(request, f"call {call_id} queued again", ok=True)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/async", jobs_page)
    router.add_get("/async/events", jobs_events)
    router.add_get("/async/job/{call_id}", job_page)
    router.add_get("/async/job/{call_id}/events", job_events)
    router.add_get("/async/job/{call_id}/response", job_response)
    router.add_post("/async/job/{call_id}/cancel", cancel)
    router.add_post("/async/job/{call_id}/replay", replay)
