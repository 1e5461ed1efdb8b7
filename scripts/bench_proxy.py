#!/usr/bin/env python3
"""Side-by-side proxy benchmark on loopback: direct vs nginx vs faaso's proxy, and the runtime.

Started by scripts/bench. Everything it starts (a hello backend, nginx, faaso's gateway, the
python runtime server) listens on 127.0.0.1 and is stopped by PID at the end. wrk runs are
bounded (DURATION seconds each). Prints a table of req/s and p50/p99 with ratios.
"""

from __future__ import annotations

import asyncio
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
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DURATION = int(os.environ.get("BENCH_SECONDS", "5"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))

HELLO = """
import sys
from aiohttp import web
import uvloop
async def hello(request):
    return web.Response(text="hello")
async def sink(request):
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
    return web.Response(text=str(size))
app = web.Application(client_max_size=2**31)
app.router.add_get("/{tail:.*}", hello)
app.router.add_post("/{tail:.*}", sink)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
            backlog=2048, loop=uvloop.new_event_loop())
"""

GATEWAY = """
import asyncio, sys
from faaso.app import GatewayState, gateway_app
from faaso.backend import Endpoint
from faaso.routing import RouteTable
from faaso.server import ServerOptions, run, serve
state = GatewayState(RouteTable({"/hello": "hello"}, {"hello"}))
host, _, port = sys.argv[2].rpartition(":")
state.pools.get("hello").add("one", Endpoint(host or "127.0.0.1", int(port)))
async def main():
    await serve(gateway_app(state), ServerOptions(port=int(sys.argv[1])))
run(main)
"""

NGINX = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # loopback only
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)  # poll with a deadline
    raise SystemExit(f"{url} did not answer within {deadline} s")


def wrk(url: str, connections: int) -> tuple[float, float, float]:
    """Median over RUNS of (req/s, p50 µs, p99 µs)."""
    rates, p50s, p99s = [], [], []
    for _ in range(RUNS):
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{DURATION}s", "--latency", url],
            capture_output=True,
            text=True,
            check=True,
            timeout=DURATION + 30,
        ).stdout
        rates.append(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)))  # type: ignore[union-attr]
        p50s.append(_micros(re.search(r"50%\s+([\d.]+\w+)", out).group(1)))  # type: ignore[union-attr]
        p99s.append(_micros(re.search(r"99%\s+([\d.]+\w+)", out).group(1)))  # type: ignore[union-attr]
    return statistics.median(rates), statistics.median(p50s), statistics.median(p99s)


def _micros(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]


UPLOADS = 10
UPLOAD_MIB = 50


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _uploads(url: str, pid: int) -> tuple[float, float, float]:
    """Ten 50 MiB uploads through the proxy at once: (RSS before, peak RSS, seconds)."""
    import aiohttp

    chunk = b"x" * 2**20

    async def body() -> object:
        for _ in range(UPLOAD_MIB):
            yield chunk

    before = rss_mib(pid)
    peak = before
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            async with session.post(url, data=body()) as resp:
                assert resp.status == 200, resp.status
                assert int(await resp.text()) == UPLOAD_MIB * 2**20

        task = asyncio.gather(*(one() for _ in range(UPLOADS)))
        while not task.done():
            peak = max(peak, rss_mib(pid))
            await asyncio.sleep(0.02)  # sampling interval
        await task
    return before, peak, time.monotonic() - started


