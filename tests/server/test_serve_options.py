"""``faaso serve``'s server options end to end, as a process: the routes file's ``server:``
block and the flags (``--certfile``/``--keyfile``, ``--access-log``, ``--metrics-auth``)."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, Served, make_certificate, start_serve, stop_serve

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("require_docker")]


def _https(
    served: Served, cert: Path, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(cert))
    conn = http.client.HTTPSConnection("127.0.0.1", served.port, timeout=10, context=context)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _wait_https(served: Served, cert: Path, deadline: float = 120.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if served.proc.poll() is not None:
            pytest.fail(f"faaso exited with {served.proc.returncode}:\n{served.log_text()[-3000:]}")
        try:
            if _https(served, cert, "/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)  # poll with a deadline
    pytest.fail(f"faaso did not answer over HTTPS:\n{served.log_text()[-3000:]}")


def _access_lines(served: Served) -> list[dict[str, object]]:
    lines = []
    for line in served.log_text().splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("event") == "access":
            lines.append(doc)
    return lines


def test_server_block_https_metrics_auth_access_log(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    config = tmp_path / "routes.yml"
    config.write_text(
        "server:\n  certfile: cert.pem\n  keyfile: key.pem\n"
        "  access_log: true\n  metrics_auth: true\nfunctions: {}\n"
    )
    state = tmp_path / "state"
    served = start_serve(config, state, tmp_path / "serve.log")
    try:
        _wait_https(served, cert)
        status, body = _https(served, cert, "/metrics")
        assert status == 401
        assert b"authentication required" in body
        password = (state / "secrets" / "basic-auth-password").read_text().strip()
        token = base64.b64encode(f"admin:{password}".encode()).decode()
        status, body = _https(served, cert, "/metrics", {"Authorization": f"Basic {token}"})
        assert status == 200
        assert b"gateway_function_invocation_total" in body or b"# HELP" in body
        status, _ = _https(served, cert, "/function/nothing?x=1")
        assert status == 404
    finally:
        assert stop_serve(served) == 0
    got = {(x["method"], x["path"], x["status"]) for x in _access_lines(served)}
    assert ("GET", "/metrics", 401) in got
    assert ("GET", "/metrics", 200) in got
    assert ("GET", "/function/nothing", 404) in got
    assert '"url": "https://127.0.0.1:' in served.log_text()


def test_metrics_auth_needs_the_password(tmp_path: Path) -> None:
    config = tmp_path / "routes.yml"
    config.write_text("functions: {}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "faaso", "serve", str(config), "--state-dir",
         str(tmp_path / "state"), "--no-auth", "--metrics-auth", "--port", "0"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "server.metrics_auth" in proc.stderr and "--no-auth" in proc.stderr


def test_half_a_tls_pair_is_refused(tmp_path: Path) -> None:
    cert, _ = make_certificate(tmp_path)
    config = tmp_path / "routes.yml"
    config.write_text("functions: {}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "faaso", "serve", str(config), "--certfile", str(cert)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--keyfile" in proc.stderr
