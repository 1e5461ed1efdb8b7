#!/usr/bin/env python3
"""Side-by-side proxy benchmark on loopback: direct vs nginx vs Caddy vs faaso's proxy, and the
runtime.

Started by scripts/bench. Everything it starts (a hello backend, nginx, Caddy, faaso's gateway
with and without its fast path, the python runtime server) listens on 127.0.0.1 and is stopped
by PID at the end; so are the two containers of the /sum comparison (published port, host
network), which are reached only through 127.0.0.1 or a Unix socket in a bind-mounted directory.
wrk runs are bounded (DURATION seconds each). Prints tables of req/s, p50/p99 and the proxy's
CPU time per request (from /proc, steadier than req/s on a shared box), with ratios.
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
async def download(request):
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = int(request.match_info["mib"]) * 2**20
    await response.prepare(request)
    chunk = b"x" * 2**20
    for _ in range(int(request.match_info["mib"])):
        await response.write(chunk)
    await response.write_eof()
    return response
async def sink(request):
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
    return web.Response(text=str(size))
app = web.Application(client_max_size=2**31)
app.router.add_get("/download/{mib}", download)
app.router.add_get("/{tail:.*}", hello)
app.router.add_post("/{tail:.*}", sink)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
            backlog=2048, loop=uvloop.new_event_loop())
"""

GATEWAY = """
import asyncio, sys
from faaso.gateway.app import GatewayState, gateway_app
from faaso.spec.endpoint import Endpoint
from faaso.spec.routing import RouteTable
from faaso.cli.run import run
from faaso.server.serve import ServerOptions, serve
state = GatewayState(RouteTable({"/hello": "hello"}, {"hello"}))
unix = None
address = sys.argv[2]
if address.startswith("unix:"):
    unix, _, address = address[5:].partition(",")
host, _, port = address.rpartition(":")
state.pools.get("hello").add("one", Endpoint(host, int(port), unix=unix))
async def main():
    await serve(
        gateway_app(state), ServerOptions(port=int(sys.argv[1]), fast_path=sys.argv[3] == "fast")
    )
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


CADDY = """
{{
  admin off
  auto_https off
  storage file_system {tmp}/caddy
}}
http://127.0.0.1:{port} {{
  bind 127.0.0.1
  reverse_proxy 127.0.0.1:{backend}
}}
"""

# A chunked POST as the OpenFaaS gateway sends them (wrk itself would add a Content-Length).
CHUNKED_POST = """
local body = "5\\r\\nhello\\r\\n0\\r\\n\\r\\n"
local head = "POST /hello HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n"
local req = head .. "Transfer-Encoding: chunked\\r\\n\\r\\n" .. body
request = function() return req end
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


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (from /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


Result = tuple[float, float, float, float]  # req/s, p50 us, p99 us, proxy CPU us per request


def wrk(
    url: str, connections: int, proxy_pids: list[int] | None = None, script: Path | None = None
) -> Result:
    """Median over RUNS of (req/s, p50 µs, p99 µs, CPU µs per request of ``proxy_pids``)."""
    rates, p50s, p99s, cpus = [], [], [], []
    extra = ["-s", str(script)] if script is not None else []
    for _ in range(RUNS):
        before = cpu_seconds(proxy_pids) if proxy_pids else 0.0
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{DURATION}s", "--latency", *extra, url],
            capture_output=True,
            text=True,
            check=True,
            timeout=DURATION + 30,
        ).stdout
        used = cpu_seconds(proxy_pids) - before if proxy_pids else 0.0
        if "Non-2xx" in out or "Socket errors" in out:
            raise SystemExit(f"wrk saw errors on {url}:\n{out}")
        requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        rates.append(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)))  # type: ignore[union-attr]
        p50s.append(_micros(re.search(r"50%\s+([\d.]+\w+)", out).group(1)))  # type: ignore[union-attr]
        p99s.append(_micros(re.search(r"99%\s+([\d.]+\w+)", out).group(1)))  # type: ignore[union-attr]
        cpus.append(used * 1e6 / max(requests, 1))
    return (
        statistics.median(rates),
        statistics.median(p50s),
        statistics.median(p99s),
        statistics.median(cpus),
    )


def _micros(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]


STREAMS = 10
STREAM_MIB = 50


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _streams(base: str, pid: int, upload: bool) -> tuple[float, float, float]:
    """Ten 50 MiB uploads (or downloads) through the proxy at once: (RSS before, peak, s)."""
    import aiohttp

    chunk = b"x" * 2**20

    async def body() -> object:
        for _ in range(STREAM_MIB):
            yield chunk

    before = rss_mib(pid)
    peak = before
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            if upload:
                async with session.post(f"{base}/hello/sink", data=body()) as resp:
                    assert resp.status == 200, resp.status
                    assert int(await resp.text()) == STREAM_MIB * 2**20
                return
            size = 0
            async with session.get(f"{base}/hello/download/{STREAM_MIB}") as resp:
                assert resp.status == 200, resp.status
                async for piece in resp.content.iter_any():
                    size += len(piece)
            assert size == STREAM_MIB * 2**20, size

        task = asyncio.gather(*(one() for _ in range(STREAMS)))
        while not task.done():
            peak = max(peak, rss_mib(pid))
            await asyncio.sleep(0.02)  # sampling interval
        await task
    return before, peak, time.monotonic() - started


