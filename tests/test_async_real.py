"""Asynchronous invocations with the real engine: one `faaso serve` process for the module, a
real container of a python-runtime function written to a tmp folder (it answers with the
status its query asks for, so retries can be driven), and a real callback server on 127.0.0.1.

The tests run in file order; the last one stops the server with SIGTERM mid-run (drain) and
starts it again on the same state directory.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from faaso.api.auth import password_path
from faaso.state.queue import JobQueue
from tests.helpers import (
    READY_DEADLINE,
    CallbackSink,
    Served,
    eventually,
    metric_samples,
    start_serve,
    stop_serve,
    wait_ready,
)

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("require_docker")]

HANDLER = """\
import json
import time

SEEN = {}  # call id -> when each attempt came (one container: replicas 1)


def handle(event, context):
    call = event.headers.get("X-Call-Id", "")
    times = SEEN.setdefault(call, [])
    times.append(time.time())
    q = event.query
    if "sleep" in q:
        time.sleep(float(q["sleep"]))  # the function's own work: a long job
    fail = int(q.get("fail", "0"))
    codes = q.get("codes", "500").split(",")
    if len(times) <= fail:
        headers = {"Retry-After": q["retry_after"]} if "retry_after" in q else {}
        status = int(codes[(len(times) - 1) % len(codes)])
        return {"statusCode": status, "body": f"attempt {len(times)}", "headers": headers}
    doc = {
        "method": event.method,
        "path": event.path,
        "query": list(event.query_all.items()),
        "body": event.body.decode(),
        "times": times,
    }
    return {"statusCode": 200, "body": json.dumps(doc), "headers": {"X-From": "flaky"}}
"""

ROUTES = """\
functions:
  flaky:
    source: flaky
    runtime: python
    async_concurrency: 2
    annotations:
      com.openfaas.retry.attempts: "4"
      com.openfaas.retry.min_wait: 200ms
      com.openfaas.retry.max_wait: 400ms
routes:
  /flaky: flaky
async: {callback_min_wait: 0.1, callback_max_wait: 0.5}
"""

DRAIN = "20"  # --drain-timeout: longer than a running job


class Server:
    """The module's `faaso serve` (restarted by the drain test)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.config = tmp / "routes.yml"
        self.state = tmp / "state"
        self.runs = 0
        self.served = self.start()

    def start(self) -> Served:
        self.runs += 1
        served = start_serve(
            self.config,
            self.state,
            self.tmp / f"faaso-{self.runs}.log",
            "--drain-timeout",
            DRAIN,
        )
        wait_ready(served, READY_DEADLINE)
        return served

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.served.port}"

    def auth(self) -> dict[str, str]:
        password = password_path(self.state).read_text().strip()
        token = base64.b64encode(f"admin:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("async-real")
    (tmp / "flaky").mkdir()
    (tmp / "flaky" / "handler.py").write_text(HANDLER)
    (tmp / "routes.yml").write_text(ROUTES)
    server = Server(tmp)
    try:
        yield server
    finally:
        stop_serve(server.served)


async def enqueue(
    server: Server,
    query: str,
    call_id: str,
    callback: str | None = None,
    *,
    method: str = "POST",
    path: str = "",
    body: bytes = b"",
) -> None:
    headers = {"X-Call-Id": call_id}
    if callback is not None:
        headers["X-Callback-Url"] = callback
    url = f"{server.url}/async-function/flaky{path}?{query}"
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, URL(url, encoded=True), data=body, headers=headers) as resp,
    ):
        assert resp.status == 202, await resp.text()
        assert resp.headers["X-Call-Id"] == call_id


async def api(server: Server, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url + path, json=body, headers=server.auth()) as resp,
    ):
        raw = await resp.read()
        return resp.status, json.loads(raw) if raw else None


async def job(server: Server, call_id: str) -> dict[str, Any]:
    status, doc = await api(server, "GET", f"/system/async/{call_id}")
    assert status == 200, doc
    assert isinstance(doc, dict)
    return doc


