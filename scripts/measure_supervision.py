#!/usr/bin/env python3
"""Measure faaso's supervision on this machine, with a real engine and real containers.

- kill-to-serving: `docker kill` of a function's only container until /sum answers again;
- edit-to-live: saving a new version of the function's code until /sum answers with it;
- route-to-live: adding a route to the routes file until it answers.

It runs its own `faaso serve` on a copy of conf/functions/sum in a temporary folder (loopback
only), does a bounded number of rounds, prints each figure and the median, and stops its server
and containers. Kills are spaced so that faaso's crash-loop backoff does not apply.

Usage: .venv/bin/python scripts/measure_supervision.py [--rounds 5]
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parent.parent
POLL = 0.005
STABLE_AFTER = 10.0  # faaso.controller.RestartPolicy.stable_after


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except OSError:
        return 0, b""
    finally:
        conn.close()


def wait_for(predicate, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    """Poll until predicate() is true; return the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(POLL)  # poll with a deadline
    return time.monotonic() - start


def containers(owner_label: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-q", "--filter", owner_label, "--filter", "label=faaso.function=sum"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def write_handler(folder: Path, offset: int) -> None:
    text = (ROOT / "conf/functions/sum/handler.py").read_text()
    # Same behaviour, answer shifted by `offset`: lets the script see which version serves.
    text += (
        f"\n\n_ORIGINAL = handle\n\n\ndef handle(event, context):\n"
        f"    result = _ORIGINAL(event, context)\n"
        f"    if result.get('statusCode') == 200:\n"
        f"        result['body'] = str(json.loads(result['body']) + {offset})\n"
        f"    return result\n"
    )
    tmp = folder / "handler.py.tmp"
    tmp.write_text(text)
    tmp.replace(folder / "handler.py")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from faaso.state.paths import owner_id

    work = Path(tempfile.mkdtemp(prefix="faaso-measure-"))
    fn = work / "sum"
    shutil.copytree(ROOT / "conf/functions/sum", fn)
    if "import json" not in (fn / "handler.py").read_text():
        raise SystemExit("the sum handler no longer imports json; update this script")
    write_handler(fn, 0)
    config = work / "routes.yml"
    config.write_text(f"functions:\n  sum: {{source: {fn}}}\nroutes:\n  /sum: sum\n")
    state = work / "state"
    port = free_port()
    log = (work / "faaso.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "faaso",
            "serve",
            str(config),
            "--port",
            str(port),
            "--state-dir",
            str(state),
            "--log-format",
            "json",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ},
    )
    owner = f"label=faaso.owner={owner_id(state)}"
    results: dict[str, list[float]] = {
        "kill-to-serving": [],
        "edit-to-live": [],
        "route-to-live": [],
    }
    try:
        first = wait_for(lambda: get(port, "/healthz")[0] == 200, 900, "faaso to be ready")
        print(f"faaso ready after {first:.1f} s (includes any image build)")
        for _ in range(args.rounds):
            (cid,) = containers(owner)
            subprocess.run(["docker", "kill", cid], check=True, capture_output=True)
            t0 = time.monotonic()
            wait_for(lambda: get(port, "/sum?a=2&b=3") == (200, b"5"), 60, "/sum after a kill")
            results["kill-to-serving"].append(time.monotonic() - t0)
            wait_for(lambda c=cid: c not in containers(owner), 30, "the old container to go")
            # Instances that die young in a row are restarted with backoff (a crash loop).
            # Let the new one become stable so each kill is measured as an isolated failure.
            time.sleep(STABLE_AFTER + 0.5)
        for i in range(1, args.rounds + 1):
            offset = 1000 * i
            write_handler(fn, offset)
            t0 = time.monotonic()
            want = (200, str(5 + offset).encode())
            wait_for(lambda w=want: get(port, "/sum?a=2&b=3") == w, 300, "the new version")
            results["edit-to-live"].append(time.monotonic() - t0)
        routes = ["/sum: sum"]
        for i in range(1, args.rounds + 1):
            routes.append(f"/extra{i}: sum")
            tmp = work / "routes.tmp"
            tmp.write_text(
                f"functions:\n  sum: {{source: {fn}}}\nroutes:\n"
                + "".join(f"  {r}\n" for r in routes)
            )
            tmp.replace(config)
            t0 = time.monotonic()
            wait_for(lambda i=i: get(port, f"/extra{i}?a=1&b=1")[0] == 200, 60, "the new route")
            results["route-to-live"].append(time.monotonic() - t0)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        log.close()
    print(f"{'figure':<18} {'median':>8}  runs (seconds)")
    for name, values in results.items():
        runs = " ".join(f"{v:.3f}" for v in values)
        print(f"{name:<18} {statistics.median(values):8.3f}  {runs}")
    print(f"faaso exited with {code}; log: {work / 'faaso.log'}")
    print(json.dumps({k: statistics.median(v) for k, v in results.items()}))
    return 0 if code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
