"""The durable queue of asynchronous invocations: SQLite (standard library) in WAL mode, in the
state directory.

Durability: every change is committed with ``synchronous=FULL`` (the WAL is fsynced at each
commit) before the caller's await returns, so a job is on disk before its 202 is sent.

One connection, one thread: every operation is a function run on a dedicated writer thread,
so blocking SQLite calls never stall the event loop. Operations that arrive while a commit is
under way are run together in the next transaction (each in its own SAVEPOINT, so one failing
operation does not undo the others): one fsync serves many concurrent enqueues.

A job's life: ``queued`` -> ``running`` (claimed with a lease its worker renews) ->
``succeeded`` | ``failed`` | ``dead`` (retries exhausted), or back to ``queued`` for a retry,
or ``cancelled`` before it started. A running job whose lease expired (its worker died) is
queued again: at least once, never lost. The callback, when the caller asked for one, has its
own small life: ``pending`` -> ``sending`` (leased) -> ``delivered`` | ``failed`` | ``refused``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from faaso.spec.asyncjob import CANCELLED, DEAD, FAILED, QUEUED, RUNNING, SUCCEEDED

MAX_BATCH = 512  # operations in one transaction
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    function TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    callback_url TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    status INTEGER,
    duration REAL,
    response_headers TEXT,
    response_body BLOB,
    error TEXT,
    callback TEXT,
    callback_attempts INTEGER NOT NULL DEFAULT 0,
    callback_not_before REAL,
    callback_lease REAL,
    callback_status INTEGER,
    callback_error TEXT,
    callback_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (state, function, seq);
CREATE INDEX IF NOT EXISTS jobs_callback ON jobs (callback, callback_not_before)
    WHERE callback IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished) WHERE finished IS NOT NULL;
"""

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class NewJob:
    id: str
    function: str
    method: str
    path: str  # what the function sees, still percent-encoded
    query: str  # raw, without '?'
    headers: Headers
    body: bytes
    callback_url: str | None
    created: float


@dataclass(frozen=True, slots=True)
class Job:
    seq: int
    id: str
    function: str
    method: str
    path: str
    query: str
    headers: Headers
    body: bytes
    callback_url: str | None
    state: str
    attempts: int
    not_before: float
    created: float
    started: float | None
    finished: float | None
    status: int | None
    duration: float | None
    response_headers: Headers
    response_body: bytes | None
    error: str | None
    callback: str | None
    callback_attempts: int
    callback_status: int | None
    callback_error: str | None
    callback_at: float | None


@dataclass(frozen=True, slots=True)
class FunctionQueue:
    """What one function has in the queue."""

    queued: int = 0
    running: int = 0
    dead: int = 0
    oldest_created: float | None = None  # the oldest queued job


def _headers(text: str | None) -> Headers:
    if not text:
        return ()
    return tuple((str(k), str(v)) for k, v in json.loads(text))


def _job(row: sqlite3.Row) -> Job:
    return Job(
        seq=row["seq"],
        id=row["id"],
        function=row["function"],
        method=row["method"],
        path=row["path"],
        query=row["query"],
        headers=_headers(row["headers"]),
        body=bytes(row["body"]),
        callback_url=row["callback_url"],
        state=row["state"],
        attempts=row["attempts"],
        not_before=row["not_before"],
        created=row["created"],
        started=row["started"],
        finished=row["finished"],
        status=row["status"],
        duration=row["duration"],
        response_headers=_headers(row["response_headers"]),
        response_body=None if row["response_body"] is None else bytes(row["response_body"]),
        error=row["error"],
        callback=row["callback"],
        callback_attempts=row["callback_attempts"],
        callback_status=row["callback_status"],
        callback_error=row["callback_error"],
        callback_at=row["callback_at"],
    )


Op = Callable[[sqlite3.Connection], Any]


