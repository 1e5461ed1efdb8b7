#!/usr/bin/env python3
"""Measure faaso's scaling on this machine, in one run, with a real engine and real containers.

Side by side:
- wake from paused: a function scaled to 0 (its container paused), request to first byte;
- wake from removed: the same once the paused container was removed (a cold start);
- a bare `docker run` of the same image until it answers its health path;
- kill-to-serving: `docker kill` of a function's only container until it answers again;
- a load step: from idle to 64 connections (an in-process, bounded load generator) until the
  replicas the load needs are serving, and back down once the load stops; replicas and request
  rate over time are drawn to docs/scaling.png.

It runs its own `faaso serve --no-auth` on a copy of conf/functions/sum in a temporary folder
(loopback only), with the autoscaler's windows shortened for the load step (said in the output),
does a bounded number of rounds, prints each figure and the median, and stops its server and
containers.

Usage: .venv/bin/python scripts/measure_scaling.py [--rounds 7] [--load-seconds 40]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
POLL = 0.005
CONNECTIONS = 64
STEP_SCALE = (
    "{type: rps, target: 1000, target_proportion: 0.9, min: 1, max: 4, "
    "stable_window: 20, panic_window: 6, scale_down_delay: 10}"
)
CONFIG = f"""
functions:
  paused: {{source: sum, runtime: python, scale: {{min: 1, max: 1, remove_after: 3600}}}}
  removed:
    {{source: sum, runtime: python, scale: {{min: 1, max: 1, remove_after: 0.5, tick: 0.25}}}}
  heal: {{source: sum, runtime: python, scale: {{min: 1, max: 1}}}}
  step: {{source: sum, runtime: python, scale: {STEP_SCALE}}}
