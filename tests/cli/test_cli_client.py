"""The client commands, run for real against a real `faaso serve` and a real Docker engine.

One server per module (the sum function from conf/functions/sum); every command runs as its own
`python -m faaso ...` process, so parsing, credentials, output and exit codes are all exercised.
The tests run in file order: deploy, then invoke, scale, logs, then remove.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from faaso.api.auth import password_path
from tests.helpers import ROOT, free_port

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("require_docker")]

READY_DEADLINE = 900.0  # a cold first build of the sum image fits well inside this
DEPLOYED = "cli-adder"  # deployed from the sum image by these tests
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\S+Z) (faaso-[a-z0-9-]+) (.*)$")


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    state_dir: Path
    workdir: Path  # the CLI runs here, where no conf/routes.yml could lend it a password
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FAASO_GATEWAY", "FAASO_PASSWORD")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _healthz(url: str) -> int | None:
    """The status /healthz answers (200 ready, 503 not yet), None while nothing listens."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def _healthy(url: str) -> bool:
    return _healthz(url) == 200


def start_server(tmp: Path, routes: str) -> Server:
    """``faaso serve`` on a free 127.0.0.1 port, with its own config and state directory."""
    config = tmp / "routes.yml"
    config.write_text(routes)
    workdir = tmp / "work"
    workdir.mkdir()
    port = free_port()
    log = tmp / "faaso.log"
    with log.open("wb") as out:
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
                str(tmp / "state"),
                "--log-format",
                "json",
                "--no-watch",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
            cwd=ROOT,
        )
    return Server(f"http://127.0.0.1:{port}", proc, tmp / "state", workdir, log)


def wait_listening(s: Server, until: Callable[[Server], bool], deadline: float) -> None:
    end = time.monotonic() + deadline
    while not until(s):
        if s.proc.poll() is not None:
            pytest.fail(f"faaso serve exited with {s.proc.returncode}:\n{s.log_tail()}")
        if time.monotonic() > end:
            pytest.fail(f"faaso serve not ready after {deadline} s:\n{s.log_tail()}")
        time.sleep(0.2)  # poll with a deadline


def stop_server(s: Server) -> None:
    if s.proc.poll() is None:
        s.proc.send_signal(signal.SIGTERM)
    try:
        code = s.proc.wait(60)
    except subprocess.TimeoutExpired:
        s.proc.kill()
        s.proc.wait()
        raise
    assert code == 0, f"faaso serve exited with {code} on SIGTERM:\n{s.log_tail()}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(
        tmp_path_factory.mktemp("cli-client"),
        "functions:\n"
        f"  sum: {{source: {ROOT / 'conf' / 'functions' / 'sum'}, runtime: python}}\n"
        "routes:\n  /sum: sum\n",
    )
    try:
        wait_listening(s, lambda s: _healthy(s.url), READY_DEADLINE)
        yield s
    finally:
        stop_server(s)