def sum_image(env: dict[str, str]) -> str | None:
    """conf/functions/sum built as faaso builds it (cached after the first time), if Docker
    answers."""
    if shutil.which("docker") is None:
        return None
    try:
        if subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode:
            return None
        out = subprocess.run(
            [sys.executable, "-m", "faaso", "build", str(ROOT / "conf/functions/sum")],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.split()
    return lines[-1] if out.returncode == 0 and lines else None


def start_gateway(
    upstream: str, env: dict[str, str], procs: list[subprocess.Popen[bytes]], mode: str = "fast"
) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", GATEWAY, str(port), upstream, mode],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    procs.append(proc)
    return port, proc


def container_bench(
    image: str,
    env: dict[str, str],
    procs: list[subprocess.Popen[bytes]],
    containers: list[str],
    tmp: Path,
) -> dict[tuple[str, int], Result]:
    """/sum in a container: at its published port (through docker-proxy), on the host network,
    and through faaso's proxy to the published port and to the container's Unix socket."""
    sockets = tmp / "sockets"
    sockets.mkdir()
    sockets.chmod(0o777)  # the function runs as an unprivileged user of the image
    cid = subprocess.run(
        [
            "docker", "run", "-d", "--rm", "-p", "127.0.0.1::8080",
            "--mount", f"type=bind,source={sockets},target=/run/faaso",
            "-e", "FAASO_SOCKET=/run/faaso/function.sock",
            image,
        ],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    containers.append(cid)
    fmt = '{{(index (index .NetworkSettings.Ports "8080/tcp") 0).HostPort}}'
    published = subprocess.run(
        ["docker", "inspect", "-f", fmt, cid],
        capture_output=True, text=True, check=True, timeout=20,
    ).stdout.strip()  # fmt: skip
    host_port = free_port()
    host_cid = subprocess.run(
        [
            "docker", "run", "-d", "--rm", "--network", "host",
            "-e", "FAASO_HOST=127.0.0.1", "-e", f"PORT={host_port}",
            image,
        ],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    containers.append(host_cid)
    via_published, p1 = start_gateway(f"127.0.0.1:{published}", env, procs)
    socket_path = sockets / "function.sock"
    via_socket, p2 = start_gateway(f"unix:{socket_path},127.0.0.1:{published}", env, procs)
    query = "a=2&b=3"
    targets: dict[str, tuple[str, list[int] | None]] = {
        "published port": (f"http://127.0.0.1:{published}/?{query}", None),
        "host network": (f"http://127.0.0.1:{host_port}/?{query}", None),
        "faaso->published": (f"http://127.0.0.1:{via_published}/hello?{query}", [p1.pid]),
        "faaso->unix socket": (f"http://127.0.0.1:{via_socket}/hello?{query}", [p2.pid]),
    }
    for url, _ in targets.values():
        wait_http(url)
    deadline = time.monotonic() + 30
    while not socket_path.exists():  # poll with a deadline: the server binds it at start-up
        if time.monotonic() > deadline:
            raise SystemExit("the container never created its Unix socket")
        time.sleep(0.05)
    return {(name, c): wrk(url, c, pids) for name, (url, pids) in targets.items() for c in (1, 64)}


def table(results: dict[tuple[str, int], Result], names: list[str]) -> None:
    print(
        f"{'path':<22} {'c=1 req/s':>10} {'p50 us':>8} {'c=64 req/s':>11} {'p50 us':>8} "
        f"{'p99 us':>9} {'proxy CPU us/req':>17}"
    )
    for name in names:
        r1, p50_1, _, _ = results[(name, 1)]
        r64, p50_64, p99_64, cpu = results[(name, 64)]
        cpu_text = f"{cpu:.1f}" if cpu else "-"
        print(
            f"{name:<22} {r1:>10.0f} {p50_1:>8.0f} {r64:>11.0f} {p50_64:>8.0f} {p99_64:>9.0f} "
            f"{cpu_text:>17}"
        )


def main() -> int:
    for tool in ("wrk", "nginx", "caddy"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: run scripts/bench, which installs it")
    tmp = Path(tempfile.mkdtemp(prefix="faaso-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    containers: list[str] = []
    in_container: dict[tuple[str, int], Result] = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    image = sum_image(env)
    try:
        backend, nginx_port, runtime = free_port(), free_port(), free_port()
        caddy_port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-c", HELLO, str(backend)], env=env))
        gateway, gateway_proc = start_gateway(f"127.0.0.1:{backend}", env, procs)
        plain, plain_proc = start_gateway(f"127.0.0.1:{backend}", env, procs, mode="aiohttp")
        (tmp / "nginx.conf").write_text(NGINX.format(tmp=tmp, backend=backend, port=nginx_port))
        nginx = subprocess.Popen(["nginx", "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"])
        procs.append(nginx)
        (tmp / "Caddyfile").write_text(CADDY.format(tmp=tmp, backend=backend, port=caddy_port))
        caddy = subprocess.Popen(
            ["caddy", "run", "--adapter", "caddyfile", "--config", str(tmp / "Caddyfile")],
            env={**env, "HOME": str(tmp), "XDG_DATA_HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(caddy)
        (tmp / "chunked.lua").write_text(CHUNKED_POST)
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
        targets: dict[str, tuple[str, list[int] | None]] = {
            "direct": (f"http://127.0.0.1:{backend}/hello", None),
            "nginx": (f"http://127.0.0.1:{nginx_port}/hello", [nginx.pid]),
            "caddy": (f"http://127.0.0.1:{caddy_port}/hello", [caddy.pid]),
            "faaso": (f"http://127.0.0.1:{gateway}/hello", [gateway_proc.pid]),
            "faaso --no-fast-path": (f"http://127.0.0.1:{plain}/hello", [plain_proc.pid]),
        }
        for url, _ in targets.values():
            wait_http(url)
        wait_http(f"http://127.0.0.1:{runtime}/_/health")
        # nginx's work happens in its worker process, a child of the master
        children = Path(f"/proc/{nginx.pid}/task/{nginx.pid}/children").read_text().split()
        targets["nginx"] = (targets["nginx"][0], [nginx.pid, *map(int, children)])
        results = {
            (name, c): wrk(url, c, pids) for name, (url, pids) in targets.items() for c in (1, 64)
        }
        # The same through each proxy with chunked POST bodies (faaso: still its fast path).
        chunked = {name: targets[name] for name in ("direct", "nginx", "caddy", "faaso")}
        for name, (url, pids) in chunked.items():
            for c in (1, 64):
                results[(f"{name} chunked POST", c)] = wrk(url, c, pids, tmp / "chunked.lua")
        runtime_64 = wrk(f"http://127.0.0.1:{runtime}/?a=2&b=3", 64)
        base = f"http://127.0.0.1:{gateway}"
        uploads = asyncio.run(asyncio.wait_for(_streams(base, gateway_proc.pid, True), 120))
        downloads = asyncio.run(asyncio.wait_for(_streams(base, gateway_proc.pid, False), 120))
        if image is not None:
            in_container = container_bench(image, env, procs, containers, tmp)
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
    table(results, [*targets, *(f"{name} chunked POST" for name in chunked)])
    ratio = results[("faaso", 64)][0] / results[("nginx", 64)][0]
    caddy_ratio = results[("faaso", 64)][0] / results[("caddy", 64)][0]
    chunked_ratio = results[("faaso chunked POST", 64)][0] / results[("nginx chunked POST", 64)][0]
    added = results[("faaso", 1)][1] - results[("direct", 1)][1]
    added_nginx = results[("nginx", 1)][1] - results[("direct", 1)][1]
    print(f"faaso/nginx throughput at c=64: {ratio:.2f}x (goal >= 0.61, aim 0.75)")
    print(f"faaso/caddy throughput at c=64: {caddy_ratio:.2f}x")
    print(f"faaso/nginx throughput at c=64, chunked POST: {chunked_ratio:.2f}x")
    print(
        f"added p50 latency at c=1: faaso {added:.0f} us (goal <= 150), nginx {added_nginx:.0f} us"
    )
    print(
        f"python runtime, trivial sum handler, c=64: {runtime_64[0]:.0f} req/s, "
        f"p50 {runtime_64[1]:.0f} us, p99 {runtime_64[2]:.0f} us (goal >= 5000 req/s)"
    )
    for what, (before, peak, seconds) in (("uploads", uploads), ("downloads", downloads)):
        print(
            f"faaso RSS, {STREAMS} x {STREAM_MIB} MiB {what} at once: {before:.0f} MiB before, "
            f"peak {peak:.0f} MiB (+{peak - before:.0f}, goal <= 20), {seconds:.1f} s"
        )
    if not in_container:
        print("/sum in a container: skipped (no Docker engine, or the sum image did not build)")
        return 0
    print(f"/sum in a container ({image}), GET /?a=2&b=3")
    table(in_container, list(dict.fromkeys(n for n, _ in in_container)))
    ratio = in_container[("faaso->unix socket", 64)][0] / in_container[("published port", 64)][0]
    print(f"faaso via the Unix socket / the published port at c=64: {ratio:.2f}x (goal >= 1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
