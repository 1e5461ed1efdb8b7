"""The durable queue on a real SQLite file: idempotent ids, batching, fair claims, leases."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from faaso.state.queue import JobQueue, NewJob


def job(call_id: str, function: str = "f", created: float | None = None) -> NewJob:
    return NewJob(
        id=call_id,
        function=function,
        method="PUT",
        path="/a%20b",
        query="x=1&y=%20",
        headers=(("X-One", "1"), ("X-One", "2")),
        body=b"\x00body",
        callback_url=None,
        created=created if created is not None else time.time(),
    )


async def test_a_job_survives_closing_and_reopening(tmp_path: Path) -> None:
    queue = await JobQueue.open(tmp_path / "q.db")
    stored, created = await queue.enqueue(job("a"))
    assert created and stored.state == "queued"
    await queue.close()
    queue = await JobQueue.open(tmp_path / "q.db")
    try:
        found = await queue.get("a")
        assert found is not None
        assert (found.method, found.path, found.query, found.body) == (
            "PUT",
            "/a%20b",
            "x=1&y=%20",
            b"\x00body",
        )
        assert found.headers == (("X-One", "1"), ("X-One", "2"))
    finally:
        await queue.close()


async def test_the_same_id_twice_is_one_job(tmp_path: Path) -> None:
    queue = await JobQueue.open(tmp_path / "q.db")
    try:
        first, created1 = await queue.enqueue(job("same", "f"))
        second, created2 = await queue.enqueue(job("same", "g"))
        assert (created1, created2) == (True, False)
        assert second.function == "f" and second.seq == first.seq
        assert len(await queue.find()) == 1
    finally:
        await queue.close()


async def test_concurrent_enqueues_share_commits(tmp_path: Path) -> None:
    queue = await JobQueue.open(tmp_path / "q.db")
    try:
        before = queue.commits
        results = await asyncio.gather(*(queue.enqueue(job(f"j{i}")) for i in range(200)))
        assert all(created for _, created in results)
        assert len(await queue.find(limit=1000)) == 200
        # One transaction per batch: fewer fsyncs than jobs.
        assert queue.commits - before < 200
    finally:
        await queue.close()


async def test_claims_share_slots_one_function_at_a_time(tmp_path: Path) -> None:
    queue = await JobQueue.open(tmp_path / "q.db")
    try:
        for i in range(20):
            await queue.enqueue(job(f"bulk{i}", "bulk"))
        await queue.enqueue(job("other0", "other"))
        now = time.time()
        claimed = await queue.claim("me", {"other": 5, "bulk": 5}, 2, now, 30.0)
        assert sorted(j.function for j in claimed) == ["bulk", "other"]
        claimed = await queue.claim("me", {"bulk": 1}, 10, now, 30.0)
        assert [j.id for j in claimed] == ["bulk1"]  # FIFO within a function
        assert all(j.attempts == 1 and j.state == "running" for j in claimed)
    finally:
        await queue.close()


async def test_expired_leases_and_dead_owners_give_jobs_back(tmp_path: Path) -> None:
    queue = await JobQueue.open(tmp_path / "q.db")
    try:
        await queue.enqueue(job("a"))
        await queue.enqueue(job("b"))
        now = time.time()
        assert len(await queue.claim("old", {"f": 1}, 1, now, 1.0)) == 1
        assert len(await queue.claim("new", {"f": 1}, 1, now, 1.0)) == 1
        assert await queue.recover(now) == (0, 0)  # leases still valid
        assert await queue.recover(now, owner_alive="new") == (1, 0)  # "old" is gone
        assert [j.id for j in await queue.find(state="queued")] == ["a"]
        assert await queue.recover(now + 2.0) == (1, 0)  # "new"'s lease ran out
        assert await queue.renew("new", ["b"], now + 60) == 0  # no longer its job
    finally:
        await queue.close()


async def test_cancel_only_before_the_start(tmp_path: Path) -> None:
    queue = await JobQueue.open(tmp_path / "q.db")
    try:
        await queue.enqueue(job("a"))
        await queue.enqueue(job("b"))
        await queue.claim("me", {"f": 1}, 1, time.time(), 30.0)  # a starts
        assert await queue.cancel("a", time.time()) == "started"
        assert await queue.cancel("b", time.time()) == "cancelled"
        assert await queue.cancel("zzz", time.time()) == "missing"
        assert await queue.claim("me", {"f": 5}, 5, time.time(), 30.0) == []
    finally:
        await queue.close()
