"""The UI's plumbing in-process: the redirects of / and /ui, auth, CSRF, the charts' quantiles.

The pages themselves are tested in a real browser (test_ui_browser.py).
"""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from faaso.api.async_jobs import AsyncJobsHolder, Waker
from faaso.api.handlers import ApiHolder
from faaso.api.ui import mount_ui
from faaso.api.ui.csrf import COOKIE, FIELD, HEADER, Csrf
from faaso.api.ui.history import quantile
from faaso.gateway.app import GatewayState, gateway_app
from faaso.gateway.metrics import BUCKETS
from faaso.spec.endpoint import Endpoint
from faaso.spec.routing import RouteTable
from faaso.state.queue import JobQueue, NewJob
from tests.helpers import FastTestServer

AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:pw").decode()}


async def _gateway(state: GatewayState) -> TestClient[Any, Any]:
    app = gateway_app(state, lambda app: mount_ui(app, ApiHolder(), "pw"))
    client: TestClient[Any, Any] = TestClient(FastTestServer(app))
    await client.start_server()
    return client


async def test_ui_and_root_redirect_to_the_ui_when_no_route_claims_root() -> None:
    client = await _gateway(GatewayState(RouteTable({}, set())))
    try:
        for path in ("/", "/ui"):
            resp = await client.get(path, allow_redirects=False)
            assert (resp.status, resp.headers["Location"]) == (302, "/ui/")
        resp = await client.get("/ui/", allow_redirects=False)
        assert resp.status == 401 and resp.headers["WWW-Authenticate"] == 'Basic realm="faaso"'
        resp = await client.get("/ui/static/htmx.min.js")
        assert resp.status == 401
        resp = await client.get("/ui/static/htmx.min.js", headers=AUTH)
        assert resp.status == 200 and "htmx" in await resp.text()
        resp = await client.get("/ui/", headers=AUTH)
        assert resp.status == 503  # the pages need the running server's internals
    finally:
        await client.close()


async def test_a_route_that_claims_root_keeps_it() -> None:
    async def web_root(request: web.Request) -> web.Response:
        return web.Response(text=f"web {request.method} {request.path}")

    backend_app = web.Application()
    backend_app.router.add_route("*", "/{tail:.*}", web_root)
    async with TestServer(backend_app, host="127.0.0.1") as backend:
        assert backend.port is not None
        state = GatewayState(RouteTable({"/": "web"}, {"web"}))
        state.pools.get("web").add("web-1", Endpoint("127.0.0.1", backend.port))
        client = await _gateway(state)
        try:
            for method in ("GET", "POST"):
                resp = await client.request(method, "/", allow_redirects=False)
                assert (resp.status, await resp.text()) == (200, f"web {method} /")
            resp = await client.get("/ui", allow_redirects=False)  # /ui is still the UI's
            assert resp.status == 302
        finally:
            await client.close()


@pytest.fixture
async def csrf_client() -> Any:
    csrf = Csrf()

    def refused(request: web.Request, text: str) -> web.Response:
        return web.Response(status=403, text=text)

    async def change(request: web.Request) -> web.Response:
        return web.Response(text="changed")

    middlewares: list[Any] = [csrf.middleware(refused)]
    app = web.Application(middlewares=middlewares)
    app.router.add_route("*", "/ui/x", change)
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield client, csrf
    await client.close()


async def test_csrf_every_change_needs_the_sessions_token(csrf_client: Any) -> None:
    client, csrf = csrf_client
    resp = await client.get("/ui/x")
    assert resp.status == 200
    session = resp.cookies[COOKIE].value
    assert resp.cookies[COOKIE]["httponly"] and resp.cookies[COOKIE]["samesite"] == "Strict"
    token = csrf.token(session)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        resp = await client.request(method, "/ui/x")
        assert resp.status == 403, method
        assert "no valid CSRF token" in await resp.text()
    assert (await client.post("/ui/x", headers={HEADER: token})).status == 200
    assert (await client.post("/ui/x", data={FIELD: token, "a": "1"})).status == 200
    assert (await client.post("/ui/x", data={FIELD: "forged"})).status == 403
    assert (await client.post("/ui/x", headers={HEADER: csrf.token("another")})).status == 403
    # A token is good only with its own session's cookie.
    client.session.cookie_jar.clear()
    assert (await client.post("/ui/x", headers={HEADER: token})).status == 403


