"""``/system/async``: auth, lookups, listing, cancel, replay and purge of dead letters, through
the real gateway with the real /system sub-application (its basic auth), a real queue, real
workers and real function servers on 127.0.0.1."""

from __future__ import annotations

import collections
from pathlib import Path
from types import MappingProxyType
from typing import Any

from aiohttp import web

from faaso.spec.function import FunctionSpec
from faaso.state.queue import Job
from tests.helpers import AsyncRig, CallbackSink, async_rig, eventually


def scripted(statuses: list[int]) -> tuple[web.Application, list[tuple[str, str]]]:
    """A function answering ``statuses`` in turn (then 200); records (method, call id)."""
    calls: list[tuple[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        calls.append((request.method, request.headers.get("X-Call-Id", "")))
        status = statuses.pop(0) if statuses else 200
        return web.Response(status=status, text=f"answer {status}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app, calls


ONE_ATTEMPT = {"com.openfaas.retry.attempts": "1"}


def spec(name: str, **annotations: str) -> FunctionSpec:
    return FunctionSpec(name=name, image="test", annotations=MappingProxyType(annotations))


async def job_state(rig: AsyncRig, call_id: str, state: str) -> Job:
    async def check() -> bool:
        found = await rig.queue.get(call_id)
        return found is not None and found.state == state

    await eventually(check, 20, f"job {call_id} {state}")
    found = await rig.queue.get(call_id)
    assert found is not None
    return found


async def test_every_route_needs_auth(tmp_path: Path) -> None:
    app, _ = scripted([])
    async with async_rig(tmp_path, {"f": app}, start_workers=False) as rig:
        await rig.enqueue("/async-function/f", headers={"X-Call-Id": "a1"})
        for method, path, body in (
            ("GET", "/system/async", None),
            ("GET", "/system/async/a1", None),
            ("DELETE", "/system/async/a1", None),
            ("POST", "/system/async/replay", {}),
            ("POST", "/system/async/purge", {}),
        ):
            status, doc = await rig.api(method, path, body, auth=False)
            assert status == 401, (method, path)
            assert "authentication" in doc["error"]
        # Nothing was cancelled by the refused DELETE.
        status, doc = await rig.api("GET", "/system/async/a1")
        assert (status, doc["state"]) == (200, "queued")


async def test_unknown_ids_are_404(tmp_path: Path) -> None:
    app, _ = scripted([])
    async with async_rig(tmp_path, {"f": app}, start_workers=False) as rig:
        for method in ("GET", "DELETE"):
            status, doc = await rig.api(method, "/system/async/no-such-call")
            assert status == 404, method
            assert "no-such-call" in doc["error"]


async def test_list_filters_and_bad_parameters(tmp_path: Path) -> None:
    a, _ = scripted([])
    b, _ = scripted([])
    async with async_rig(tmp_path, {"a": a, "b": b}, start_workers=False) as rig:
        for call_id, function in (("a1", "a"), ("b1", "b"), ("a2", "a")):
            await rig.enqueue(f"/async-function/{function}?q=1", headers={"X-Call-Id": call_id})
        status, jobs = await rig.api("GET", "/system/async")
        assert status == 200 and [j["callId"] for j in jobs] == ["a1", "b1", "a2"]
        assert jobs[0]["path"] == "/?q=1" and jobs[0]["method"] == "POST"
        _, jobs = await rig.api("GET", "/system/async?function=a")
        assert [j["callId"] for j in jobs] == ["a1", "a2"]
        _, jobs = await rig.api("GET", "/system/async?function=a&limit=1")
        assert [j["callId"] for j in jobs] == ["a1"]
        _, jobs = await rig.api("GET", "/system/async?state=dead")
        assert jobs == []
        for query in ("state=sleeping", "limit=0", "limit=1001", "limit=x"):
            status, doc = await rig.api("GET", f"/system/async?{query}")
            assert status == 400 and "error" in doc, query


async def test_show_has_state_attempts_callback_and_response(tmp_path: Path) -> None:
    app, _ = scripted([])
    sink = CallbackSink()
    await sink.up()
    try:
        async with async_rig(tmp_path, {"f": app}) as rig:
            await rig.enqueue(
                "/async-function/f", headers={"X-Call-Id": "s1", "X-Callback-Url": sink.url}
            )
            await sink.wait_for(1, 20)

            async def delivered() -> bool:
                _, doc = await rig.api("GET", "/system/async/s1")
                return bool(doc["callback"]["state"] == "delivered")

            await eventually(delivered, 20, "the callback recorded as delivered")
            status, doc = await rig.api("GET", "/system/async/s1")
    finally:
        await sink.down()
    assert status == 200
    assert (doc["state"], doc["attempts"], doc["status"]) == ("succeeded", 1, 200)
    assert doc["response"]["body"] == "answer 200"
    assert doc["callback"]["url"] == sink.url and doc["callback"]["status"] == 200
    assert doc["createdAt"] and doc["startedAt"] and doc["finishedAt"]


async def test_cancel_through_the_api_even_when_the_id_is_a_function_name(
    tmp_path: Path,
) -> None:
    app, calls = scripted([])
    async with async_rig(tmp_path, {"f": app}, start_workers=False) as rig:
        await rig.enqueue("/async-function/f", headers={"X-Call-Id": "f"})
        # OpenFaaS's contract: DELETE /async-function/f is an asynchronous DELETE call to f.
        status, headers, _ = await rig.enqueue("/async-function/f", method="DELETE")
        assert status == 202
        delete_call = headers["X-Call-Id"]
        status, doc = await rig.api("DELETE", "/system/async/f")
        assert (status, doc) == (200, {"callId": "f", "state": "cancelled"})
        status, doc = await rig.api("DELETE", "/system/async/f")
        assert status == 409 and "only a queued call" in doc["error"]
        await rig.workers.start()
        await job_state(rig, delete_call, "succeeded")
        await rig.workers.close(5.0)
        cancelled = await rig.queue.get("f")
        assert cancelled is not None and cancelled.state == "cancelled"
    assert calls == [("DELETE", delete_call)]


async def test_dead_letters_are_replayed_and_purged_through_the_api(tmp_path: Path) -> None:
    app, calls = scripted([500, 500, 500, 500])
    specs = {"f": spec("f", **ONE_ATTEMPT), "g": spec("g", **ONE_ATTEMPT)}
    g, _ = scripted([500])
    async with async_rig(tmp_path, {"f": app, "g": g}, specs=specs) as rig:
        for call_id in ("d1", "d2", "d3"):
            await rig.enqueue("/async-function/f", headers={"X-Call-Id": call_id})
        await rig.enqueue("/async-function/g", headers={"X-Call-Id": "g1"})
        for call_id in ("d1", "d2", "d3", "g1"):
            await job_state(rig, call_id, "dead")
        status, dead = await rig.api("GET", "/system/async?state=dead")
        assert status == 200 and [j["callId"] for j in dead] == ["d1", "d2", "d3", "g1"]
        bodies: list[Any] = [[], {"ids": "d1"}, {"ids": [1]}, {"function": 3}, {"other": 1}]
        for bad in bodies:
            status, doc = await rig.api("POST", "/system/async/replay", bad)
            assert status == 400 and "error" in doc, bad
        status, doc = await rig.api("POST", "/system/async/replay", {"ids": ["d1", "nope"]})
        assert (status, doc) == (200, {"replayed": ["d1"]})
        # 4 failures scripted: d1, d2, d3 and d1's replay fail; a second replay succeeds.
        replayed = await job_state(rig, "d1", "dead")
        assert replayed.attempts == 1
        status, doc = await rig.api("POST", "/system/async/replay", {"ids": ["d1"]})
        assert doc == {"replayed": ["d1"]}
        await job_state(rig, "d1", "succeeded")
        status, doc = await rig.api("POST", "/system/async/purge", {"function": "g"})
        assert (status, doc) == (200, {"purged": ["g1"]})
        status, doc = await rig.api("POST", "/system/async/purge", {})
        assert doc == {"purged": ["d2", "d3"]}
        _, dead = await rig.api("GET", "/system/async?state=dead")
        assert dead == []
        status, _ = await rig.api("GET", "/system/async/d2")
        assert status == 404
        assert await rig.queue.get("d1") is not None  # a succeeded job is not purged
    assert collections.Counter(c for _, c in calls) == {"d1": 3, "d2": 1, "d3": 1}
