#!/usr/bin/env python3
"""Measure faaso's scaling on this machine, in one run, with a real engine and real containers.

Side by side:
- wake from paused: a function scaled to 0 (its container paused), request to first byte;
- wake from removed: the same once the paused container was removed (a cold start);
- a bare `docker run` of the same image until it answers its health path;
- kill-to-serving: `docker kill` of a function's only container until it answers again, without
  and with a paused spare (`scale: {spare: true}`);
- a load step: from idle to wrk with 64 connections (bounded in time) until the replicas the
  load needs are serving, and back down once the load stops; replicas and request rate (the
  gateway's own counter, sampled every 0.25 s) over time are drawn to docs/scaling.png.

It runs its own `faaso serve --no-auth` on a copy of conf/functions/sum in a temporary folder
(loopback only), with the autoscaler's windows shortened for the load step (said in the output),
does a bounded number of rounds, prints each figure and the median, and stops its server and
containers.

wrk is Debian's package; it is installed with apt-get when missing.

Usage: .venv/bin/python scripts/measure_scaling.py [--rounds 7] [--load-seconds 40]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import os
import re
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
STEP_TARGET = 300  # requests/s per replica (x 0.9): the step needs more than one replica
STEP_MAX = 4
STEP_SCALE = (
    f"{{type: rps, target: {STEP_TARGET}, target_proportion: 0.9, min: 1, max: {STEP_MAX}, "
    "stable_window: 20, panic_window: 6, scale_down_delay: 10}"
)
CONFIG = f"""
functions:
  paused: {{source: sum, runtime: python, scale: {{min: 1, max: 1, remove_after: 3600}}}}
  removed:
    {{source: sum, runtime: python, scale: {{min: 1, max: 1, remove_after: 0.5, tick: 0.25}}}}
  heal: {{source: sum, runtime: python, scale: {{min: 1, max: 1}}}}
  healspare: {{source: sum, runtime: python, scale: {{min: 1, max: 1, spare: true}}}}
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