class _Writer(threading.Thread):
    """The one thread that touches the database."""

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name="faaso-queue", daemon=True)
        self._path = path
        self._loop = loop
        self._ops: queue.SimpleQueue[tuple[Op, asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.commits = 0  # transactions committed (batches), for the measurements

    def submit(self, op: Op) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        self._ops.put((op, future))
        return future

    def stop(self) -> None:
        self._ops.put(None)

    def _settle(self, future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
        if future.done():
            return  # its caller gave up waiting; the change is committed all the same
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def _report(self, future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._settle, future, result, exc)

    def run(self) -> None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(_SCHEMA)
        except Exception as exc:
            self._report(self.ready, None, exc)
            return
        self._report(self.ready, None, None)
        try:
            while True:
                first = self._ops.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        more = self._ops.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    batch.append(more)
                self._run_batch(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _run_batch(
        self, conn: sqlite3.Connection, batch: list[tuple[Op, asyncio.Future[Any]]]
    ) -> None:
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, future in batch:
                conn.execute("SAVEPOINT op")
                try:
                    result = op(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((future, None, exc))
                else:
                    conn.execute("RELEASE op")
                    results.append((future, result, None))
            conn.execute("COMMIT")
            self.commits += 1
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            for _op, future in batch:
                self._report(future, None, exc)
            return
        for future, result, error in results:
            self._report(future, result, error)


class JobQueue:
    """The queue's operations, each awaited until committed."""

    def __init__(self, writer: _Writer, path: Path) -> None:
        self._writer = writer
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> JobQueue:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = _Writer(path, asyncio.get_running_loop())
        writer.start()
        await writer.ready
        return cls(writer, path)

    @property
    def commits(self) -> int:
        return self._writer.commits

    async def close(self) -> None:
        self._writer.stop()
        await asyncio.to_thread(self._writer.join, 30)

    async def _run(self, op: Op) -> Any:
        return await self._writer.submit(op)

    # -- enqueue, look up, cancel ------------------------------------------------------------

    async def enqueue(self, job: NewJob) -> tuple[Job, bool]:
        """Store ``job``; (the stored job, True) or, when its id exists, (that one, False)."""

        def op(conn: sqlite3.Connection) -> tuple[Job, bool]:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO jobs (id, function, method, path, query, headers, body,"
                " callback_url, state, not_before, created) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    job.id,
                    job.function,
                    job.method,
                    job.path,
                    job.query,
                    json.dumps(job.headers),
                    job.body,
                    job.callback_url,
                    QUEUED,
                    job.created,
                    job.created,
                ),
            )
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job.id,)).fetchone()
            return _job(row), cursor.rowcount == 1

        result: tuple[Job, bool] = await self._run(op)
        return result

    async def get(self, call_id: str) -> Job | None:
        def op(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (call_id,)).fetchone()
            return None if row is None else _job(row)

        result: Job | None = await self._run(op)
        return result

    async def find(
        self, *, state: str | None = None, function: str | None = None, limit: int = 100
    ) -> list[Job]:
        def op(conn: sqlite3.Connection) -> list[Job]:
            where: list[str] = []
            args: list[Any] = []
            if state is not None:
                where.append("state = ?")
                args.append(state)
            if function is not None:
                where.append("function = ?")
                args.append(function)
            sql = "SELECT * FROM jobs"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY seq LIMIT ?"
            args.append(limit)
            return [_job(r) for r in conn.execute(sql, args)]

        result: list[Job] = await self._run(op)
        return result

    async def cancel(self, call_id: str, now: float) -> Literal["cancelled", "missing", "started"]:
        def op(conn: sqlite3.Connection) -> Literal["cancelled", "missing", "started"]:
            cursor = conn.execute(
                "UPDATE jobs SET state = ?, finished = ?, error = 'cancelled' "
                "WHERE id = ? AND state = ?",
                (CANCELLED, now, call_id, QUEUED),
            )
            if cursor.rowcount:
                return "cancelled"
            row = conn.execute("SELECT 1 FROM jobs WHERE id = ?", (call_id,)).fetchone()
            return "missing" if row is None else "started"

        result: Literal["cancelled", "missing", "started"] = await self._run(op)
        return result

    # -- workers -----------------------------------------------------------------------------

    async def claim(
        self,
        owner: str,
        free: Mapping[str, int],
        total: int,
        now: float,
        lease: float,
    ) -> list[Job]:
        """Claim up to ``total`` ready jobs, at most ``free[f]`` of function ``f``, shared
        fairly: one slot per function in turn, in the order of ``free``, so a function with
        10,000 queued jobs takes no more than its share and another's first job goes in the
        same round."""

        def op(conn: sqlite3.Connection) -> list[Job]:
            if total <= 0 or not free:
                return []
            # How many are ready, counted no further than each function's free slots (an
            # index range per function: the cost does not grow with the queue's length).
            ready: dict[str, int] = {}
            for function, slots in free.items():
                if slots <= 0:
                    continue
                n = conn.execute(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE state = ? AND function = ?"
                    " AND not_before <= ? ORDER BY seq LIMIT ?)",
                    (QUEUED, function, now, slots),
                ).fetchone()[0]
                if n > 0:
                    ready[function] = n
            # In the order of ``free`` (the caller puts the least served functions first).
            ready = {f: ready[f] for f in free if f in ready}
            share: dict[str, int] = dict.fromkeys(ready, 0)
            left = total
            while left > 0 and ready:
                for function in list(ready):
                    if left == 0:
                        break
                    share[function] += 1
                    left -= 1
                    ready[function] -= 1
                    if ready[function] == 0:
                        del ready[function]
            claimed: list[Job] = []
            for function, n in share.items():
                if n <= 0:
                    continue
                rows = conn.execute(
                    "UPDATE jobs SET state = ?, lease_owner = ?, lease_until = ?,"
                    " attempts = attempts + 1, started = ? WHERE id IN ("
                    "  SELECT id FROM jobs WHERE state = ? AND function = ? AND not_before <= ?"
                    "  ORDER BY seq LIMIT ?) RETURNING *",
                    (RUNNING, owner, now + lease, now, QUEUED, function, now, n),
                ).fetchall()
                claimed.extend(_job(r) for r in rows)
            claimed.sort(key=lambda j: j.seq)
            return claimed

        result: list[Job] = await self._run(op)
        return result

    async def renew(self, owner: str, ids: Sequence[str], until: float) -> int:
        """Push back the lease of the running jobs ``ids`` that ``owner`` still holds."""

        def op(conn: sqlite3.Connection) -> int:
            n = 0
            for call_id in ids:
                n += conn.execute(
                    "UPDATE jobs SET lease_until = ? WHERE id = ? AND lease_owner = ?"
                    " AND state = ?",
                    (until, call_id, owner, RUNNING),
                ).rowcount
            conn.execute(
                "UPDATE jobs SET callback_lease = ? WHERE callback = 'sending'"
                " AND lease_owner = ? AND id IN (SELECT value FROM json_each(?))",
                (until, owner, json.dumps(list(ids))),
            )
            return n

        result: int = await self._run(op)
        return result

    async def finish(
        self,
        owner: str,
        call_id: str,
        *,
        state: str,
        now: float,
        status: int | None,
        duration: float | None,
        headers: Headers,
        body: bytes | None,
        error: str | None,
    ) -> bool:
        """Record the outcome of a run the owner still holds; the callback becomes pending.
        False when the job was no longer this owner's (its lease had expired)."""

        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE jobs SET state = ?, finished = ?, status = ?, duration = ?,"
                " response_headers = ?, response_body = ?, error = ?, lease_until = NULL,"
                " callback = CASE WHEN callback_url IS NULL THEN NULL ELSE 'pending' END,"
                " callback_not_before = ?, callback_attempts = 0, callback_status = NULL,"
                " callback_error = NULL"
                " WHERE id = ? AND lease_owner = ? AND state = ?",
                (
                    state,
                    now,
                    status,
                    duration,
                    json.dumps(headers),
                    body,
                    error,
                    now,
                    call_id,
                    owner,
                    RUNNING,
                ),
            )
            return cursor.rowcount == 1

        result: bool = await self._run(op)
        return result

    async def retry(
        self,
        owner: str,
        call_id: str,
        *,
        at: float,
        status: int | None,
        error: str | None,
    ) -> bool:
        """Queue the job again, not before ``at`` (a retry after a retryable failure)."""

        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE jobs SET state = ?, not_before = ?, status = ?, error = ?,"
                " lease_owner = NULL, lease_until = NULL"
                " WHERE id = ? AND lease_owner = ? AND state = ?",
                (QUEUED, at, status, error, call_id, owner, RUNNING),
            )
            return cursor.rowcount == 1

        result: bool = await self._run(op)
        return result

    async def release(self, owner: str, ids: Sequence[str]) -> int:
        """Put running jobs back, untried (a drain that ran out of time)."""

        def op(conn: sqlite3.Connection) -> int:
            n = 0
            for call_id in ids:
                n += conn.execute(
                    "UPDATE jobs SET state = ?, attempts = MAX(attempts - 1, 0),"
                    " lease_owner = NULL, lease_until = NULL"
                    " WHERE id = ? AND lease_owner = ? AND state = ?",
                    (QUEUED, call_id, owner, RUNNING),
                ).rowcount
            return n

        result: int = await self._run(op)
        return result

    async def claim_callbacks(self, owner: str, n: int, now: float, lease: float) -> list[Job]:
        def op(conn: sqlite3.Connection) -> list[Job]:
            if n <= 0:
                return []
            rows = conn.execute(
                "UPDATE jobs SET callback = 'sending', callback_lease = ?, lease_owner = ?,"
                " callback_attempts = callback_attempts + 1 WHERE id IN ("
                "  SELECT id FROM jobs WHERE callback = 'pending' AND callback_not_before <= ?"
                "  ORDER BY callback_not_before LIMIT ?) RETURNING *",
                (now + lease, owner, now, n),
            ).fetchall()
            return [_job(r) for r in rows]

        result: list[Job] = await self._run(op)
        return result

    async def callback_done(
        self,
        owner: str,
        call_id: str,
        *,
        outcome: Literal["delivered", "failed", "refused", "pending"],
        now: float,
        status: int | None,
        error: str | None,
        retry_at: float | None = None,
    ) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE jobs SET callback = ?, callback_status = ?, callback_error = ?,"
                " callback_at = ?, callback_not_before = ?, callback_lease = NULL"
                " WHERE id = ? AND lease_owner = ? AND callback = 'sending'",
                (outcome, status, error, now, retry_at, call_id, owner),
            )
            return cursor.rowcount == 1

        result: bool = await self._run(op)
        return result

    # -- upkeep ------------------------------------------------------------------------------

    async def recover(self, now: float, *, owner_alive: str | None = None) -> tuple[int, int]:
        """Queue again the running jobs whose lease expired, and make pending again the
        callbacks whose sender's lease expired. With ``owner_alive``, every lease not held by
        that owner counts as expired (a restart: the previous process is gone)."""

        def op(conn: sqlite3.Connection) -> tuple[int, int]:
            if owner_alive is None:
                jobs = conn.execute(
                    "UPDATE jobs SET state = ?, lease_owner = NULL, lease_until = NULL"
                    " WHERE state = ? AND lease_until < ?",
                    (QUEUED, RUNNING, now),
                ).rowcount
                callbacks = conn.execute(
                    "UPDATE jobs SET callback = 'pending', callback_lease = NULL,"
                    " callback_not_before = ? WHERE callback = 'sending' AND callback_lease < ?",
                    (now, now),
                ).rowcount
            else:
                jobs = conn.execute(
                    "UPDATE jobs SET state = ?, lease_owner = NULL, lease_until = NULL"
                    " WHERE state = ? AND (lease_owner IS NULL OR lease_owner != ?)",
                    (QUEUED, RUNNING, owner_alive),
                ).rowcount
                callbacks = conn.execute(
                    "UPDATE jobs SET callback = 'pending', callback_lease = NULL,"
                    " callback_not_before = ? WHERE callback = 'sending'"
                    " AND (lease_owner IS NULL OR lease_owner != ?)",
                    (now, owner_alive),
                ).rowcount
            return jobs, callbacks

        result: tuple[int, int] = await self._run(op)
        return result

    async def expire(self, before: float) -> int:
        """Forget finished jobs (not dead letters) finished before ``before`` whose callback
        is settled."""

        def op(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM jobs WHERE finished IS NOT NULL AND finished < ?"
                " AND state IN (?, ?, ?)"
                " AND (callback IS NULL OR callback IN ('delivered', 'failed', 'refused'))",
                (before, SUCCEEDED, FAILED, CANCELLED),
            ).rowcount

        result: int = await self._run(op)
        return result

    async def stats(self) -> dict[str, FunctionQueue]:
        def op(conn: sqlite3.Connection) -> dict[str, FunctionQueue]:
            found: dict[str, dict[str, Any]] = {}
            for row in conn.execute(
                "SELECT function, state, COUNT(*) AS n, MIN(created) AS oldest FROM jobs"
                " WHERE state IN (?, ?, ?) GROUP BY function, state",
                (QUEUED, RUNNING, DEAD),
            ):
                entry = found.setdefault(row["function"], {})
                entry[row["state"]] = row["n"]
                if row["state"] == QUEUED:
                    entry["oldest"] = row["oldest"]
            return {
                f: FunctionQueue(
                    queued=e.get(QUEUED, 0),
                    running=e.get(RUNNING, 0),
                    dead=e.get(DEAD, 0),
                    oldest_created=e.get("oldest"),
                )
                for f, e in found.items()
            }

        result: dict[str, FunctionQueue] = await self._run(op)
        return result

    async def next_due(self) -> float | None:
        """When the next queued job or pending callback becomes ready (None: nothing waits)."""

        def op(conn: sqlite3.Connection) -> float | None:
            a = conn.execute(
                "SELECT MIN(not_before) FROM jobs WHERE state = ?", (QUEUED,)
            ).fetchone()[0]
            b = conn.execute(
                "SELECT MIN(callback_not_before) FROM jobs WHERE callback = 'pending'"
            ).fetchone()[0]
            values = [v for v in (a, b) if v is not None]
            return min(values) if values else None

        result: float | None = await self._run(op)
        return result

    # -- dead letters ------------------------------------------------------------------------

    def _select(self, ids: Sequence[str] | None, function: str | None) -> tuple[str, list[Any]]:
        where = "state = ?"
        args: list[Any] = [DEAD]
        if ids is not None:
            where += " AND id IN (SELECT value FROM json_each(?))"
            args.append(json.dumps(list(ids)))
        if function is not None:
            where += " AND function = ?"
            args.append(function)
        return where, args

    async def replay(
        self, now: float, *, ids: Sequence[str] | None = None, function: str | None = None
    ) -> list[str]:
        """Queue dead letters again, with a fresh count of attempts. Returns their ids."""
        where, args = self._select(ids, function)

        def op(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "UPDATE jobs SET state = ?, attempts = 0, not_before = ?, finished = NULL,"
                " status = NULL, duration = NULL, response_headers = NULL,"
                " response_body = NULL, error = NULL, callback = NULL, callback_attempts = 0,"
                f" callback_status = NULL, callback_error = NULL WHERE {where} RETURNING id",
                [QUEUED, now, *args],
            ).fetchall()
            return sorted(r["id"] for r in rows)

        result: list[str] = await self._run(op)
        return result

    async def purge(
        self, *, ids: Sequence[str] | None = None, function: str | None = None
    ) -> list[str]:
        """Delete dead letters. Returns their ids."""
        where, args = self._select(ids, function)

        def op(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(f"DELETE FROM jobs WHERE {where} RETURNING id", args).fetchall()
            return sorted(r["id"] for r in rows)

        result: list[str] = await self._run(op)
        return result