routes: {{}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(port: int, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    except OSError:
        return 0, {}, b""
    finally:
        conn.close()


def first_byte(port: int, path: str) -> tuple[float, int, str | None]:
    """Seconds from sending a request to its response head, the status, the cold-start header."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.connect()
    try:
        start = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        took = time.perf_counter() - start
        resp.read()
        return took, resp.status, resp.getheader("X-Faaso-Cold-Start")
    finally:
        conn.close()


def wait_for(predicate, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(POLL)  # poll with a deadline
    return time.monotonic() - start


def status(port: int, name: str) -> dict[str, Any]:
    code, _, body = call(port, "GET", f"/system/function/{name}")
    return json.loads(body) if code == 200 else {}


def containers(owner: str, function: str) -> list[str]:
    out = subprocess.run(
        [
            "docker",
            "ps",
            "-q",
            "--filter",
            f"label=faaso.owner={owner}",
            "--filter",
            f"label=faaso.function={function}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def owner_of(state: Path) -> str:
    sys.path.insert(0, str(ROOT))
    from faaso.state.paths import owner_id

    return owner_id(state)


def scale(port: int, name: str, replicas: int) -> None:
    code, _, body = call(port, "POST", f"/system/scale-function/{name}", {"replicas": replicas})
    if code != 202:
        raise SystemExit(f"scale {name} {replicas}: {code} {body!r}")


def measure_wakes(port: int, owner: str, rounds: int) -> tuple[list[float], list[float]]:
    paused: list[float] = []
    for _ in range(rounds):
        scale(port, "paused", 0)
        wait_for(lambda: len(containers(owner, "paused")) == 1, 30, "the paused container")
        took, code, how = first_byte(port, "/function/paused?a=1&b=2")
        if code != 200 or how != "paused":
            raise SystemExit(f"wake from paused answered {code} ({how})")
        paused.append(took)
    removed: list[float] = []
    for _ in range(rounds):
        scale(port, "removed", 0)
        wait_for(lambda: not containers(owner, "removed"), 30, "the paused container's removal")
        took, code, how = first_byte(port, "/function/removed?a=1&b=2")
        if code != 200 or how != "cold":
            raise SystemExit(f"wake from removed answered {code} ({how})")
        removed.append(took)
    return paused, removed


def measure_bare_run(image: str, rounds: int) -> list[float]:
    out: list[float] = []
    for _ in range(rounds):
        host_port = free_port()
        start = time.perf_counter()
        cid = subprocess.run(
            ["docker", "run", "-d", "--rm", "-p", f"127.0.0.1:{host_port}:8080", image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        try:
            wait_for(lambda p=host_port: call(p, "GET", "/_/health")[0] == 200, 60, "docker run")
            out.append(time.perf_counter() - start)
        finally:
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)
    return out


def measure_heal(port: int, owner: str, rounds: int) -> list[float]:
    out: list[float] = []
    for i in range(rounds):
        if i:
            time.sleep(11)  # space the kills past faaso's stable_after: no crash-loop backoff
        (cid,) = containers(owner, "heal")
        start = time.perf_counter()
        subprocess.run(["docker", "kill", cid], capture_output=True, check=True)
        wait_for(
            lambda old=cid: (
                call(port, "GET", "/function/heal?a=1&b=1")[0] == 200
                and old not in containers(owner, "heal")
            ),
            60,
            "the replacement",
        )
        out.append(time.perf_counter() - start)
    return out


async def load_step(port: int, seconds: float) -> dict[str, Any]:
    """Idle, then 64 connections for ``seconds``, then idle until back at min (bounded)."""
    base = f"http://127.0.0.1:{port}"
    done = 0
    failed = 0
    loading = asyncio.Event()
    stop_at = 0.0
    samples: list[dict[str, float]] = []
    t0 = time.monotonic()

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal done, failed
        await loading.wait()
        while time.monotonic() < stop_at:
            async with session.get(base + "/function/step?a=1&b=2") as resp:
                await resp.read()
                if resp.status == 200:
                    done += 1
                else:
                    failed += 1

    async def sampler(session: aiohttp.ClientSession, until: asyncio.Event) -> None:
        last_done, last_t = 0, time.monotonic()
        while not until.is_set():
            async with session.get(base + "/system/function/step") as resp:
                doc = await resp.json()
            now = time.monotonic()
            samples.append(
                {
                    "t": now - t0,
                    "replicas": float(doc.get("replicas", 0)),
                    "available": float(doc.get("availableReplicas", 0)),
                    "rps": (done - last_done) / (now - last_t) if now > last_t else 0.0,
                }
            )
            last_done, last_t = done, now
            await asyncio.sleep(0.5)  # the sampling period itself

    connector = aiohttp.TCPConnector(limit=CONNECTIONS + 4)
    async with aiohttp.ClientSession(connector=connector) as session:
        finished = asyncio.Event()
        sample_task = asyncio.create_task(sampler(session, finished))
        await asyncio.sleep(4)  # idle before the step, on the plot
        step_at = time.monotonic() - t0
        stop_at = time.monotonic() + seconds
        loading.set()
        await asyncio.gather(*(client(session) for _ in range(CONNECTIONS)))
        stopped_at = time.monotonic() - t0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if samples and samples[-1]["t"] > stopped_at and samples[-1]["available"] <= 1:
                break
            await asyncio.sleep(0.25)  # poll with a deadline
        await asyncio.sleep(2)
        finished.set()
        await sample_task
    peak = max(s["replicas"] for s in samples)
    first_up = next((s["t"] for s in samples if s["t"] >= step_at and s["replicas"] > 1), None)
    all_up = next((s["t"] for s in samples if s["t"] >= step_at and s["available"] >= peak), None)
    down = next((s["t"] for s in samples if s["t"] > stopped_at and s["replicas"] <= 1), None)
    return {
        "samples": samples,
        "step_at": step_at,
        "stopped_at": stopped_at,
        "peak_replicas": peak,
        "first_decision_after": None if first_up is None else first_up - step_at,
        "all_serving_after": None if all_up is None else all_up - step_at,
        "back_down_after": None if down is None else down - stopped_at,
        "requests": done,
        "failed": failed,
    }


def plot(result: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    t = [s["t"] for s in samples]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.step(t, [s["replicas"] for s in samples], where="post", label="replicas wanted")
    ax.step(t, [s["available"] for s in samples], where="post", label="replicas serving")
    ax.set_xlabel("seconds")
    ax.set_ylabel("replicas")
    ax.set_ylim(0, max(s["replicas"] for s in samples) + 1)
    ax2 = ax.twinx()
    ax2.plot(t, [s["rps"] for s in samples], color="grey", alpha=0.6, label="requests/s")
    ax2.set_ylabel("requests/s")
    for x, what in ((result["step_at"], "64 connections"), (result["stopped_at"], "load stops")):
        ax.axvline(x, color="red", linestyle=":")
        ax.text(x, 0.2, f" {what}", color="red")
    lines = ax.get_legend_handles_labels()
    more = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right")
    ax.set_title("faaso autoscaler: a load step (target 1000 requests/s per replica x 0.9)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def summary(name: str, values: list[float]) -> str:
    shown = ", ".join(f"{v * 1000:.0f}" for v in values)
    return f"{name:<34} p50 {statistics.median(values) * 1000:7.1f} ms   ({shown})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--load-seconds", type=float, default=40.0)
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "scaling.png")
    args = parser.parse_args()
    # stopped early: still stop our server and its containers (the finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    work = Path(tempfile.mkdtemp(prefix="faaso-scaling-"))
    shutil.copytree(ROOT / "conf" / "functions" / "sum", work / "sum")
    (work / "routes.yml").write_text(CONFIG)
    state = work / "state"
    port = free_port()
    log_path = Path(os.environ.get("FAASO_MEASURE_LOG", work / "serve.log"))
    log = log_path.open("wb")  # closed in the finally below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "faaso",
            "serve",
            str(work / "routes.yml"),
            "--port",
            str(port),
            "--state-dir",
            str(state),
            "--no-auth",
            "--no-pull",
            "--log-format",
            "json",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=ROOT,
    )
    try:
        wait_for(lambda: call(port, "GET", "/healthz")[0] == 200, 900, "faaso to be ready")
        owner = owner_of(state)
        image = status(port, "heal")["image"]
        print(f"image {image}; {args.rounds} rounds each; machine: {os.cpu_count()} cores")
        paused, removed = measure_wakes(port, owner, args.rounds)
        bare = measure_bare_run(image, args.rounds)
        heal = measure_heal(port, owner, max(3, args.rounds // 2))
        print(summary("wake from paused (first byte)", paused))
        print(summary("wake from removed (first byte)", removed))
        print(summary("bare docker run until it answers", bare))
        print(summary("kill-to-serving", heal))
        ratio = statistics.median(removed) / statistics.median(bare)
        print(f"wake from removed / bare docker run: {ratio:.2f}x")
        print(
            f"load step: {CONNECTIONS} connections for {args.load_seconds:g} s; scale {STEP_SCALE}"
        )
        result = asyncio.run(load_step(port, args.load_seconds))
        for key in (
            "peak_replicas",
            "first_decision_after",
            "all_serving_after",
            "back_down_after",
        ):
            value = result[key]
            print(f"  {key:<22} {value if value is None else round(value, 2)}")
        print(f"  requests {result['requests']}, failed {result['failed']}")
        plot(result, args.plot)
        print(f"plot: {args.plot}")
        doc = {
            "wake_paused_p50_ms": statistics.median(paused) * 1000,
            "wake_removed_p50_ms": statistics.median(removed) * 1000,
            "bare_docker_run_p50_ms": statistics.median(bare) * 1000,
            "kill_to_serving_p50_ms": statistics.median(heal) * 1000,
            "removed_vs_bare": ratio,
            **{k: v for k, v in result.items() if k != "samples"},
        }
        print(json.dumps(doc, indent=2))
        return 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
