"""The asynchronous workers against real function servers and a real callback server on
127.0.0.1: retries and backoff, Retry-After, dead letters, callback retries, fairness, drain,
leases."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from types import MappingProxyType

from aiohttp import web

from faaso.config.routes_file import AsyncSettings
from faaso.spec.function import FunctionSpec
from faaso.state.queue import Job
from tests.helpers import AsyncRig, CallbackSink, async_rig, eventually, metric_samples

FAST_RETRY = {
    "com.openfaas.retry.min_wait": "200ms",
    "com.openfaas.retry.max_wait": "400ms",
}


def scripted(
    statuses: list[int], headers: dict[str, str] | None = None
) -> tuple[web.Application, list[float]]:
    """A function answering ``statuses`` in turn (then 200); records when each call came."""
    calls: list[float] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        calls.append(time.monotonic())
        status = statuses.pop(0) if statuses else 200
        return web.Response(status=status, text=f"answer {status}", headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app, calls


def spec(name: str, **annotations: str) -> FunctionSpec:
    return FunctionSpec(name=name, image="test", annotations=MappingProxyType(annotations))


async def job_state(rig: AsyncRig, call_id: str, state: str, timeout: float = 20) -> Job:
    async def check() -> bool:
        found = await rig.queue.get(call_id)
        return found is not None and found.state == state

    await eventually(check, timeout, f"job {call_id} {state}")
    found = await rig.queue.get(call_id)
    assert found is not None
    return found


async def test_429_and_5xx_are_retried_with_growing_backoff(tmp_path: Path) -> None:
    app, calls = scripted([429, 500, 502])
    sink = CallbackSink()
    await sink.up()
    try:
        specs = {"f": spec("f", **FAST_RETRY)}
        async with async_rig(tmp_path, {"f": app}, specs=specs) as rig:
            await rig.enqueue(
                "/async-function/f", headers={"X-Callback-Url": sink.url, "X-Call-Id": "r1"}
            )
            (callback,) = await sink.wait_for(1, 20)
            done = await job_state(rig, "r1", "succeeded")
    finally:
        await sink.down()
    assert callback.headers["X-Function-Status"] == "200"
    assert done.attempts == 4 and len(calls) == 4
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    # Equal jitter: at least half of min_wait * 2^(n-1), capped at max_wait.
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.2


async def test_retry_after_is_honoured(tmp_path: Path) -> None:
    app, calls = scripted([429], headers={"Retry-After": "1"})
    specs = {"f": spec("f", **{"com.openfaas.retry.min_wait": "10ms"})}
    async with async_rig(tmp_path, {"f": app}, specs=specs) as rig:
        await rig.enqueue("/async-function/f", headers={"X-Call-Id": "ra"})
        await job_state(rig, "ra", "succeeded")
    assert len(calls) == 2 and calls[1] - calls[0] >= 1.0


async def test_other_errors_fail_at_once_and_are_called_back(tmp_path: Path) -> None:
    app, calls = scripted([400])
    sink = CallbackSink()
    await sink.up()
    try:
        async with async_rig(tmp_path, {"f": app}) as rig:
            await rig.enqueue(
                "/async-function/f", headers={"X-Callback-Url": sink.url, "X-Call-Id": "bad"}
            )
            (callback,) = await sink.wait_for(1, 20)
            failed = await job_state(rig, "bad", "failed")
    finally:
        await sink.down()
    assert (failed.attempts, failed.status, len(calls)) == (1, 400, 1)
    assert callback.headers["X-Function-Status"] == "400"
    assert callback.body == b"answer 400"


async def test_dead_letters_are_listed_replayed_and_purged(tmp_path: Path) -> None:
    app, calls = scripted([500, 500, 500, 500])
    specs = {"f": spec("f", **FAST_RETRY, **{"com.openfaas.retry.attempts": "2"})}
    async with async_rig(tmp_path, {"f": app}, specs=specs) as rig:
        for call_id in ("d1", "d2"):
            await rig.enqueue("/async-function/f", headers={"X-Call-Id": call_id})
        dead = await job_state(rig, "d1", "dead")
        await job_state(rig, "d2", "dead")
        assert (dead.attempts, dead.status) == (2, 500)
        assert len(calls) == 4
        assert [j.id for j in await rig.queue.find(state="dead")] == ["d1", "d2"]
        assert await rig.queue.replay(time.time(), ids=["d1"]) == ["d1"]
        rig.workers.wake()
        replayed = await job_state(rig, "d1", "succeeded")
        assert replayed.attempts == 1
        assert await rig.queue.purge() == ["d2"]
        assert await rig.queue.get("d2") is None


async def test_a_callback_is_retried_until_its_server_is_back(tmp_path: Path) -> None:
    app, _ = scripted([])
    sink = CallbackSink()  # not listening yet
    settings = AsyncSettings(callback_min_wait=0.05, callback_max_wait=0.2)
    async with async_rig(tmp_path, {"f": app}, settings=settings) as rig:
        await rig.enqueue(
            "/async-function/f", headers={"X-Callback-Url": sink.url, "X-Call-Id": "cb"}
        )

        async def tried_twice() -> bool:
            found = await rig.queue.get("cb")
            return found is not None and found.callback_attempts >= 2

        await eventually(tried_twice, 20, "two failed deliveries")
        sink.answers = [503]  # up, but refusing once more
        await sink.up()
        try:
            (callback,) = await sink.wait_for(1, 20)
        finally:
            await sink.down()
        found = await rig.queue.get("cb")
        assert found is not None and found.callback == "delivered"
        assert found.callback_attempts >= 3
    assert callback.headers["X-Call-Id"] == "cb"


async def test_callback_hosts_not_allowed_are_refused_at_delivery(tmp_path: Path) -> None:
    app, _ = scripted([])
    sink = CallbackSink()
    await sink.up()
    try:
        async with async_rig(tmp_path, {"f": app}) as rig:
            await rig.enqueue(
                "/async-function/f", headers={"X-Callback-Url": sink.url, "X-Call-Id": "h"}
            )
            await sink.wait_for(1, 20)
            # The allow-list tightened (a reload) while a callback was waiting.
            rig.workers.settings = AsyncSettings(callback_hosts=("hooks.example.com",))
            await rig.enqueue(
                "/async-function/f", headers={"X-Callback-Url": sink.url, "X-Call-Id": "h2"}
            )

            async def refused() -> bool:
                found = await rig.queue.get("h2")
                return found is not None and found.callback == "refused"

            await eventually(refused, 20, "the callback refused")
    finally:
        await sink.down()
    assert sink.ids() == ["h"]


def gated() -> tuple[web.Application, asyncio.Semaphore, list[str]]:
    """A function whose calls wait for the test to let them through, one by one."""
    gate = asyncio.Semaphore(0)
    started: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        started.append(request.headers.get("X-Call-Id", ""))
        await gate.acquire()
        return web.Response(text="done")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app, gate, started


async def test_a_burst_for_one_function_does_not_hold_anothers_job(tmp_path: Path) -> None:
    bulk, gate, bulk_started = gated()
    other, _ = scripted([])
    sink = CallbackSink()
    await sink.up()
    settings = AsyncSettings(max_running=4, concurrency=10)
    try:
        async with async_rig(tmp_path, {"bulk": bulk, "other": other}, settings=settings) as rig:
            for i in range(100):
                await rig.enqueue("/async-function/bulk", headers={"X-Call-Id": f"b{i}"})

            async def four_running() -> bool:
                return len(bulk_started) == 4

            await eventually(four_running, 20, "bulk holding every slot")
            await rig.enqueue(
                "/async-function/other", headers={"X-Callback-Url": sink.url, "X-Call-Id": "o"}
            )
            gate.release()  # one slot frees: it goes to "other", not to bulk's 5th job
            (callback,) = await sink.wait_for(1, 20)
            assert callback.headers["X-Call-Id"] == "o"
            assert len(bulk_started) <= 5
            for _ in range(200):
                gate.release()
    finally:
        await sink.down()


async def test_drain_lets_running_jobs_finish_and_leaves_the_rest_queued(
    tmp_path: Path,
) -> None:
    app, gate, started = gated()
    settings = AsyncSettings(concurrency=2)
    async with async_rig(tmp_path, {"f": app}, settings=settings, start_workers=False) as rig:
        for i in range(5):
            await rig.enqueue("/async-function/f", headers={"X-Call-Id": f"j{i}"})
        await rig.workers.start()

        async def two_running() -> bool:
            return len(started) == 2

        await eventually(two_running, 20, "two jobs running")
        closing = asyncio.create_task(rig.workers.close(1.0))

        async def draining() -> bool:
            return rig.workers.draining

        await eventually(draining, 20, "the drain to begin")
        gate.release()  # j0 finishes during the drain; j1 is still running at its end
        await closing
        states = {j.id: (j.state, j.attempts) for j in await rig.queue.find()}
        gate.release()
    done = [k for k, (s, _) in states.items() if s == "succeeded"]
    assert len(done) == 1
    # The one cut by the drain is queued again with its attempt given back; the rest untouched.
    assert sorted(k for k, v in states.items() if v == ("queued", 0)) == sorted(
        set(states) - set(done)
    )
    assert len(started) == 2


async def test_leases_are_renewed_while_a_job_runs(tmp_path: Path) -> None:
    app, gate, started = gated()
    async with async_rig(tmp_path, {"f": app}, lease=0.3, renew_every=0.05) as rig:
        await rig.enqueue("/async-function/f", headers={"X-Call-Id": "long"})

        async def running() -> bool:
            return len(started) == 1

        await eventually(running, 20, "the job running")
        await asyncio.sleep(1.0)  # three leases long: they must have been renewed meanwhile
        assert await rig.queue.recover(time.time()) == (0, 0)
        gate.release()
        await job_state(rig, "long", "succeeded")
    assert started == ["long"]


async def test_jobs_of_a_dead_worker_run_again_on_start(tmp_path: Path) -> None:
    app, _ = scripted([])
    async with async_rig(tmp_path, {"f": app}, start_workers=False) as rig:
        await rig.enqueue("/async-function/f", headers={"X-Call-Id": "orphan"})
        claimed = await rig.queue.claim("a-dead-process", {"f": 1}, 1, time.time(), 3600.0)
        assert [j.id for j in claimed] == ["orphan"]
        await rig.workers.start()
        done = await job_state(rig, "orphan", "succeeded")
        await rig.workers.close(5.0)
    assert done.attempts == 2


async def test_metrics_queue_depth_oldest_age_and_outcomes(tmp_path: Path) -> None:
    app, gate, started = gated()
    bad, _ = scripted([500, 400])
    specs = {"bad": spec("bad", **{"com.openfaas.retry.attempts": "1"})}
    settings = AsyncSettings(concurrency=1)
    sink = CallbackSink()
    await sink.up()
    try:
        async with async_rig(
            tmp_path, {"f": app, "bad": bad}, settings=settings, specs=specs
        ) as rig:
            for i in range(3):
                await rig.enqueue("/async-function/f", headers={"X-Call-Id": f"m{i}"})
            await rig.enqueue(
                "/async-function/bad", headers={"X-Call-Id": "dead", "X-Callback-Url": sink.url}
            )
            await rig.enqueue("/async-function/bad", headers={"X-Call-Id": "fail"})
            f = (("function_name", "f.openfaas-fn"),)
            b = (("function_name", "bad.openfaas-fn"),)

            async def figures() -> bool:
                found = metric_samples(await rig.metrics())
                return (
                    found.get(("faaso_async_queue_depth", f)) == 2.0
                    and found.get(("faaso_async_running", f)) == 1.0
                    and found.get(("faaso_async_oldest_job_age_seconds", f), 0.0) > 0.0
                    and found.get(("faaso_async_dead_letters", b)) == 1.0
                    and found.get(("faaso_async_jobs_total", (*b, ("outcome", "failed")))) == 1.0
                )

            await eventually(figures, 20, "depth 2, running 1, an oldest age, one dead letter")
            assert started == ["m0"]
            for _ in range(3):
                gate.release()
            await job_state(rig, "m2", "succeeded")
            await sink.wait_for(1, 20)

            async def settled() -> bool:
                found = metric_samples(await rig.metrics())
                return (
                    found.get(("faaso_async_queue_depth", f), 0.0) == 0.0
                    and found.get(("faaso_async_callbacks_total", (("outcome", "delivered"),)))
                    == 1.0
                )

            await eventually(settled, 20, "the queue empty and the callback counted")
            found = metric_samples(await rig.metrics())
    finally:
        await sink.down()
    assert found[("faaso_async_jobs_total", (*f, ("outcome", "succeeded")))] == 3.0
    assert found[("faaso_async_jobs_total", (*b, ("outcome", "dead")))] == 1.0
    assert found[("faaso_async_attempts_total", f)] == 3.0
    assert found[("faaso_async_enqueued_total", f)] == 3.0
    assert ("faaso_async_oldest_job_age_seconds", f) not in found