def faaso(
    server: Server,
    *argv: str,
    stdin: bytes | None = None,
    gateway: str | None = None,
    state_dir: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 180.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m faaso ARGV --gateway ... --state-dir ...`` and return what it did."""
    command = [sys.executable, "-m", "faaso", *argv]
    if gateway != "":
        command += ["--gateway", gateway or server.url]
    command += ["--state-dir", str(state_dir or server.state_dir)]
    proc = subprocess.run(
        command,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        timeout=timeout,
        env=env or _env(),
        cwd=server.workdir,
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    assert result.stderr == "", result.stderr
    return result.stdout


def failed(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, (result.args, result.stdout, result.stderr)
    return result.stderr


def describe(server: Server, name: str) -> dict[str, Any]:
    doc = json.loads(ok(faaso(server, "describe", name, "--json")))
    assert isinstance(doc, dict)
    return doc


def sum_image(server: Server) -> str:
    functions = json.loads(ok(faaso(server, "list", "--json")))
    image = next(f["image"] for f in functions if f["name"] == "sum")
    assert str(image).startswith("faaso/sum:"), image
    return str(image)


def table(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.strip()]


# -- reading ---------------------------------------------------------------------------------


@pytest.mark.timeout(READY_DEADLINE + 120)
def test_list_table_and_json(server: Server) -> None:
    rows = table(ok(faaso(server, "list")))
    assert rows[0] == ["NAME", "IMAGE", "REPLICAS", "AVAILABLE", "INVOCATIONS"]
    assert [r[0] for r in rows[1:]] == ["sum"]
    assert rows[1][1].startswith("faaso/sum:")
    assert rows[1][2:4] == ["1", "1"]
    # the columns line up: every row's IMAGE starts where the header's does
    lines = ok(faaso(server, "list")).splitlines()
    assert lines[1].index("faaso/sum:") == lines[0].index("IMAGE")

    functions = json.loads(ok(faaso(server, "list", "--json")))
    assert [f["name"] for f in functions] == ["sum"]
    assert functions[0]["availableReplicas"] == 1
    assert functions[0]["image"] == rows[1][1]


def test_describe(server: Server) -> None:
    out = ok(faaso(server, "describe", "sum"))
    fields = dict(line.split(":", 1) for line in out.splitlines())
    fields = {k: v.strip() for k, v in fields.items()}
    assert fields["Name"] == "sum"
    assert fields["Status"] == "ready"
    assert fields["Replicas"] == "1"
    assert fields["Available replicas"] == "1"
    assert fields["Image"] == sum_image(server)
    assert fields["Function URL"] == f"{server.url}/function/sum"
    doc = describe(server, "sum")
    assert (doc["name"], doc["namespace"], doc["replicas"]) == ("sum", "openfaas-fn", 1)


def test_status(server: Server) -> None:
    out = ok(faaso(server, "status"))
    assert re.search(r"^status:\s+ok$", out, re.M), out
    assert re.search(r"^gateway:\s+" + re.escape(server.url) + "$", out, re.M), out
    assert re.search(r"^server:\s+faaso \S+ \(docker, ", out, re.M), out
    assert re.search(r"^reload:\s+none since start$", out, re.M), out
    rows = table(out.split("\n\n", 1)[1])
    assert rows[0] == ["FUNCTION", "STATE", "REPLICAS", "AVAILABLE", "ERROR"]
    assert rows[1] == ["sum", "ready", "1", "1"]
    doc = json.loads(ok(faaso(server, "status", "--json")))
    assert doc["health"]["status"] == "ok"
    assert doc["info"]["provider"]["provider"] == "faaso"
    assert [f["name"] for f in doc["functions"]] == ["sum"]


# -- a function deployed from an image -------------------------------------------------------


def test_deploy_from_image(server: Server) -> None:
    image = sum_image(server)
    out = ok(
        faaso(
            server,
            "deploy",
            "--name",
            DEPLOYED,
            "--image",
            image,
            "--env",
            "FAASO_ACCESS_LOG=1",
            "--label",
            "team=qa",
            "--annotation",
            "note=from the cli test",
            "--memory",
            "128Mi",
            "--cpu",
            "0.5",
        )
    )
    assert f"function {DEPLOYED!r} deployed" in out
    assert f"URL: {server.url}/function/{DEPLOYED}" in out
    doc = describe(server, DEPLOYED)
    assert doc["image"] == image
    assert doc["envVars"] == {"FAASO_ACCESS_LOG": "1"}
    assert doc["labels"] == {"team": "qa", "faas_function": DEPLOYED}
    assert doc["annotations"] == {"note": "from the cli test"}
    assert doc["limits"] == {"memory": "128Mi", "cpu": "0.5"}
    assert doc["availableReplicas"] == 1
    names = [r[0] for r in table(ok(faaso(server, "list")))[1:]]
    assert names == [DEPLOYED, "sum"]


def test_invoke(server: Server) -> None:
    assert ok(faaso(server, "invoke", DEPLOYED, "--path", "/?a=2&b=3")) == "5"
    assert ok(faaso(server, "invoke", DEPLOYED, "--path", "?a=10&b=-4")) == "6"
    # a body makes it a POST: from --data, or from standard input
    assert ok(faaso(server, "invoke", DEPLOYED, "--data", "[1, 2, 3.5]")) == "6.5"
    assert ok(faaso(server, "invoke", DEPLOYED, stdin=b"[4, 5]")) == "9"
    out = ok(
        faaso(
            server,
            "invoke",
            DEPLOYED,
            "--method",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            "[40, 2]",
        )
    )
    assert out == "42"


def test_invoke_function_error_prints_body_and_fails(server: Server) -> None:
    result = faaso(server, "invoke", DEPLOYED, "--path", "/?a=2&b=x")
    err = failed(result)
    assert json.loads(result.stdout) == {"error": "query parameter 'b' is not a number: 'x'"}
    assert f"function {DEPLOYED!r} answered HTTP 400" in err
    result = faaso(server, "invoke", DEPLOYED, "--method", "DELETE")
    assert "HTTP 405" in failed(result)
    assert "not allowed" in json.loads(result.stdout)["error"]


def test_invoke_unknown_function(server: Server) -> None:
    result = faaso(server, "invoke", "no-such-function")
    err = failed(result)
    assert err == "faaso: no function is routed at /function/no-such-function (HTTP 404)\n"
    assert result.stdout == ""


def test_scale_to_two(server: Server) -> None:
    out = ok(faaso(server, "scale", DEPLOYED, "2"))
    assert out == f"function {DEPLOYED!r} scaled to 2\n"
    deadline = time.monotonic() + 60
    while (doc := describe(server, DEPLOYED)).get("availableReplicas") != 2:
        assert time.monotonic() < deadline, doc
        time.sleep(0.2)  # poll with a deadline
    assert doc["replicas"] == 2
    rows = {r[0]: r for r in table(ok(faaso(server, "list")))[1:]}
    assert rows[DEPLOYED][2:4] == ["2", "2"]
    assert int(rows[DEPLOYED][4]) >= 5  # the invocations above went through the gateway


def test_logs_tail(server: Server) -> None:
    lines = ok(faaso(server, "logs", DEPLOYED, "--tail", "100")).splitlines()
    parsed = [LOG_LINE.match(line) for line in lines]
    assert lines and all(parsed), lines
    texts = [m.group(3) for m in parsed if m]
    assert "GET /?a=2&b=3 200" in texts  # the access log of the invocations above
    assert any("serving /app/function/handler.py" in t for t in texts)
    stamps = [m.group(1) for m in parsed if m]
    assert stamps == sorted(stamps)
    assert {m.group(2) for m in parsed if m} <= {
        i for i in _instances(server, DEPLOYED) if i.startswith(f"faaso-{DEPLOYED}-")
    }

    last = ok(faaso(server, "logs", DEPLOYED, "--tail", "1")).splitlines()
    assert len(last) == 1 and last[0] == lines[-1]

    entries = [json.loads(x) for x in ok(faaso(server, "logs", DEPLOYED, "--json")).splitlines()]
    assert entries and {e["name"] for e in entries} == {DEPLOYED}
    assert {"timestamp", "instance", "text"} <= set(entries[0])


def _instances(server: Server, name: str) -> set[str]:
    out = subprocess.run(
        ["docker", "ps", "--format", "{{.Names}}", "--filter", f"label=faaso.function={name}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def _reader(stream: IO[bytes]) -> tuple[queue.Queue[bytes], threading.Thread]:
    lines: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        for line in iter(stream.readline, b""):
            lines.put(line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return lines, thread


def test_logs_follow_until_ctrl_c(server: Server) -> None:
    argv = [sys.executable, "-m", "faaso", "logs", DEPLOYED, "-f", "--tail", "1"]
    argv += ["--gateway", server.url, "--state-dir", str(server.state_dir)]
    with subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        cwd=server.workdir,
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            lines, reader = _reader(proc.stdout)
            first = lines.get(timeout=30).decode()
            assert LOG_LINE.match(first.rstrip("\n")), first
            # a new line appears while following
            ok(faaso(server, "invoke", DEPLOYED, "--path", "/?followed=1"))
            deadline = time.monotonic() + 30
            seen: list[str] = []
            while not any("GET /?followed=1 200" in line for line in seen):
                remaining = deadline - time.monotonic()
                assert remaining > 0, seen
                seen.append(lines.get(timeout=remaining).decode())
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
            reader.join(10)
            assert proc.stderr.read() == b""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_deploy_update_falls_back_to_post_then_replaces(server: Server) -> None:
    name = "cli-updated"
    image = sum_image(server)
    # PUT of a function not yet deployed answers 404; --update then creates it with POST
    ok(faaso(server, "deploy", "--name", name, "--image", image, "--update"))
    assert "envVars" not in describe(server, name)  # not sent: left out, as faasd does
    ok(faaso(server, "deploy", "--name", name, "--image", image, "--update", "--env", "A=1"))
    doc = describe(server, name)
    assert doc["envVars"] == {"A": "1"}
    assert doc["availableReplicas"] == 1
    assert ok(faaso(server, "invoke", name, "--path", "/?a=1&b=1")) == "2"
    assert ok(faaso(server, "remove", name)) == f"function {name!r} removed\n"


def test_remove(server: Server) -> None:
    assert ok(faaso(server, "remove", DEPLOYED)) == f"function {DEPLOYED!r} removed\n"
    err = failed(faaso(server, "describe", DEPLOYED))
    assert err == f"faaso: function {DEPLOYED!r} not found in 'openfaas-fn' (HTTP 404)\n"
    err = failed(faaso(server, "remove", DEPLOYED))
    assert err == f"faaso: function {DEPLOYED!r} is not deployed (HTTP 404)\n"
    assert [r[0] for r in table(ok(faaso(server, "list")))[1:]] == ["sum"]
    # the routes file's functions are not the API's to remove
    err = failed(faaso(server, "remove", "sum"))
    assert "edit that file instead (HTTP 409)" in err


# -- secrets ---------------------------------------------------------------------------------


def test_secrets(server: Server) -> None:
    stored = server.state_dir / "function-secrets"
    assert ok(faaso(server, "secret", "create", "cli-a", "--value", "alpha")) == (
        "secret 'cli-a' created\n"
    )
    ok(faaso(server, "secret", "create", "cli-b", stdin=b"from stdin\n"))
    binary = server.workdir / "binary"
    binary.write_bytes(b"\xff\x00\n")
    ok(faaso(server, "secret", "create", "cli-c", "--from-file", str(binary)))
    assert (stored / "cli-a").read_bytes() == b"alpha"
    assert (stored / "cli-b").read_bytes() == b"from stdin"  # one trailing newline removed
    assert (stored / "cli-c").read_bytes() == b"\xff\x00\n"  # a file's bytes as they are

    rows = table(ok(faaso(server, "secret", "list")))
    assert rows == [["NAME"], ["cli-a"], ["cli-b"], ["cli-c"]]
    listed = json.loads(ok(faaso(server, "secret", "list", "--json")))
    assert listed == [{"name": n, "namespace": "openfaas-fn"} for n in ("cli-a", "cli-b", "cli-c")]

    err = failed(faaso(server, "secret", "create", "cli-a", "--value", "again"))
    assert err.startswith("faaso: secret 'cli-a' already exists") and "(HTTP 409)" in err
    assert ok(faaso(server, "secret", "update", "cli-a", "--value", "beta")) == (
        "secret 'cli-a' updated\n"
    )
    assert (stored / "cli-a").read_bytes() == b"beta"
    err = failed(faaso(server, "secret", "update", "cli-nope", "--value", "x"))
    assert err == "faaso: secret 'cli-nope' does not exist in namespace 'openfaas-fn' (HTTP 404)\n"

    for name in ("cli-a", "cli-b", "cli-c"):
        assert ok(faaso(server, "secret", "remove", name)) == f"secret {name!r} removed\n"
    assert table(ok(faaso(server, "secret", "list"))) == [["NAME"]]
    err = failed(faaso(server, "secret", "remove", "cli-a"))
    assert err == "faaso: secret 'cli-a' does not exist in namespace 'openfaas-fn' (HTTP 404)\n"


def test_secret_needs_a_value(server: Server) -> None:
    err = failed(faaso(server, "secret", "create", "cli-empty", stdin=b""), code=2)
    assert "empty" in err
    err = failed(faaso(server, "secret", "create", "cli-x", "--from-file", "/no/such/file"))
    assert err.startswith("faaso: cannot read /no/such/file")


# -- errors ----------------------------------------------------------------------------------


# -- namespaces ------------------------------------------------------------------------------


def _create_namespace(server: Server, name: str) -> None:
    """POST /system/namespaces: the CLI works in the namespaces the server has."""
    password = password_path(server.state_dir).read_text().strip()
    token = base64.b64encode(f"admin:{password}".encode()).decode()
    request = urllib.request.Request(
        f"{server.url}/system/namespaces",
        data=json.dumps({"name": name}).encode(),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200


def test_namespace_option(server: Server) -> None:
    """deploy, list, describe, invoke, scale, logs, secrets and remove with --namespace: a
    function of another namespace than openfaas-fn, beside one of the same name there."""
    _create_namespace(server, "cli-dev")
    image = sum_image(server)
    name = "cli-ns-adder"
    out = ok(faaso(server, "deploy", "--name", name, "--image", image, "--namespace", "cli-dev"))
    assert f"URL: {server.url}/function/{name}.cli-dev\n" in out, out
    listed = table(ok(faaso(server, "list", "-n", "cli-dev")))
    assert [r[0] for r in listed[1:]] == [name]
    assert name not in [r[0] for r in table(ok(faaso(server, "list")))[1:]]
    err = failed(faaso(server, "describe", name))  # not in the default namespace
    assert f"function {name!r} not found in 'openfaas-fn'" in err
    doc = json.loads(ok(faaso(server, "describe", name, "--namespace", "cli-dev", "--json")))
    assert doc["namespace"] == "cli-dev"
    text = ok(faaso(server, "describe", name, "--namespace", "cli-dev"))
    assert re.search(rf"^Function URL:\s+{server.url}/function/{name}\.cli-dev$", text, re.M)
    assert ok(faaso(server, "invoke", name, "-n", "cli-dev", "--path", "/?a=4&b=5")) == "9"
    assert "404" in failed(faaso(server, "invoke", name, "--path", "/?a=4&b=5"))
    ok(faaso(server, "scale", name, "2", "--namespace", "cli-dev"))

    def scaled(s: Server) -> bool:
        found = json.loads(ok(faaso(s, "describe", name, "-n", "cli-dev", "--json")))
        return bool(found.get("availableReplicas") == 2)

    wait_listening(server, scaled, 120)
    logs = ok(faaso(server, "logs", name, "--namespace", "cli-dev", "--tail", "50"))
    lines = logs.splitlines()
    assert lines and all(line.split()[1].startswith(f"faaso-{name}.cli-dev-") for line in lines)
    ok(faaso(server, "scale", name, "--reset", "--namespace", "cli-dev"))
    # secrets of that namespace
    ok(faaso(server, "secret", "create", "cli-ns-key", "--value", "v1", "-n", "cli-dev"))
    stored = server.state_dir / "namespace-secrets" / "cli-dev" / "cli-ns-key"
    assert stored.read_bytes() == b"v1"
    assert table(ok(faaso(server, "secret", "list", "--namespace", "cli-dev"))) == [
        ["NAME"],
        ["cli-ns-key"],
    ]
    assert "cli-ns-key" not in ok(faaso(server, "secret", "list"))
    ok(faaso(server, "secret", "update", "cli-ns-key", "--value", "v2", "-n", "cli-dev"))
    assert stored.read_bytes() == b"v2"
    ok(faaso(server, "secret", "remove", "cli-ns-key", "--namespace", "cli-dev"))
    assert not stored.exists()
    # remove
    assert "is not deployed" in failed(faaso(server, "remove", name))
    assert ok(faaso(server, "remove", name, "--namespace", "cli-dev")) == (
        f"function {name!r} removed\n"
    )
    assert table(ok(faaso(server, "list", "-n", "cli-dev"))) == [
        ["NAME", "IMAGE", "REPLICAS", "AVAILABLE", "INVOCATIONS"]
    ]
    # a namespace the server does not have is the server's 400
    err = failed(faaso(server, "list", "--namespace", "cli-nowhere"))
    assert "namespace 'cli-nowhere' does not exist" in err and "(HTTP 400)" in err


def test_unknown_function(server: Server) -> None:
    err = failed(faaso(server, "describe", "nope"))
    assert err == "faaso: function 'nope' not found in 'openfaas-fn' (HTTP 404)\n"
    err = failed(faaso(server, "scale", "nope", "1"))
    assert err == "faaso: function 'nope' does not exist (HTTP 404)\n"
    err = failed(faaso(server, "logs", "nope"))
    assert err == "faaso: function 'nope' not found in 'openfaas-fn' (HTTP 404)\n"


def test_bad_input_is_the_servers_message(server: Server) -> None:
    image = sum_image(server)
    err = failed(faaso(server, "deploy", "--name", "cli-bad", "--image", image, "--memory", "1x"))
    assert err.startswith("faaso: limits.memory '1x'") and err.endswith("(HTTP 400)\n")
    err = failed(faaso(server, "logs", "sum", "--since", "yesterday"))
    assert err == "faaso: since must be an RFC 3339 time (HTTP 422)\n"


def test_usage_errors(server: Server) -> None:
    err = failed(faaso(server, "deploy", "--name", "x", "--image", "y", "--env", "NOEQ"), code=2)
    assert "expected KEY=VALUE" in err
    assert "not a whole number" in failed(faaso(server, "scale", "sum", "two"), code=2)
    assert "must be 0 or more" in failed(faaso(server, "scale", "sum", "-1"), code=2)


def test_wrong_password(server: Server) -> None:
    err = failed(faaso(server, "list", "--password", "wrong"))
    assert err.startswith("faaso: authentication required")
    assert "(HTTP 401)" in err
    assert "refused the password given with --password" in err
    assert "--password or $FAASO_PASSWORD" in err

    err = failed(faaso(server, "list", env=_env(FAASO_PASSWORD="wrong")))
    assert "refused the password in $FAASO_PASSWORD" in err


def test_password_from_env_or_missing(server: Server, tmp_path: Path) -> None:
    password = password_path(server.state_dir).read_text().strip()
    # the right password in the environment wins over an empty state directory
    out = ok(faaso(server, "list", state_dir=tmp_path, env=_env(FAASO_PASSWORD=password)))
    assert "sum" in out
    err = failed(faaso(server, "list", state_dir=tmp_path))
    assert f"{password_path(tmp_path)} does not exist" in err
    assert "(HTTP 401)" in err and "--state-dir" in err
    # function calls need no password
    assert ok(faaso(server, "invoke", "sum", "--path", "/?a=1", state_dir=tmp_path)) == "1"


def test_gateway_from_environment(server: Server) -> None:
    out = ok(faaso(server, "list", gateway="", env=_env(FAASO_GATEWAY=server.url)))
    assert table(out)[1][0] == "sum"


def test_gateway_down(server: Server) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    for argv in (["list"], ["status"], ["invoke", "sum"], ["logs", "sum", "-f"]):
        result = faaso(server, *argv, gateway=down)
        err = failed(result)
        assert err.startswith(f"faaso: cannot connect to the faaso gateway at {down}:"), err
        assert "refused" in err and "Traceback" not in err
        assert result.stdout == ""
    err = failed(faaso(server, "list", gateway="not-a-url"))
    assert err.startswith("faaso: the gateway URL 'not-a-url' is not valid")


def test_status_of_a_function_that_cannot_start(tmp_path: Path) -> None:
    """A second server whose one function's image can never be had: status says so, exits 1."""
    image = "registry.invalid/faaso/none:1"  # .invalid never resolves: the pull fails at once
    s = start_server(tmp_path, f"functions:\n  broken: {{image: {image}}}\nroutes: {{}}\n")
    try:
        wait_listening(s, lambda s: _healthz(s.url) is not None, 60)

        def failed_once(s: Server) -> bool:
            doc = json.loads(faaso(s, "status", "--json").stdout)
            return any(f.get("error") for f in doc["health"].get("not_ready", []))

        wait_listening(s, failed_once, 60)
        result = faaso(s, "status")
        assert failed(result) == "faaso: not every function is ready\n"
        assert re.search(r"^status:\s+starting$", result.stdout, re.M), result.stdout
        rows = [line for line in result.stdout.splitlines() if line.startswith("broken ")]
        assert len(rows) == 1 and image in rows[0], result.stdout
        assert rows[0].split()[1:4] == ["failed", "1", "0"], rows
        out = faaso(s, "describe", "broken").stdout
        assert re.search(r"^Status:\s+not ready \(0 of 1 available\)$", out, re.M), out
    finally:
        stop_server(s)


# -- the function store ----------------------------------------------------------------------


def test_store_list_describe_deploy(server: Server) -> None:
    """The server has no store: key, so it offers the store faaso ships (conf/store.json)."""
    rows = table(ok(faaso(server, "store", "list")))
    assert rows[0] == ["NAME", "TITLE", "IMAGE", "DESCRIPTION"]
    assert [r[0] for r in rows[1:]] == ["sum", "mul", "greet", "shout"]
    doc = json.loads(ok(faaso(server, "store", "list", "--json")))
    assert doc["location"] == str(ROOT / "conf" / "store.json")
    assert doc["functions"][0]["source"] == str(ROOT / "conf" / "functions" / "sum")
    out = ok(faaso(server, "store", "describe", "mul"))
    fields = {k: v.strip() for k, v in (line.split(":", 1) for line in out.splitlines())}
    assert fields["Title"] == "Multiply" and fields["Runtime"] == "python"
    err = failed(faaso(server, "store", "describe", "nope"))
    assert err == "faaso: the store has no function 'nope' (HTTP 404)\n"

    out = ok(faaso(server, "store", "deploy", "sum", "--name", "cli-store-sum"))
    assert out.splitlines()[0] == "store function 'sum' deployed as 'cli-store-sum'"
    assert ok(faaso(server, "invoke", "cli-store-sum", "--path", "?a=3&b=4")) == "7"
    status = describe(server, "cli-store-sum")
    assert status["annotations"]["faaso.store/entry"] == "sum"
    assert status["image"].startswith("faaso/cli-store-sum:")
    err = failed(faaso(server, "store", "deploy", "sum", "--name", "Bad_Name"))
    assert "is not a valid function name" in err and "(HTTP 400)" in err
    ok(faaso(server, "remove", "cli-store-sum"))
