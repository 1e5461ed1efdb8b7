#!/usr/bin/env python3
"""Both backends side by side: deploy-to-first-200 and scale 1 -> 5 until all are available.

A skeleton (issue 12): it measures those two figures for `--backend docker` and
`--backend swarm` (a Swarm manager is needed for the second; `docker swarm init --advertise-addr
127.0.0.1`). Not measured yet: a rolling update's failed requests under 32 connections.

    .venv/bin/python scripts/measure_backends.py [--rounds 3] [--backend docker --backend swarm]

Loopback only; each round has its own state directory and removes what its faaso made
(containers stop with faaso; Swarm services are removed by owner label).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from faaso.state.paths import owner_id  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except OSError:
        return 0, b""
    finally:
        conn.close()


def wait(check: object, timeout: float, what: str) -> float:
    """Seconds until ``check()`` is true; raises after ``timeout``."""
    assert callable(check)
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)  # poll with a deadline
    raise TimeoutError(f"{what}: not within {timeout} s")


def available(port: int, name: str) -> int:
    status, body = request(port, "GET", f"/system/function/{name}")
    if status != 200:
        return 0
    return int(json.loads(body).get("availableReplicas", 0))


def one_round(backend: str, work: Path) -> dict[str, float]:
    conf = work / "conf"
    conf.mkdir()
    shutil.copytree(ROOT / "conf" / "functions" / "sum", conf / "sum")
    routes = conf / "routes.yml"
    routes.write_text(
        "functions:\n  sum: {source: sum, runtime: python, scale: {min: 1, max: 1}}\n"
        "routes:\n  /sum: sum\n"
    )
    state = work / "state"
    port = free_port()
    argv = [sys.executable, "-m", "faaso", "serve", str(routes), "--port", str(port)]
    argv += ["--state-dir", str(state), "--no-auth", "--backend", backend, "--no-watch"]
    log = (work / "serve.log").open("wb")
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait(lambda: request(port, "GET", "/sum?a=1&b=2")[0] == 200, 900, "first 200")
        first_200 = time.monotonic() - started
        request(port, "POST", "/system/scale-function/sum", json.dumps({"replicas": 5}).encode())
        scale = wait(lambda: available(port, "sum") >= 5, 300, "5 available")
        return {"deploy_to_first_200_s": first_200, "scale_1_to_5_s": scale}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
        if backend == "swarm":
            ids = subprocess.run(
                [
                    "docker",
                    "service",
                    "ls",
                    "-q",
                    "--filter",
                    f"label=faaso.owner={owner_id(state)}",
                ],
                capture_output=True,
                text=True,
            ).stdout.split()
            if ids:
                subprocess.run(["docker", "service", "rm", *ids], capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", action="append", choices=("docker", "swarm"))
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {}
    for backend in args.backend or ["docker", "swarm"]:
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix=f"faaso-measure-{backend}-") as tmp:
                results.setdefault(backend, []).append(one_round(backend, Path(tmp)))
    print(f"{'backend':8} {'deploy-to-first-200 p50 (s)':>28} {'scale 1->5 p50 (s)':>20}")
    for backend, rounds in results.items():
        first = statistics.median(r["deploy_to_first_200_s"] for r in rounds)
        scale = statistics.median(r["scale_1_to_5_s"] for r in rounds)
        print(f"{backend:8} {first:28.2f} {scale:20.2f}")
    if os.environ.get("FAASO_MEASURE_JSON"):
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
