"""End to end: the real `python -m faaso serve` against a real Docker engine and real containers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from faaso.state.paths import owner_id
from tests.helpers import (
    READY_DEADLINE,
    ROOT,
    Served,
    docker_ps,
    free_port,
    start_serve,
    stop_serve,
    wait_ready,
)

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("require_docker")]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("e2e")
    config = tmp / "routes.yml"
    functions = ROOT / "conf" / "functions"
    config.write_text(
        "functions:\n"
        # Fixed replicas (min == max): container names are compared before and after.
        f"  sum: {{source: {functions / 'sum'}, runtime: python, scale: {{min: 1, max: 1}}}}\n"
        f"  mul: {{source: {functions / 'mul'}, runtime: python, scale: {{min: 1, max: 1}}}}\n"
        "routes:\n  /sum: sum\n  /mul: mul\n"
    )
    s = start_serve(config, tmp / "state", tmp / "faaso.log")
    try:
        wait_ready(s, READY_DEADLINE)
        yield s
    finally:
        if s.proc.poll() is None:
            stop_serve(s)


@pytest.mark.timeout(READY_DEADLINE + 60)
def test_sum_get_and_post(served: Served) -> None:
    status, headers, body = served.request("GET", "/sum?a=2&b=3")
    assert (status, json.loads(body)) == (200, 5)
    assert headers["content-type"].startswith("application/json")
    status, _, body = served.request(
        "POST", "/sum", b"[1, 2, 3.5]", {"Content-Type": "application/json"}
    )
    assert (status, json.loads(body)) == (200, 6.5)


def test_mul(served: Served) -> None:
    status, _, body = served.request("POST", "/mul", b"[2, 3, 4]")
    assert (status, json.loads(body)) == (200, 24)
    status, _, body = served.request("GET", "/mul?a=6&b=7")
    assert (status, json.loads(body)) == (200, 42)


def test_openfaas_path(served: Served) -> None:
    status, _, body = served.request("GET", "/function/sum?a=10&b=-4")
    assert (status, json.loads(body)) == (200, 6)
    status, _, body = served.request("POST", "/function/mul.openfaas-fn", b"[1.5, 2]")
    assert (status, json.loads(body)) == (200, 3.0)


def test_function_errors_are_400_json(served: Served) -> None:
    status, headers, body = served.request("GET", "/sum?a=2&b=x")
    assert status == 400
    assert "error" in json.loads(body)
    assert "x-openfaas-internal" not in headers  # the function's own answer
    status, _, body = served.request("POST", "/mul", b"not json")
    assert status == 400 and "error" in json.loads(body)


def test_proxy_errors(served: Served) -> None:
    status, headers, body = served.request("GET", "/nothing-here")
    assert status == 404
    assert headers["x-openfaas-internal"] == "proxy"
    assert "error" in json.loads(body)
    status, _, _ = served.request("GET", "/function/nope")
    assert status == 404


def test_healthz_and_containers(served: Served) -> None:
    status, _, body = served.request("GET", "/healthz")
    assert (status, json.loads(body)["status"]) == (200, "ok")
    names = docker_ps("label=faaso.function=sum", "status=running")
    mine = [n for n in names if n.startswith("faaso-sum-")]
    assert mine, names
    inspect = subprocess.run(
        ["docker", "inspect", "--format", "{{json .HostConfig.PortBindings}}", mine[0]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    bindings = json.loads(inspect)["8080/tcp"]
    assert bindings[0]["HostIp"] == "127.0.0.1"


def test_concurrent_requests(served: Served) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> tuple[int, object]:
        status, _, body = served.request("GET", f"/sum?a={i}&b=1")
        return status, json.loads(body)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(200)))
    assert results == [(200, i + 1) for i in range(200)]


def serve_once(config: Path, state_dir: Path, port: int) -> subprocess.CompletedProcess[str]:
    """``faaso serve`` expected to refuse to start: its exit code and output."""
    return subprocess.run(
        [
            *(sys.executable, "-m", "faaso", "serve", str(config), "--state-dir", str(state_dir)),
            *("--port", str(port), "--log-format", "json", "--no-watch"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The refusal is one ``faaso: ...`` line on stderr (after JSON log lines), no traceback."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1 and lines[0].startswith("faaso: "), result.stderr
    return lines[0]


def test_second_server_on_the_same_state_dir_is_refused(served: Served, tmp_path: Path) -> None:
    config = served.state_dir.parent / "routes.yml"
    before = docker_ps(f"label=faaso.owner={owner_id(served.state_dir)}", "status=running")
    line = one_line_error(serve_once(config, served.state_dir, free_port()), 1)
    assert f"PID {served.proc.pid}" in line and str(served.state_dir) in line
    # the first server's containers were neither adopted nor stopped, and it still serves
    after = docker_ps(f"label=faaso.owner={owner_id(served.state_dir)}", "status=running")
    assert after == before
    status, _, body = served.request("GET", "/sum?a=1&b=2")
    assert (status, json.loads(body)) == (200, 3)


def test_taken_port_is_one_line_and_touches_no_container(served: Served, tmp_path: Path) -> None:
    """Bind before touching containers: a leftover of this state directory survives a taken
    port (an older start order cleaned leftovers up first, then failed to listen)."""
    config = tmp_path / "routes.yml"
    config.write_text("functions:\n  idle: {image: faaso/debian:bookworm, replicas: 0}\n")
    state = tmp_path / "state"
    leftover = f"faaso-leftover-{tmp_path.name[-8:]}"
    subprocess.run(
        [
            *("docker", "run", "-d", "--name", leftover, "--label", "faaso.managed=true"),
            *("--label", f"faaso.owner={owner_id(state)}", "--label", "faaso.function=gone"),
            # a container that just stays up (its sleep is its work, not a wait) until removed
            *("faaso/debian:bookworm", "sleep", "300"),
        ],
        check=True,
        capture_output=True,
    )
    try:
        line = one_line_error(serve_once(config, state, served.port), 1)
        assert f"cannot listen on 127.0.0.1:{served.port}" in line
        assert docker_ps(f"name={leftover}", "status=running") == [leftover]
    finally:
        subprocess.run(["docker", "rm", "-f", leftover], capture_output=True, check=False)


def test_corrupt_deployments_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "routes.yml"
    config.write_text("functions:\n  idle: {image: faaso/debian:bookworm, replicas: 0}\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / "deployments.json").write_text("{not json")
    line = one_line_error(serve_once(config, state, free_port()), 2)
    assert "deployments.json" in line and "cannot read the deployments" in line


def test_unusable_state_dir_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "routes.yml"
    config.write_text("functions:\n  idle: {image: faaso/debian:bookworm, replicas: 0}\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = one_line_error(serve_once(config, blocker / "state", free_port()), 1)
    assert f"cannot use the state directory {blocker / 'state'}" in line


def test_sigterm_stops_containers_and_exits_0(served: Served) -> None:
    """Last in this module: shuts the shared server down."""
    owner_filter = f"label=faaso.owner={owner_id(served.state_dir)}"
    ours = set(docker_ps(owner_filter))
    assert {n.rsplit("-", 1)[0] for n in ours} == {"faaso-sum", "faaso-mul"}
    assert stop_serve(served) == 0
    left = set(docker_ps(owner_filter))
    assert not left, f"left behind: {left}"
    text = served.log_text()
    assert "server.stopped" in text
    # --log-format json: every line, aiohttp's and asyncio's included, is JSON
    for line in text.splitlines():
        json.loads(line)
