"""Asynchronous invocations end to end: the real `faaso serve`, a real container, a real
callback server; faaso killed with SIGKILL mid-run and restarted loses no job."""

from __future__ import annotations

import asyncio
import collections
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import READY_DEADLINE, ROOT, CallbackSink, start_serve, stop_serve, wait_ready

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("require_docker")]

JOBS = 2000


async def enqueue(
    session: aiohttp.ClientSession, port: int, ids: list[str], hook: str
) -> list[int]:
    todo = list(reversed(ids))
    statuses: list[int] = []

    async def client() -> None:
        while todo:
            call_id = todo.pop()
            async with session.post(
                f"http://127.0.0.1:{port}/async-function/sum?a=1",
                data=b"[1, 2]",
                headers={"X-Call-Id": call_id, "X-Callback-Url": hook},
            ) as resp:
                statuses.append(resp.status)

    await asyncio.gather(*(client() for _ in range(16)))
    return statuses


@pytest.mark.timeout(READY_DEADLINE * 2 + 300)
async def test_sigkill_mid_run_loses_no_job(tmp_path: Path) -> None:
    config = tmp_path / "routes.yml"
    config.write_text(
        "functions:\n"
        f"  sum: {{source: {ROOT / 'conf' / 'functions' / 'sum'}, runtime: python}}\n"
        "routes:\n  /sum: sum\n"
        "async: {concurrency: 8, callback_min_wait: 0.2, callback_max_wait: 1}\n"
    )
    state = tmp_path / "state"
    sink = CallbackSink()
    await sink.up()
    served = start_serve(config, state, tmp_path / "faaso-1.log")
    try:
        await asyncio.to_thread(wait_ready, served, READY_DEADLINE)
        ids = [f"crash-{i}" for i in range(JOBS)]
        async with aiohttp.ClientSession() as session:
            statuses = await enqueue(session, served.port, ids, sink.url)
        assert statuses == [202] * JOBS
        await sink.wait_for(JOBS // 4, 120)
        served.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(served.proc.wait, 30)
        assert len(set(sink.ids())) < JOBS, "every job was done before the kill"
        served = start_serve(config, state, tmp_path / "faaso-2.log")
        await asyncio.to_thread(wait_ready, served, READY_DEADLINE)

        async def all_arrived() -> None:
            while not set(ids) <= set(sink.ids()):
                sink.changed.clear()
                await sink.changed.wait()

        async with asyncio.timeout(240):
            await all_arrived()
    finally:
        await sink.down()
        if served.proc.poll() is None:
            await asyncio.to_thread(stop_serve, served)
    counts = collections.Counter(sink.ids())
    assert set(counts) == set(ids)  # none lost
    statuses_seen = {c.headers["X-Function-Status"] for c in sink.received}
    assert statuses_seen == {"200"}
    duplicates = sum(n - 1 for n in counts.values())
    print(f"crash test: {JOBS} jobs, 0 lost, {duplicates} duplicate callbacks")
