#!/usr/bin/env python3
"""Both backends side by side: deploy-to-first-200, scale 1 -> 5, and a rolling update under load.

For each backend (``--backend docker``, ``--backend swarm``) and round, a real ``faaso serve``
with its own state directory serves one Python function, ``ver``, that answers its ``VERSION``
environment variable. Measured:

- **deploy-to-first-200**: from starting ``faaso serve`` to the first 200 of ``/ver``. Each
  backend's first round has a handler no earlier run had (a fresh token in a comment), so it
  includes building the image (and, on Swarm, pushing it to the registry); later rounds reuse
  that image by its content hash, so they are the backend's start-up alone (the median
  printed is theirs);
- **scale 1 -> 5**: from ``POST /system/scale-function/ver {"replicas": 5}`` until
  ``availableReplicas`` is 5;
- **rolling update under 32 connections**: with 2 replicas and 32 connections sending
  ``GET /ver`` in a loop, ``VERSION`` is changed in the routes file and faaso is told to reload
  (SIGHUP). The load runs until every answer has been the new version for 3 s; every non-200 and
  every connection error counts as a failed request (the goal is 0). The update's duration is
  from the SIGHUP to the last answer of the old version.

A Swarm manager is needed for ``swarm``: the script makes a one-node Swarm
(``docker swarm init --advertise-addr 127.0.0.1``) when the engine is in none, and leaves it at the
end only if it made it. Loopback only; the load is bounded (it stops at the update's end or after
``--update-timeout`` seconds); each round removes what its faaso made.

    .venv/bin/python scripts/measure_backends.py [--rounds 3] [--backend docker --backend swarm]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from faaso.state.paths import owner_id  # noqa: E402

REGISTRY = os.environ.get("FAASO_REGISTRY_ADDR", "127.0.0.1:5000")  # scripts/prepare's
CONNECTIONS = 32

HANDLER = '''\
"""ver: answers the VERSION it was deployed with."""

import os
from typing import Any


def handle(event: Any, context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "body": os.environ.get("VERSION", "?")}
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def routes_text(backend: str, version: str) -> str:
    registry = f"registry: {REGISTRY}\n" if backend == "swarm" else ""
    return (
        f"backend: {backend}\n{registry}"
        "functions:\n"
        "  ver:\n"
        "    source: ver\n"
        "    runtime: python\n"
        f"    env: {{VERSION: '{version}'}}\n"
        "    scale: {min: 1, max: 1}  # the autoscaler off: the counts are the script's\n"
        "routes:\n  /ver: ver\n"
    )


async def until(check: Callable[[], bool | Awaitable[bool]], timeout: float, what: str) -> float:
    """Seconds until ``check()`` (a plain or an async check) is true; raises after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        done = check()
        if done if isinstance(done, bool) else await done:
            return time.monotonic() - start
        await asyncio.sleep(0.05)  # poll with a deadline
    raise TimeoutError(f"{what}: not within {timeout} s")


@dataclass
class Load:
    """32 connections sending GET /ver until stopped; what each answer was."""

    url: str
    outcomes: Counter[str] = field(default_factory=Counter)
    last_old: float = 0.0
    first_new_streak: float | None = None  # when the current run of new-only answers began
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def worker(self, old: str, new: str) -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            while not self.stop.is_set():
                try:
                    async with session.get(self.url) as resp:
                        body = await resp.text()
                except (aiohttp.ClientError, OSError) as exc:
                    self.outcomes[f"connection error {type(exc).__name__}"] += 1
                    continue
                now = time.monotonic()
                if resp.status != 200:
                    self.outcomes[f"{resp.status} {body[:60]}"] += 1
                elif body == old:
                    self.outcomes["ok old"] += 1
                    self.last_old = now
                    self.first_new_streak = None
                elif body == new:
                    self.outcomes["ok new"] += 1
                    if self.first_new_streak is None:
                        self.first_new_streak = now
                else:
                    self.outcomes[f"200 unexpected {body[:40]}"] += 1

    def failed(self) -> int:
        return sum(n for k, n in self.outcomes.items() if not k.startswith("ok"))


async def rolling_update(
    port: int, proc: subprocess.Popen[bytes], routes: Path, backend: str, timeout: float
) -> dict[str, float]:
    load = Load(f"http://127.0.0.1:{port}/ver")
    workers = [asyncio.create_task(load.worker("1", "2")) for _ in range(CONNECTIONS)]
    try:
        await until(lambda: load.outcomes["ok old"] > 200, 60, "load to flow")
        routes.write_text(routes_text(backend, "2"))
        told = time.monotonic()
        proc.send_signal(signal.SIGHUP)

        async def settled() -> bool:
            streak = load.first_new_streak
            return streak is not None and time.monotonic() - streak >= 3.0

        await until(settled, timeout, "every answer the new version for 3 s")
    finally:
        load.stop.set()
        await asyncio.gather(*workers)
        print(f"  [update] answers: {dict(load.outcomes)}", file=sys.stderr, flush=True)
    return {
        "update_failed_requests": float(load.failed()),
        "update_requests": float(sum(load.outcomes.values())),
        "update_s": max(load.last_old - told, 0.0),
    }


