"""`faaso check` as a process: it prints what the routes file defines, the CORS policies and
the serving settings (TLS, access log, metrics auth) included, and refuses a key that does not
belong to its certificate. No engine needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import make_certificate

ROUTES = """\
cors: {allow_origins: ["https://app.example.com"], allow_methods: [GET, POST], max_age: 600}
server: {access_log: true, metrics_auth: true, certfile: tls/cert.pem, keyfile: tls/key.pem}
functions:
  top: {image: "some/top:1"}
  shut: {image: "some/shut:1", cors: false}
  own: {image: "some/own:1", cors: {allow_origins: ["*"], allow_headers: [Content-Type]}}
  noted:
    image: "some/noted:1"
    annotations: {faaso.cors.allow_origins: "https://admin.example.com",
                  faaso.cors.allow_credentials: "true"}
routes:
  /top: top
"""


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "faaso", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=config.parent,
    )


def _lines(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines()]


def test_check_prints_cors_and_serving_settings(tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    cert, key = make_certificate(tmp_path / "tls")
    config = tmp_path / "routes.yml"
    config.write_text(ROUTES)
    done = _check(config)
    assert done.returncode == 0, done.stderr
    lines = _lines(done.stdout)
    top = "origins https://app.example.com; methods GET, POST; headers none; max_age 600"
    assert f"cors (top level): {top}; credentials no" in lines, done.stdout
    # each function's policy, and where it comes from
    after = {lines[i - 1]: line for i, line in enumerate(lines) if line.startswith("cors")}
    assert after["function top: image some/top:1, replicas 1"] == (
        f"cors (the top-level cors: block): {top}; credentials no"
    )
    assert after["function shut: image some/shut:1, replicas 1"] == "cors: off (cors: false)"
    assert after["function own: image some/own:1, replicas 1"] == (
        "cors (its own cors: block): origins *; methods GET, HEAD, POST, PUT, PATCH, DELETE; "
        "headers content-type; max_age not said; credentials no"
    )
    assert after["function noted: image some/noted:1, replicas 1"].startswith(
        "cors (its faaso.cors.* annotations): origins https://admin.example.com;"
    )
    assert after["function noted: image some/noted:1, replicas 1"].endswith("credentials yes")
    assert (
        f"serving: HTTPS, certificate {cert.resolve()}, key {key.resolve()} "
        "(they load and belong together)"
    ) in lines
    assert any(
        line.startswith("serving: access log on, /metrics behind the password") for line in lines
    ), done.stdout


def test_check_says_when_there_is_no_cors_and_plain_http(tmp_path: Path) -> None:
    config = tmp_path / "routes.yml"
    config.write_text('functions:\n  a: {image: "some/a:1"}\nroutes: {}\n')
    done = _check(config)
    assert done.returncode == 0, done.stderr
    lines = _lines(done.stdout)
    assert "cors (top level): none" in lines
    assert not any(line.startswith("cors (") and "block" in line for line in lines)
    assert "serving: HTTP (no certfile/keyfile)" in lines
    assert any(line.startswith("serving: access log off, /metrics public") for line in lines)


def test_check_refuses_a_key_of_another_certificate(tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    (tmp_path / "other").mkdir()
    make_certificate(tmp_path / "tls")
    _, other_key = make_certificate(tmp_path / "other")
    config = tmp_path / "routes.yml"
    config.write_text(
        "server: {certfile: tls/cert.pem, keyfile: other/key.pem}\nfunctions: {}\nroutes: {}\n"
    )
    done = _check(config)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "server.certfile" in done.stderr and "cannot load the certificate" in done.stderr
    assert str(other_key.resolve()) in done.stderr