def sum_image() -> str | None:
    """The newest built image of conf/functions/sum, if Docker answers and one exists."""
    if shutil.which("docker") is None:
        return None
    try:
        out = subprocess.run(
            ["docker", "images", "faaso/sum", "--format", "{{.Repository}}:{{.Tag}}"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out[0] if out else None


def container_bench(
    image: str, env: dict[str, str], procs: list[subprocess.Popen[bytes]], containers: list[str]
) -> dict[tuple[str, int], tuple[float, float, float]]:
    """(v): /sum in a container, hit at its published port, at its bridge address, and through
    faaso's proxy to each."""
    cid = subprocess.run(
        ["docker", "run", "-d", "--rm", "-p", "127.0.0.1::8080", image],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    containers.append(cid)
    fmt = (
        "{{.NetworkSettings.IPAddress}} "
        '{{(index (index .NetworkSettings.Ports "8080/tcp") 0).HostPort}}'
    )
    ip, published = subprocess.run(
        ["docker", "inspect", "-f", fmt, cid],
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    ).stdout.split()
    via_published, via_bridge = free_port(), free_port()
    for port, upstream in ((via_published, f"127.0.0.1:{published}"), (via_bridge, f"{ip}:8080")):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", GATEWAY, str(port), upstream],
                env=env,
                stderr=subprocess.DEVNULL,
            )
        )
    query = "/?a=2&b=3"
    targets = {
        "published port": f"http://127.0.0.1:{published}{query}",
        "bridge address": f"http://{ip}:8080{query}",
        "faaso->published": f"http://127.0.0.1:{via_published}/hello?a=2&b=3",
        "faaso->bridge": f"http://127.0.0.1:{via_bridge}/hello?a=2&b=3",
    }
    for url in targets.values():
        wait_http(url)
    return {(name, c): wrk(url, c) for name, url in targets.items() for c in (1, 64)}


def main() -> int:
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: run scripts/bench, which installs it")
    tmp = Path(tempfile.mkdtemp(prefix="faaso-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    containers: list[str] = []
    in_container: dict[tuple[str, int], tuple[float, float, float]] = {}
    image = sum_image()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        backend, gateway, nginx_port, runtime = free_port(), free_port(), free_port(), free_port()
        procs.append(subprocess.Popen([sys.executable, "-c", HELLO, str(backend)], env=env))
        gateway_proc = subprocess.Popen(
            [sys.executable, "-c", GATEWAY, str(gateway), str(backend)],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        procs.append(gateway_proc)
        (tmp / "nginx.conf").write_text(NGINX.format(tmp=tmp, backend=backend, port=nginx_port))
        procs.append(
            subprocess.Popen(["nginx", "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"])
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(ROOT / "runtimes/python/server.py")],
                env={
                    **env,
                    "FAASO_HOST": "127.0.0.1",
                    "PORT": str(runtime),
                    "FAASO_FUNCTION_DIR": str(ROOT / "conf/functions/sum"),
                },
                stdout=subprocess.DEVNULL,
            )
        )
        targets = {
            "direct": f"http://127.0.0.1:{backend}/hello",
            "nginx": f"http://127.0.0.1:{nginx_port}/hello",
            "faaso": f"http://127.0.0.1:{gateway}/hello",
        }
        for url in [*targets.values(), f"http://127.0.0.1:{runtime}/_/health"]:
            wait_http(url)
        results = {}
        for name, url in targets.items():
            for c in (1, 64):
                results[(name, c)] = wrk(url, c)
        runtime_64 = wrk(f"http://127.0.0.1:{runtime}/?a=2&b=3", 64)
        uploads = asyncio.run(asyncio.wait_for(_uploads(targets["faaso"], gateway_proc.pid), 120))
        if image is not None:
            in_container = container_bench(image, env, procs, containers)
    finally:
        for cid in containers:
            subprocess.run(["docker", "stop", "-t", "1", cid], capture_output=True, timeout=60)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrk -t1, {DURATION} s per run, median of {RUNS}; hello backend = aiohttp + uvloop")
    print(
        f"{'path':<8} {'c=1 req/s':>10} {'p50 us':>8} {'c=64 req/s':>11} {'p50 us':>8} "
        f"{'p99 us':>9}"
    )
    for name in targets:
        r1, p50_1, _ = results[(name, 1)]
        r64, p50_64, p99_64 = results[(name, 64)]
        print(f"{name:<8} {r1:>10.0f} {p50_1:>8.0f} {r64:>11.0f} {p50_64:>8.0f} {p99_64:>9.0f}")
    ratio = results[("faaso", 64)][0] / results[("nginx", 64)][0]
    added = results[("faaso", 1)][1] - results[("direct", 1)][1]
    added_nginx = results[("nginx", 1)][1] - results[("direct", 1)][1]
    print(f"faaso/nginx throughput at c=64: {ratio:.2f}x (goal >= 0.5)")
    print(
        f"added p50 latency at c=1: faaso {added:.0f} us (goal <= 150), nginx {added_nginx:.0f} us"
    )
    print(
        f"python runtime, trivial sum handler, c=64: {runtime_64[0]:.0f} req/s, "
        f"p50 {runtime_64[1]:.0f} us, p99 {runtime_64[2]:.0f} us (goal >= 5000 req/s)"
    )
    before, peak, seconds = uploads
    print(
        f"faaso RSS, {UPLOADS} x {UPLOAD_MIB} MiB uploads at once: {before:.0f} MiB before, "
        f"peak {peak:.0f} MiB (+{peak - before:.0f}, goal <= 20), {seconds:.1f} s"
    )
    if not in_container:
        print("(v) skipped: no Docker engine or no faaso/sum image (faaso build conf first)")
        return 0
    print(f"/sum in a container ({image}), GET /?a=2&b=3")
    print(
        f"{'path':<17} {'c=1 req/s':>10} {'p50 us':>8} {'c=64 req/s':>11} {'p50 us':>8} "
        f"{'p99 us':>9}"
    )
    for name in dict.fromkeys(n for n, _ in in_container):
        r1, p50_1, _ = in_container[(name, 1)]
        r64, p50_64, p99_64 = in_container[(name, 64)]
        print(f"{name:<17} {r1:>10.0f} {p50_1:>8.0f} {r64:>11.0f} {p50_64:>8.0f} {p99_64:>9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