async def wait_state(server: Server, call_id: str, state: str, timeout: float = 60) -> Any:
    async def check() -> bool:
        return bool((await job(server, call_id))["state"] == state)

    await eventually(check, timeout, f"{call_id} {state}")
    return await job(server, call_id)


async def samples(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as session, session.get(server.url + "/metrics") as resp:
        return metric_samples(await resp.text())


@pytest.mark.timeout(READY_DEADLINE + 120)
async def test_method_path_query_headers_and_body_reach_the_container(server: Server) -> None:
    sink = CallbackSink()
    await sink.up()
    try:
        await enqueue(
            server,
            "x=1&y=%2F&x=2",
            "keep-1",
            sink.url,
            method="PUT",
            path="/sub/a%20b",
            body=b"the body",
        )
        (callback,) = await sink.wait_for(1, 60)
    finally:
        await sink.down()
    doc = json.loads(callback.body)
    assert doc["method"] == "PUT"
    assert doc["path"] == "/sub/a b"
    assert doc["query"] == [["x", "1"], ["y", "/"], ["x", "2"]]
    assert doc["body"] == "the body"
    assert callback.headers["X-Call-Id"] == "keep-1"
    assert callback.headers["X-Function-Status"] == "200"
    assert callback.headers["X-Function-Name"] == "flaky"
    assert callback.headers["X-From"] == "flaky"
    assert float(callback.headers["X-Duration-Seconds"]) > 0


async def test_429_and_5xx_are_retried_with_backoff(server: Server) -> None:
    sink = CallbackSink()
    await sink.up()
    try:
        await enqueue(server, "fail=3&codes=429,500,502", "retry-1", sink.url)
        (callback,) = await sink.wait_for(1, 60)
    finally:
        await sink.down()
    assert callback.headers["X-Function-Status"] == "200"
    times = json.loads(callback.body)["times"]
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # min_wait 200ms doubling, capped at 400ms, equal jitter: at least half of each.
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.2, gaps
    doc = await job(server, "retry-1")
    assert (doc["state"], doc["attempts"], doc["status"]) == ("succeeded", 4, 200)


async def test_retry_after_is_honoured_and_other_codes_are_final(server: Server) -> None:
    await enqueue(server, "fail=1&codes=429&retry_after=2", "ra-1")
    await enqueue(server, "fail=1&codes=400", "final-1")
    final = await wait_state(server, "final-1", "failed")
    assert (final["attempts"], final["status"]) == (1, 400)
    assert final["response"]["body"] == "attempt 1"
    done = await wait_state(server, "ra-1", "succeeded")
    times = json.loads(done["response"]["body"])["times"]
    assert times[1] - times[0] >= 2.0  # not min_wait's 200ms: the function's Retry-After


async def test_a_callback_is_retried_after_its_server_was_down(server: Server) -> None:
    sink = CallbackSink()  # not listening yet
    await enqueue(server, "", "cb-1", sink.url)

    async def failed_twice() -> bool:
        # attempts counts a delivery when it starts ("sending"): two have *failed* once it is
        # back to "pending" after the second
        callback = (await job(server, "cb-1")).get("callback") or {}
        return int(callback.get("attempts") or 0) >= 2 and callback.get("state") == "pending"

    await eventually(failed_twice, 60, "two failed deliveries")
    await sink.up()
    try:
        (callback,) = await sink.wait_for(1, 60)
    finally:
        await sink.down()
    assert callback.headers["X-Call-Id"] == "cb-1"
    doc = await job(server, "cb-1")
    assert doc["callback"]["state"] == "delivered" and doc["callback"]["attempts"] >= 3


async def test_dead_letters_are_replayed(server: Server) -> None:
    sink = CallbackSink()
    await sink.up()
    try:
        # 4 attempts allowed: the first 4 fail (dead); replayed, 5 and 6 fail, 7 succeeds.
        await enqueue(server, "fail=6&codes=500", "dead-1", sink.url)
        dead = await wait_state(server, "dead-1", "dead")
        assert (dead["attempts"], dead["status"]) == (4, 500)
        (first,) = await sink.wait_for(1, 60)  # the dead letter is called back
        assert first.headers["X-Function-Status"] == "500"
        status, listed = await api(server, "GET", "/system/async?state=dead")
        assert status == 200 and [j["callId"] for j in listed] == ["dead-1"]
        status, doc = await api(server, "POST", "/system/async/replay", {"ids": ["dead-1"]})
        assert (status, doc) == (200, {"replayed": ["dead-1"]})
        done = await wait_state(server, "dead-1", "succeeded")
        assert done["attempts"] == 3
        await sink.wait_for(2, 60)
    finally:
        await sink.down()
    assert sink.received[1].headers["X-Function-Status"] == "200"
    assert len(json.loads(sink.received[1].body)["times"]) == 7


async def test_metrics_show_outcomes(server: Server) -> None:
    found = await samples(server)
    fn = (("function_name", "flaky.openfaas-fn"),)

    def outcome(name: str) -> float:
        return found.get(("faaso_async_jobs_total", (*fn, ("outcome", name))), 0.0)

    assert outcome("succeeded") >= 5
    assert outcome("failed") == 1
    assert outcome("dead") == 1
    assert outcome("retried") >= 3 + 1 + 3 + 2
    assert found[("faaso_async_enqueued_total", fn)] >= 6
    assert found[("faaso_async_callbacks_total", (("outcome", "delivered"),))] >= 4
    assert found[("faaso_async_callbacks_total", (("outcome", "retried"),))] >= 2


@pytest.mark.timeout(READY_DEADLINE + 240)
async def test_sigterm_drains_running_jobs_and_keeps_the_rest(server: Server) -> None:
    sink = CallbackSink()
    await sink.up()
    ids = [f"drain-{i}" for i in range(6)]
    try:
        for call_id in ids:
            await enqueue(server, "sleep=4", call_id, sink.url)

        async def two_running() -> bool:
            _, running = await api(server, "GET", "/system/async?state=running")
            return len(running) == 2

        await eventually(two_running, 60, "two jobs running (async_concurrency 2)")

        # The queue's figures, while 2 run and 4 wait (the upkeep refreshes them each second).
        fn = (("function_name", "flaky.openfaas-fn"),)

        async def figures() -> bool:
            found = await samples(server)
            return (
                found.get(("faaso_async_queue_depth", fn)) == 4.0
                and found.get(("faaso_async_running", fn)) == 2.0
                and found.get(("faaso_async_oldest_job_age_seconds", fn), 0.0) > 0.0
            )

        await eventually(figures, 20, "queue depth 4, running 2, oldest age > 0")
        status, function = await api(server, "GET", "/system/function/flaky")
        assert status == 200 and function["asyncQueue"]["queued"] == 4

        _, running = await api(server, "GET", "/system/async?state=running")
        started = sorted(j["callId"] for j in running)
        server.served.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.served.proc.wait, 120) == 0
        queue = await JobQueue.open(server.state / "async" / "queue.db")
        try:
            states = {j.id: (j.state, j.attempts) for j in await queue.find(limit=1000)}
        finally:
            await queue.close()
        assert sorted(k for k in ids if states[k] == ("succeeded", 1)) == started
        assert sorted(k for k in ids if states[k] == ("queued", 0)) == sorted(
            set(ids) - set(started)
        )

        server.served = await asyncio.to_thread(server.start)

        async def all_called_back() -> bool:
            return set(ids) <= set(sink.ids())

        await eventually(all_called_back, 120, "every drained and queued job called back")
    finally:
        await sink.down()
    counts = collections.Counter(i for i in sink.ids() if i.startswith("drain-"))
    assert counts == dict.fromkeys(ids, 1)