def test_quantile_interpolates_inside_a_bucket() -> None:
    counts = [0] * (len(BUCKETS) + 1)
    assert quantile(0.5, counts) is None
    counts[BUCKETS.index(0.01)] = 10  # ten calls between 5 and 10 ms
    assert quantile(0.5, counts) == pytest.approx(0.0075)
    assert quantile(1.0, counts) == pytest.approx(0.01)
    counts[-1] = 90  # most slower than the highest bound
    assert quantile(0.95, counts) == BUCKETS[-1]


def _new_job(call_id: str) -> NewJob:
    return NewJob(call_id, "f", "POST", "/", "", (), b"x", None, time.time())


async def test_the_job_pages_cancel_and_replay_through_the_queue_with_a_csrf_token(
    tmp_path: Path,
) -> None:
    queue = await JobQueue.open(tmp_path / "queue.db")
    jobs = AsyncJobsHolder()
    jobs.queue = queue
    woken: list[bool] = []
    waker = Waker()
    waker.wake = lambda: woken.append(True)
    app = gateway_app(
        GatewayState(RouteTable({}, set())),
        lambda app: mount_ui(app, ApiHolder(), "pw", jobs, waker),
    )
    client: TestClient[Any, Any] = TestClient(FastTestServer(app))
    await client.start_server()
    try:
        await queue.enqueue(_new_job("one"))
        resp = await client.get("/ui/async/job/one", headers=AUTH)
        page = await resp.text()
        assert resp.status == 200 and 'data-state="queued"' in page
        found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page)
        assert found is not None
        token = {FIELD: found.group(1)}
        # Without the token: refused, and the job is untouched.
        resp = await client.post("/ui/async/job/one/cancel", headers=AUTH)
        assert resp.status == 403
        untouched = await queue.get("one")
        assert untouched is not None and untouched.state == "queued"
        # A queued job is not a dead letter: no replay.
        resp = await client.post("/ui/async/job/one/replay", headers=AUTH, data=token)
        assert resp.status == 409 and "not a dead letter" in await resp.text()
        resp = await client.post("/ui/async/job/one/cancel", headers=AUTH, data=token)
        assert resp.status == 200 and "cancelled" in await resp.text()
        job = await queue.get("one")
        assert job is not None and job.state == "cancelled"
        # Once cancelled (not queued), a second cancel is a 409; an unknown id a 404.
        resp = await client.post("/ui/async/job/one/cancel", headers=AUTH, data=token)
        assert resp.status == 409
        resp = await client.post("/ui/async/job/nope/replay", headers=AUTH, data=token)
        assert resp.status == 404
        assert (await client.get("/ui/async/job/nope", headers=AUTH)).status == 404
        # A dead letter is replayed: queued again, and the workers are woken.
        await queue.enqueue(_new_job("two"))
        claimed = await queue.claim("w", {"f": 1}, 1, time.time(), 30.0)
        assert [j.id for j in claimed] == ["two"]
        done = await queue.finish(
            "w",
            "two",
            state="dead",
            now=time.time(),
            status=500,
            duration=0.1,
            headers=(),
            body=b"broken",
            error=None,
        )
        assert done
        resp = await client.get("/ui/async/job/two", headers=AUTH)
        assert "broken" in await resp.text() and "Replay" in await resp.text()
        resp = await client.post("/ui/async/job/two/replay", headers=AUTH, data=token)
        assert resp.status == 200 and "queued again" in await resp.text()
        job = await queue.get("two")
        assert job is not None and job.state == "queued" and job.attempts == 0
        assert woken == [True]
        assert (await client.get("/ui/async?state=bogus", headers=AUTH)).status == 400
    finally:
        await client.close()
        await queue.close()


async def test_the_job_pages_answer_503_without_a_queue() -> None:
    client = await _gateway(GatewayState(RouteTable({}, set())))
    try:
        resp = await client.get("/ui/async/job/x", headers=AUTH)
        assert resp.status == 503
    finally:
        await client.close()
