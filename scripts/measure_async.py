#!/usr/bin/env python3
"""Measure faaso's asynchronous invocations on this machine, with a real engine, a real
container and a real callback server (loopback only).

- enqueue rate: POST /async-function/sum from 16 connections at once, each job committed to
  disk (SQLite WAL, synchronous=FULL) before its 202; then how long the queue takes to drain;
- enqueue-to-callback latency on an idle function, one job at a time;
- the crash test: N jobs enqueued, faaso killed with SIGKILL mid-run, restarted on the same
  state directory; every job's callback must arrive. Lost jobs and duplicates are counted.

It runs its own `faaso serve` on conf/functions/sum in a temporary folder, bounded in count and
time, and stops its server (which stops its containers) at the end.

Usage: .venv/bin/python scripts/measure_async.py [--enqueue 4000] [--latency 50] [--crash 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    """The callback server: counts deliveries per call id."""

    def __init__(self) -> None:
        self.port = free_port()
        self.seen: collections.Counter[str] = collections.Counter()
        self.arrived: dict[str, float] = {}
        self.statuses: collections.Counter[str] = collections.Counter()
        self.changed = asyncio.Event()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        call_id = request.headers.get("X-Call-Id", "")
        self.seen[call_id] += 1
        self.arrived.setdefault(call_id, time.monotonic())
        self.statuses[request.headers.get("X-Function-Status", "?")] += 1
        self.changed.set()
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def wait(self, ids: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not ids <= self.seen.keys():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            try:
                async with asyncio.timeout(min(left, 1.0)):
                    await self.changed.wait()
            except TimeoutError:
                pass
        return True


class Server:
    def __init__(self, config: Path, state: Path, log: Path) -> None:
        self.config, self.state, self.log = config, state, log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "faaso", "serve", str(self.config), "--port", str(self.port),
             "--state-dir", str(self.state), "--no-auth", "--log-format", "json"],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        out.close()

    async def ready(self, session: aiohttp.ClientSession, timeout: float = 300) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise SystemExit(f"faaso exited; see {self.log}")
            try:
                async with session.get(f"http://127.0.0.1:{self.port}/healthz") as r:
                    if r.status == 200:
                        return time.monotonic() - started
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)  # poll with a deadline
        raise SystemExit(f"faaso not ready after {timeout} s; see {self.log}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def enqueue_many(
    session: aiohttp.ClientSession, port: int, ids: list[str], hook: str, function: str = "sum"
) -> tuple[float, int]:
    """Enqueue ``ids`` from CONNECTIONS concurrent clients; (seconds, number refused)."""
    todo = list(reversed(ids))
    refused = 0

    async def client() -> None:
        nonlocal refused
        while todo:
            call_id = todo.pop()
            async with session.post(
                f"http://127.0.0.1:{port}/async-function/{function}",
                data=b"[1, 2]",
                headers={"X-Call-Id": call_id, "X-Callback-Url": hook},
            ) as r:
                await r.read()
                if r.status != 202:
                    refused += 1

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(CONNECTIONS)))
    return time.monotonic() - started, refused


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="faaso-measure-async-"))
    config = tmp / "routes.yml"
    config.write_text(
        "functions:\n"
        f"  sum: {{source: {ROOT / 'conf' / 'functions' / 'sum'}, runtime: python}}\n"
        # parked: no instance, so its jobs stay queued (the enqueue path measured alone)
        f"  parked: {{source: {ROOT / 'conf' / 'functions' / 'sum'}, runtime: python,"
        " replicas: 0}\n"
        "routes:\n  /sum: sum\n"
        "async: {concurrency: 16, max_running: 64, callback_min_wait: 0.2, callback_max_wait: 2}\n"
    )
    server = Server(config, tmp / "state", tmp / "faaso.log")
    sink = Sink()
    await sink.start()
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        server.start()
        try:
            await server.ready(session)
            print(f"faaso log: {server.log}")
            # 1. enqueue rate, with durability, 16 connections: alone, then while jobs run
            parked = [f"parked-{i}" for i in range(args.enqueue)]
            seconds, refused = await enqueue_many(session, server.port, parked, sink.url, "parked")
            print(
                f"enqueue alone: {len(parked)} jobs from {CONNECTIONS} connections in"
                f" {seconds:.2f} s = {len(parked) / seconds:.0f} durable enqueues/s"
                f" (refused {refused})"
            )
            ids = [f"rate-{i}" for i in range(args.enqueue)]
            seconds, refused = await enqueue_many(session, server.port, ids, sink.url)
            print(
                f"enqueue while they run: {len(ids)} jobs from {CONNECTIONS} connections in"
                f" {seconds:.2f} s = {len(ids) / seconds:.0f} durable enqueues/s"
                f" (refused {refused})"
            )
            started = time.monotonic()
            ok = await sink.wait(set(ids), 600)
            print(
                f"drain: every callback in {time.monotonic() - started:.1f} s after the last 202"
                f" ({'all' if ok else 'NOT all'} arrived)"
            )
            # 2. enqueue-to-callback latency, idle function
            latencies: list[float] = []
            for i in range(max(1, args.latency)):
                call_id = f"lat-{i}"
                sent = time.monotonic()
                async with session.post(
                    f"http://127.0.0.1:{server.port}/async-function/sum",
                    data=b"[1, 2]",
                    headers={"X-Call-Id": call_id, "X-Callback-Url": sink.url},
                ) as r:
                    assert r.status == 202, r.status
                await sink.wait({call_id}, 30)
                latencies.append(sink.arrived[call_id] - sent)
            ms = [x * 1000 for x in latencies]
            print(
                f"latency enqueue->callback ({len(ms)} jobs, idle):"
                f" median {statistics.median(ms):.1f} ms, p95 {pct(ms, 0.95):.1f} ms,"
                f" max {max(ms):.1f} ms"
            )
            # 3. crash test
            ids = [f"crash-{i}" for i in range(args.crash)]
            seconds, refused = await enqueue_many(session, server.port, ids, sink.url)
            accepted = set(ids)
            kill_at = args.crash // 4
            while sum(1 for i in ids if i in sink.seen) < kill_at:
                sink.changed.clear()
                async with asyncio.timeout(120):
                    await sink.changed.wait()
            before = sum(1 for i in ids if i in sink.seen)
            server.kill()
            killed = time.monotonic()
            print(
                f"crash: {len(ids)} enqueued (refused {refused}); SIGKILL after {before} callbacks"
            )
            server.start()
            ready = await server.ready(session)
            ok = await sink.wait(accepted, 600)
            took = time.monotonic() - killed
            seen = [i for i in ids if i in sink.seen]
            dupes = sum(sink.seen[i] - 1 for i in ids if sink.seen[i] > 1)
            print(
                f"crash: restarted and ready in {ready:.1f} s; {len(seen)}/{len(ids)} callbacks"
                f" arrived within {took:.1f} s of the kill; lost {len(ids) - len(seen)};"
                f" duplicates {dupes} (jobs run or called back again after the kill)"
            )
            print(f"callback statuses seen: {dict(sink.statuses)}")
            if not ok:
                raise SystemExit("some callbacks never arrived")
        finally:
            server.stop()
            if sink.runner is not None:
                await sink.runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enqueue", type=int, default=4000)
    parser.add_argument("--latency", type=int, default=50)
    parser.add_argument("--crash", type=int, default=2000)
    asyncio.run(main(parser.parse_args()))