async def available(session: aiohttp.ClientSession, port: int) -> int:
    try:
        async with session.get(f"http://127.0.0.1:{port}/system/function/ver") as resp:
            if resp.status != 200:
                return 0
            doc: dict[str, Any] = await resp.json()
    except (aiohttp.ClientError, OSError):
        return 0
    return int(doc.get("availableReplicas", 0))


def one_round(backend: str, work: Path, update_timeout: float, token: str) -> dict[str, float]:
    conf = work / "conf"
    (conf / "ver").mkdir(parents=True)
    (conf / "ver" / "handler.py").write_text(f"{HANDLER}\n# {token}\n")
    routes = conf / "routes.yml"
    routes.write_text(routes_text(backend, "1"))
    state = work / "state"
    port = free_port()
    argv = [sys.executable, "-m", "faaso", "serve", str(routes), "--port", str(port)]
    argv += ["--state-dir", str(state), "--no-auth", "--backend", backend, "--no-watch"]
    log_path = work / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            return asyncio.run(measure(port, proc, log_path, routes, backend, update_timeout))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if backend == "swarm":
                remove_services(owner_id(state))


async def measure(
    port: int,
    proc: subprocess.Popen[bytes],
    log_path: Path,
    routes: Path,
    backend: str,
    update_timeout: float,
) -> dict[str, float]:
    started = time.monotonic()  # a few ms after the process started: nothing is up yet
    async with aiohttp.ClientSession() as session:

        async def first_200() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"faaso exited:\n{log_path.read_text()[-3000:]}")
            try:
                async with session.get(f"http://127.0.0.1:{port}/ver") as resp:
                    return resp.status == 200
            except (aiohttp.ClientError, OSError):
                return False

        await until(first_200, 900, "first 200")
        result: dict[str, float] = {"deploy_to_first_200_s": time.monotonic() - started}

        async def at(n: int, *, exact: bool) -> bool:
            got = await available(session, port)
            return got == n if exact else got >= n

        async def scale(n: int) -> None:
            url = f"http://127.0.0.1:{port}/system/scale-function/ver"
            async with session.post(url, json={"replicas": n}) as resp:
                if resp.status >= 300:
                    raise RuntimeError(f"scale to {n}: {resp.status} {await resp.text()}")

        await scale(5)
        result["scale_1_to_5_s"] = await until(lambda: at(5, exact=False), 300, "5 available")
        await scale(2)
        # Two replicas, and the three others gone, before the update starts.
        await until(lambda: at(2, exact=True), 300, "back to 2")
    result.update(await rolling_update(port, proc, routes, backend, update_timeout))
    return result


def remove_services(owner: str) -> None:
    ids = subprocess.run(
        ["docker", "service", "ls", "-q", "--filter", f"label=faaso.owner={owner}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "service", "rm", *ids], capture_output=True)


def swarm_state() -> str:
    return subprocess.run(
        ["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"],
        capture_output=True,
        text=True,
    ).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", action="append", choices=("docker", "swarm"))
    parser.add_argument("--update-timeout", type=float, default=240.0)
    args = parser.parse_args()
    backends = args.backend or ["docker", "swarm"]
    made_swarm = False
    if "swarm" in backends and swarm_state() != "active":
        subprocess.run(
            ["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
            check=True,
            capture_output=True,
        )
        made_swarm = True
    results: dict[str, list[dict[str, float]]] = {}
    try:
        for backend in backends:
            token = f"{backend} {secrets.token_hex(8)}"  # a new image for this backend's rounds
            for i in range(args.rounds):
                with tempfile.TemporaryDirectory(prefix=f"faaso-measure-{backend}-") as tmp:
                    r = one_round(backend, Path(tmp), args.update_timeout, token)
                print(f"[{backend} round {i + 1}] " + json.dumps(r), file=sys.stderr, flush=True)
                results.setdefault(backend, []).append(r)
    finally:
        if made_swarm:
            subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True)
    print(
        f"{'backend':8} {'first 200, new image (s)':>25} {'first 200 p50 (s)':>18} "
        f"{'scale 1->5 p50 (s)':>19} {'update (s)':>11} {'update failed/requests':>24}"
    )
    for backend, rounds in results.items():
        first = statistics.median(r["deploy_to_first_200_s"] for r in rounds[1:] or rounds)
        scale = statistics.median(r["scale_1_to_5_s"] for r in rounds)
        update = statistics.median(r["update_s"] for r in rounds)
        failed = int(sum(r["update_failed_requests"] for r in rounds))
        total = int(sum(r["update_requests"] for r in rounds))
        print(
            f"{backend:8} {rounds[0]['deploy_to_first_200_s']:25.2f} {first:18.2f} "
            f"{scale:19.2f} {update:11.2f} {f'{failed}/{total}':>24}"
        )
    if os.environ.get("FAASO_MEASURE_JSON"):
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