def containers(owner: str, function: str, *filters: str) -> list[str]:
    """Ids of the function's containers (running or paused), narrowed by docker ps filters."""
    argv = ["docker", "ps", "-q", "--filter", f"label=faaso.owner={owner}"]
    argv += ["--filter", f"label=faaso.function={function}"]
    for extra in filters:
        argv += ["--filter", extra]
    out = subprocess.run(
        argv,
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


def measure_heal(port: int, owner: str, rounds: int, function: str, spare: bool) -> list[float]:
    out: list[float] = []
    for i in range(rounds):
        if i:
            time.sleep(11)  # space the kills past faaso's stable_after: no crash-loop backoff
        if spare:
            wait_for(
                lambda: len(containers(owner, function, "status=paused")) == 1, 60, "the spare"
            )
        (cid,) = containers(owner, function, "status=running")
        start = time.perf_counter()
        subprocess.run(["docker", "kill", cid], capture_output=True, check=True)
        # killed (SIGKILL) when docker kill returns: the first 200 is the replacement's; the
        # time is taken at that answer, before the (slower) docker ps that checks it
        wait_for(
            lambda: call(port, "GET", f"/function/{function}?a=1&b=1")[0] == 200,
            60,
            "the replacement",
        )
        out.append(time.perf_counter() - start)
        if cid in containers(owner, function):
            raise SystemExit(f"{function}: the killed container {cid} still runs")
    return out


_WRK_RATE = re.compile(r"Requests/sec:\s+([0-9.]+)")
_WRK_TOTAL = re.compile(r"([0-9]+) requests in")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: ([0-9]+)")
_WRK_SOCKET = re.compile(
    r"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)"
)
_INVOCATIONS = re.compile(
    r"^gateway_function_invocation_total"
    r'\{(?=[^}]*function_name="step(?:\.[^"]*)?")[^}]*\} ([0-9.e+]+)$',
    re.MULTILINE,
)


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: installing Debian's package")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "wrk"], check=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk could not be installed")
    return found


async def load_step(port: int, seconds: float, wrk: str) -> dict[str, Any]:
    """Idle, then wrk with 64 connections for ``seconds``, then idle until back at min."""
    base = f"http://127.0.0.1:{port}"
    samples: list[dict[str, float]] = []
    t0 = time.monotonic()

    async def sampler(session: aiohttp.ClientSession, until: asyncio.Event) -> None:
        last_count: float | None = None
        last_t = time.monotonic()
        while not until.is_set():
            async with session.get(base + "/system/function/step") as resp:
                doc = await resp.json()
            async with session.get(base + "/metrics") as resp:
                count = sum(float(v) for v in _INVOCATIONS.findall(await resp.text()))
            now = time.monotonic()
            rate = 0.0 if last_count is None else (count - last_count) / (now - last_t)
            samples.append(
                {
                    "t": now - t0,
                    "replicas": float(doc.get("replicas", 0)),
                    "available": float(doc.get("availableReplicas", 0)),
                    "rps": rate,
                }
            )
            last_count, last_t = count, now
            await asyncio.sleep(0.25)  # the sampling period itself

    async with aiohttp.ClientSession() as session:
        finished = asyncio.Event()
        sample_task = asyncio.create_task(sampler(session, finished))
        await asyncio.sleep(4)  # idle before the step, on the plot
        step_at = time.monotonic() - t0
        proc = await asyncio.create_subprocess_exec(
            *(wrk, "-t2", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--timeout", "10s"),
            base + "/function/step?a=1&b=2",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        stopped_at = time.monotonic() - t0
        report = out.decode(errors="replace")
        if proc.returncode != 0:
            raise SystemExit(f"wrk failed ({proc.returncode}):\n{report}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if samples and samples[-1]["t"] > stopped_at and samples[-1]["available"] <= 1:
                break
            await asyncio.sleep(0.25)  # poll with a deadline
        await asyncio.sleep(2)
        finished.set()
        await sample_task
    rate = _WRK_RATE.search(report)
    total = _WRK_TOTAL.search(report)
    non2xx = _WRK_NON2XX.search(report)
    socket_errors = _WRK_SOCKET.search(report)
    rps = float(rate.group(1)) if rate else 0.0
    needed = max(1, min(STEP_MAX, math.ceil(rps / (STEP_TARGET * 0.9))))
    peak = max(s["replicas"] for s in samples)
    after = [s for s in samples if s["t"] >= step_at]
    first_up = next((s["t"] for s in after if s["replicas"] > 1), None)
    needed_up = next((s["t"] for s in after if s["available"] >= needed), None)
    all_up = next((s["t"] for s in after if s["available"] >= peak), None)
    down = next((s["t"] for s in samples if s["t"] > stopped_at and s["replicas"] <= 1), None)
    # the rate one replica served, before the new ones joined
    one_replica = [s["rps"] for s in after if s["available"] <= 1 and s["t"] < stopped_at]
    return {
        "samples": samples,
        "step_at": step_at,
        "stopped_at": stopped_at,
        "wrk_requests_per_s": rps,
        "one_replica_served_rps": max(one_replica) if one_replica else None,
        "replicas_needed": needed,
        "peak_replicas": peak,
        "first_decision_after": None if first_up is None else first_up - step_at,
        "needed_serving_after": None if needed_up is None else needed_up - step_at,
        "all_serving_after": None if all_up is None else all_up - step_at,
        "back_down_after": None if down is None else down - stopped_at,
        "requests": int(total.group(1)) if total else 0,
        "failed": (int(non2xx.group(1)) if non2xx else 0)
        + (sum(int(g) for g in socket_errors.groups()) if socket_errors else 0),
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
    steps = ((result["step_at"], "wrk, 64 connections"), (result["stopped_at"], "load stops"))
    for x, what in steps:
        ax.axvline(x, color="red", linestyle=":")
        ax.text(x, 0.2, f" {what}", color="red")
    lines = ax.get_legend_handles_labels()
    more = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right")
    ax.set_title(
        f"faaso autoscaler: a load step (target {STEP_TARGET} requests/s per replica x 0.9)"
    )
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
    wrk = ensure_wrk()
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
        heal_rounds = max(3, args.rounds // 2)
        heal = measure_heal(port, owner, heal_rounds, "heal", spare=False)
        heal_spare = measure_heal(port, owner, heal_rounds, "healspare", spare=True)
        print(summary("wake from paused (first byte)", paused))
        print(summary("wake from removed (first byte)", removed))
        print(summary("bare docker run until it answers", bare))
        print(summary("kill-to-serving", heal))
        print(summary("kill-to-serving with a spare", heal_spare))
        ratio = statistics.median(removed) / statistics.median(bare)
        print(f"wake from removed / bare docker run: {ratio:.2f}x")
        print(
            f"load step: {CONNECTIONS} connections for {args.load_seconds:g} s; scale {STEP_SCALE}"
        )
        result = asyncio.run(load_step(port, args.load_seconds, wrk))
        for key in (
            "wrk_requests_per_s",
            "one_replica_served_rps",
            "replicas_needed",
            "peak_replicas",
            "first_decision_after",
            "needed_serving_after",
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
            "kill_to_serving_spare_p50_ms": statistics.median(heal_spare) * 1000,
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
