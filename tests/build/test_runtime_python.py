"""The python runtime's in-container server (runtimes/python/server.py), run for real.

Each test starts ``server.py`` as a subprocess on 127.0.0.1 with a function folder (the
example functions in conf/functions, the starter template, or small handlers written into
tmp_path) and talks HTTP to it with aiohttp. Readiness, "the handler has started" and "the
server stopped listening" are polled with a deadline; the only fixed wait is the deliberate
HOLD that shows a signalled server waits for the request still in flight.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from multidict import CIMultiDictProxy

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "runtimes" / "python" / "server.py"
TEMPLATE = ROOT / "runtimes" / "python" / "template"
FUNCTIONS = ROOT / "conf" / "functions"
DEADLINE = 10.0  # seconds for anything we poll for: readiness, a marker file, an exit
HOLD = 0.5  # seconds a request stays in flight after SIGTERM (well inside the 9 s grace)

pytestmark = pytest.mark.timeout(30)


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Runtime:
    """A running server.py and where its output goes."""

    proc: subprocess.Popen[bytes]
    port: int
    stdout: Path
    stderr: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> tuple[str, str]:
        return self.stdout.read_text(), self.stderr.read_text()

    async def wait_exit(self) -> int:
        return await asyncio.to_thread(self.proc.wait, DEADLINE)

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return await self.wait_exit()


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def until(check: Callable[[], Awaitable[bool]] | Callable[[], bool], what: str) -> None:
    """Poll ``check`` until it is true; fail after DEADLINE seconds."""
    end = time.monotonic() + DEADLINE
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)  # poll with a deadline


def write_function(folder: Path, handler: str, **siblings: str) -> Path:
    """A function folder: handler.py plus sibling modules (name -> source)."""
    folder.mkdir()
    (folder / "handler.py").write_text(textwrap.dedent(handler))
    for name, source in siblings.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return folder


def server_env(function_dir: Path, port: int, **env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FAASO_") and k != "PORT"}
    return {
        **base,
        "FAASO_HOST": "127.0.0.1",
        "PORT": str(port),
        "FAASO_FUNCTION_DIR": str(function_dir),
        "PYTHONDONTWRITEBYTECODE": "1",  # leave no __pycache__ in conf/functions
        **env,
    }


def spawn(function_dir: Path, logs: Path, env: dict[str, str]) -> Runtime:
    """Start server.py (not waiting for it); its stdout and stderr go to files under ``logs``."""
    logs.mkdir()
    port = free_port()
    stdout, stderr = logs / "stdout", logs / "stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(SERVER)],
            env=server_env(function_dir, port, **env),
            stdout=out,
            stderr=err,
        )
    return Runtime(proc, port, stdout, stderr)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as session:
        yield session


@pytest.fixture
async def start(
    tmp_path: Path, http: aiohttp.ClientSession
) -> AsyncIterator[Callable[..., Awaitable[Runtime]]]:
    """``await start(function_dir, **env)``: a server.py that answers /_/health."""
    started: list[Runtime] = []

    async def start_runtime(function_dir: Path, **env: str) -> Runtime:
        runtime = spawn(function_dir, tmp_path / f"server-{len(started)}", env)
        started.append(runtime)

        async def healthy() -> bool:
            if runtime.proc.poll() is not None:
                pytest.fail(
                    f"server.py exited with {runtime.proc.returncode}:\n{runtime.output()[1]}"
                )
            try:
                async with http.get(f"{runtime.url}/_/health") as resp:
                    return resp.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await until(healthy, f"{function_dir.name} to answer /_/health")
        return runtime

    yield start_runtime
    for runtime in started:
        if runtime.proc.poll() is None:
            runtime.proc.kill()
        runtime.proc.wait()


async def call(
    http: aiohttp.ClientSession, runtime: Runtime, method: str, path: str, **kwargs: Any
) -> Reply:
    async with http.request(method, runtime.url + path, **kwargs) as resp:
        return Reply(resp.status, resp.headers, await resp.read())


# --------------------------------------------------------------------------- sum and mul

SUM_CASES: list[tuple[str, str, str | None, int, str]] = [
    # method, path, body, expected status, expected body (exact)
    ("GET", "/?a=2&b=3", None, 200, "5"),
    ("GET", "/?a=2&a=3&zz=10", None, 200, "15"),  # any names; repeated names count each value
    ("GET", "/", None, 200, "0"),
    ("GET", "/?a=1.5&b=-0.5", None, 200, "1.0"),
    ("POST", "/", "[1, 2, 3.5]", 200, "6.5"),
    ("POST", "/", "[1, 2]", 200, "3"),
    ("POST", "/", "[]", 200, "0"),
    ("GET", "/?a=2&b=x", None, 400, "query parameter 'b' is not a number: 'x'"),
    ("GET", "/?a=true", None, 400, "query parameter 'a' is not a number: 'true'"),
    ("GET", "/?a=NaN", None, 400, "query parameter 'a' is not a number: 'NaN'"),
    ("GET", "/?a=Infinity", None, 400, "query parameter 'a' is not a number: 'Infinity'"),
    ("GET", "/?a=", None, 400, "query parameter 'a' is not a number: ''"),
    ("POST", "/", "[1, true]", 400, "item 1 is not a number: true"),
    ("POST", "/", "[1, 2, NaN]", 400, "item 2 is not a number: NaN"),
    ("POST", "/", '[1, "2"]', 400, 'item 1 is not a number: "2"'),
    ("POST", "/", "[null]", 400, "item 0 is not a number: null"),
    ("POST", "/", '{"a": 1}', 400, "body must be a JSON array of numbers"),
    ("POST", "/", "3", 400, "body must be a JSON array of numbers"),
    ("POST", "/", "[1, 2", 400, "body must be a JSON array of numbers; the body is not JSON"),
    ("POST", "/", "", 400, "body must be a JSON array of numbers; the body is not JSON"),
    ("POST", "/", "[1e308, 1e308]", 400, "the sum is too large"),
    ("PUT", "/", None, 405, "method PUT is not allowed; use GET or POST"),
]

MUL_CASES: list[tuple[str, str, str | None, int, str]] = [
    ("GET", "/?a=2&b=3", None, 200, "6"),
    ("GET", "/?n=2&n=5", None, 200, "10"),
    ("GET", "/", None, 200, "1"),
    ("GET", "/?a=4&b=0.5", None, 200, "2.0"),
    ("POST", "/", "[2, 3, 4]", 200, "24"),
    ("POST", "/", "[]", 200, "1"),
    ("GET", "/?a=2&b=x", None, 400, "query parameter 'b' is not a number: 'x'"),
    ("POST", "/", "[2, false]", 400, "item 1 is not a number: false"),
    ("POST", "/", "[2, Infinity]", 400, "item 1 is not a number: Infinity"),
    ("POST", "/", '"24"', 400, "body must be a JSON array of numbers"),
    ("POST", "/", "2 * 3", 400, "body must be a JSON array of numbers; the body is not JSON"),
    ("POST", "/", "[1e200, 1e200]", 400, "the product is too large"),
    ("DELETE", "/", None, 405, "method DELETE is not allowed; use GET or POST"),
]


@pytest.mark.parametrize(("name", "cases"), [("sum", SUM_CASES), ("mul", MUL_CASES)])
async def test_example_functions(
    start: Callable[..., Awaitable[Runtime]],
    http: aiohttp.ClientSession,
    name: str,
    cases: list[tuple[str, str, str | None, int, str]],
) -> None:
    runtime = await start(FUNCTIONS / name)
    for method, path, body, status, expected in cases:
        reply = await call(http, runtime, method, path, data=body)
        where = f"{name}: {method} {path} {body!r}"
        assert reply.status == status, f"{where}: {reply.status} {reply.body!r}"
        assert reply.headers["Content-Type"] == "application/json", where
        if status == 200:
            assert reply.body.decode() == expected, where  # exact: 5, not 5.0
        else:
            assert reply.json() == {"error": expected}, where
        if status == 405:
            assert reply.headers["Allow"] == "GET, POST"


@pytest.mark.parametrize(
    "folder", [FUNCTIONS / "sum", FUNCTIONS / "mul", TEMPLATE], ids=["sum", "mul", "template"]
)
async def test_function_yml_tests_pass(
    start: Callable[..., Awaitable[Runtime]], http: aiohttp.ClientSession, folder: Path
) -> None:
    """Every ``tests:`` entry in function.yml holds against its own handler."""
    tests = yaml.safe_load((folder / "function.yml").read_text())["tests"]
    assert tests
    assert any(t["expect"]["status"] == 200 for t in tests)
    runtime = await start(folder)
    for test in tests:
        request, expect = test["request"], test["expect"]
        reply = await call(
            http,
            runtime,
            request["method"],
            request["path"],
            data=request.get("body"),
            headers=request.get("headers"),
        )
        assert reply.status == expect["status"], (test, reply)
        if "body" in expect:
            assert reply.body.decode() == expect["body"], test
        if "json" in expect:
            assert reply.json() == expect["json"], test
        for header, value in expect.get("headers", {}).items():
            assert reply.headers.get(header) == value, (test, reply.headers)


# --------------------------------------------------------------------------- the contract

EVENT_HANDLER = """
    import asyncio
    import threading
    from pathlib import Path

    from helper import GREETING  # a sibling module of handler.py

    released = asyncio.Event()


    async def handle(event, context):
        if event.path == "/wait":  # blocks until /release: both must be in flight at once
            (Path(__file__).parent / "waiting").touch()
            await released.wait()
            return "released"
        if event.path == "/release":
            released.set()
            return "ok"
        return {
            "greeting": GREETING,
            "method": event.method,
            "path": event.path,
            "query": event.query,
            "query_all": list(event.query_all.items()),
            "header": event.headers.get("x-test"),
            "content_type": event.headers["CONTENT-TYPE"],
            "body_size": len(event.body),
            "body_start": event.body[:4].hex(),
            "hostname": context.hostname,
            "on_loop_thread": threading.current_thread() is threading.main_thread(),
        }
"""


async def test_event_and_context_for_an_async_handler(
    start: Callable[..., Awaitable[Runtime]], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    folder = write_function(tmp_path / "fn", EVENT_HANDLER, helper="GREETING = 'hi'\n")
    runtime = await start(folder)
    body = b"\x00\x01\xfe\xff" + b"x" * (5 * 1024 * 1024)  # over aiohttp's default 1 MiB limit
    reply = await call(
        http,
        runtime,
        "POST",
        "/a/b%20c?a=1&a=2&b=x%26y",
        data=io.BytesIO(body),
        headers={"X-Test": "yes", "Content-Type": "application/x-thing"},
    )
    assert reply.status == 200, reply
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json() == {
        "greeting": "hi",
        "method": "POST",
        "path": "/a/b c",
        "query": {"a": "1", "b": "x&y"},
        "query_all": [["a", "1"], ["a", "2"], ["b", "x&y"]],
        "header": "yes",
        "content_type": "application/x-thing",
        "body_size": len(body),
        "body_start": "0001feff",
        "hostname": socket.gethostname(),
        "on_loop_thread": True,
    }

    # Async handlers run concurrently: /wait only returns once /release has been handled.
    waiting = asyncio.create_task(call(http, runtime, "GET", "/wait"))
    await until(lambda: (folder / "waiting").exists(), "/wait to start")
    assert (await call(http, runtime, "GET", "/release")).body == b"ok"
    assert (await waiting).body == b"released"


RETURNS_HANDLER = """
    import threading

    VALUES = {
        "str": "héllo",
        "bytes": b"\\x00\\x01\\xff",
        "dict": {"a": 1, "b": [True, None]},
        "list": [1, "x"],
        "int": 42,
        "float": 2.5,
        "bool": True,
        "none": None,
        "status": {"statusCode": 201, "body": "made", "headers": {"X-Made": "yes"}},
        "status-json": {"statusCode": 422, "body": {"why": "bad"}},
        "status-bytes": {"statusCode": 200, "body": b"PNG",
                         "headers": {"content-type": "image/png"}},
        "status-only": {"statusCode": 202},
        "status-cookies": {"statusCode": 200, "body": "",
                           "headers": {"Set-Cookie": ["a=1", "b=2"]}},
        "body-is-data": {"body": "no statusCode, so this is just JSON"},
        "nan": float("nan"),
        "object": object(),
        "bad-status": {"statusCode": "200"},
    }


    def handle(event, context):
        if event.query["kind"] == "thread":
            return threading.current_thread() is threading.main_thread()
        return VALUES[event.query["kind"]]
"""

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
RETURN_CASES: list[tuple[str, int, str | None, bytes]] = [
    # ?kind=, expected status, Content-Type (None: not checked), body
    ("str", 200, TEXT, "héllo".encode()),
    ("bytes", 200, "application/octet-stream", b"\x00\x01\xff"),
    ("dict", 200, JSON, b'{"a": 1, "b": [true, null]}'),
    ("list", 200, JSON, b'[1, "x"]'),
    ("int", 200, JSON, b"42"),
    ("float", 200, JSON, b"2.5"),
    ("bool", 200, JSON, b"true"),
    ("none", 200, None, b""),
    ("status", 201, TEXT, b"made"),
    ("status-json", 422, JSON, b'{"why": "bad"}'),
    ("status-bytes", 200, "image/png", b"PNG"),
    ("status-only", 202, None, b""),
    ("status-cookies", 200, None, b""),
    ("body-is-data", 200, JSON, b'{"body": "no statusCode, so this is just JSON"}'),
    ("thread", 200, JSON, b"false"),  # a sync handler runs in the pool, not on the loop thread
]


async def test_return_values_become_responses(
    start: Callable[..., Awaitable[Runtime]], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    runtime = await start(write_function(tmp_path / "fn", RETURNS_HANDLER), FAASO_DEBUG="1")
    for kind, status, content_type, body in RETURN_CASES:
        reply = await call(http, runtime, "GET", f"/?kind={kind}")
        assert (reply.status, reply.body) == (status, body), kind
        if content_type:
            assert reply.headers["Content-Type"] == content_type, kind
    assert "Content-Type" not in (await call(http, runtime, "GET", "/?kind=none")).headers
    assert (await call(http, runtime, "GET", "/?kind=status")).headers["X-Made"] == "yes"
    cookies = (await call(http, runtime, "GET", "/?kind=status-cookies")).headers
    assert cookies.getall("Set-Cookie") == ["a=1", "b=2"]

    # What cannot be sent is the handler's error: a 500 naming it.
    for kind, error_type in [
        ("nan", "ValueError"),
        ("object", "TypeError"),
        ("bad-status", "TypeError"),
    ]:
        reply = await call(http, runtime, "GET", f"/?kind={kind}")
        assert reply.status == 500, kind
        assert reply.json()["type"] == error_type, kind

    # Keep-alive HTTP/1.1, and no access log unless asked for: stdout has the startup line only.
    async with http.get(f"{runtime.url}/?kind=int") as resp:
        assert resp.version == aiohttp.HttpVersion11
        assert resp.headers.get("Connection", "").lower() != "close"
    assert await runtime.stop() == 0
    stdout, _ = runtime.output()
    assert stdout.splitlines() == [
        f"faaso python runtime: serving {tmp_path / 'fn' / 'handler.py'} (sync, 32 threads) "
        f"on 127.0.0.1:{runtime.port} with uvloop"
    ]


FAILING_HANDLER = """
    def handle(event, context):
        if "fail" in event.query:
            raise ValueError("boom")
        if "fail-silently" in event.query:
            raise KeyError
        return "fine"
"""


async def test_exception_is_a_500_and_the_server_keeps_serving(
    start: Callable[..., Awaitable[Runtime]], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    runtime = await start(write_function(tmp_path / "fn", FAILING_HANDLER))
    reply = await call(http, runtime, "GET", "/?fail", headers={"X-Call-Id": "call-1"})
    assert reply.status == 500
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["X-Call-Id"] == "call-1"
    # By default the client learns that it failed and the call id, not what the exception said.
    assert reply.json() == {
        "error": "the function failed; its traceback is in the container's log "
        "under call id call-1",
        "call_id": "call-1",
    }
    assert b"boom" not in reply.body and b"ValueError" not in reply.body
    reply = await call(http, runtime, "POST", "/?fail-silently")  # no call id: one is made
    made = reply.headers["X-Call-Id"]
    assert len(made) == 36
    assert (reply.status, reply.json()["call_id"]) == (500, made)
    assert b"KeyError" not in reply.body

    assert (await call(http, runtime, "GET", "/")).body == b"fine"
    health = await call(http, runtime, "GET", "/_/health")  # never reaches the handler
    assert (health.status, health.json()) == (200, {"status": "ok"})

    assert await runtime.stop() == 0
    _, stderr = runtime.output()
    assert "call call-1: GET /?fail failed:" in stderr
    assert f"call {made}: POST /?fail-silently failed:" in stderr
    assert "Traceback (most recent call last)" in stderr
    assert 'raise ValueError("boom")' in stderr
    assert "ValueError: boom" in stderr


async def test_debug_mode_sends_the_exception_to_the_client(
    start: Callable[..., Awaitable[Runtime]], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    runtime = await start(write_function(tmp_path / "fn", FAILING_HANDLER), FAASO_DEBUG="1")
    reply = await call(http, runtime, "GET", "/?fail", headers={"X-Call-Id": "c-2"})
    body = reply.json()
    assert (reply.status, body["error"], body["type"], body["call_id"]) == (
        500,
        "boom",
        "ValueError",
        "c-2",
    )
    assert 'raise ValueError("boom")' in body["traceback"]
    reply = await call(http, runtime, "POST", "/?fail-silently")
    assert (reply.json()["error"], reply.json()["type"]) == ("KeyError", "KeyError")


async def test_the_function_folder_is_a_package_as_in_openfaas(
    start: Callable[..., Awaitable[Runtime]], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """OpenFaaS's python3-http layout: handler.py imports its siblings relatively, a
    sub-package does the same, and an absolute import of a sibling still works."""
    folder = write_function(
        tmp_path / "fn",
        """
        from .helpers import shout
        from .lib.words import WORD
        import helpers

        def handle(event, context):
            return shout(WORD) + " " + helpers.__name__ + " " + __name__
        """,
        helpers="def shout(text):\n    return text.upper()\n",
        __init__="",
    )
    (folder / "lib").mkdir()
    (folder / "lib" / "__init__.py").write_text("")
    (folder / "lib" / "words.py").write_text("from ..helpers import shout\nWORD = shout('hi')\n")
    runtime = await start(folder)
    reply = await call(http, runtime, "GET", "/")
    assert (reply.status, reply.body) == (200, b"HI helpers function.handler")


GATED_HANDLER = """
    import time
    from pathlib import Path

    HERE = Path(__file__).parent


    def handle(event, context):
        # Say we started, then block (a slow sync handler) until the test creates "release".
        name = event.query["id"]
        (HERE / f"started-{name}").touch()
        deadline = time.monotonic() + 10
        while not (HERE / "release").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("never released")
            time.sleep(0.005)  # poll with a deadline (inside the slow handler under test)
        return f"done {name}"
"""


async def test_slow_sync_handlers_run_concurrently_and_health_still_answers(
    start: Callable[..., Awaitable[Runtime]], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    folder = write_function(tmp_path / "fn", GATED_HANDLER)
    runtime = await start(folder)
    ids = [str(i) for i in range(4)]
    calls = [asyncio.create_task(call(http, runtime, "GET", f"/?id={i}")) for i in ids]
    # All four are inside handle() at once: none can return before "release" exists.
    await until(lambda: all((folder / f"started-{i}").exists() for i in ids), "4 handlers")
    health = await call(http, runtime, "GET", "/_/health")
    assert health.status == 200
    assert not any(task.done() for task in calls)
    (folder / "release").touch()
    replies = await asyncio.gather(*calls)
    assert [r.body.decode() for r in replies] == [f"done {i}" for i in ids]


async def refuses_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_listening_and_lets_in_flight_requests_finish(
    start: Callable[..., Awaitable[Runtime]],
    http: aiohttp.ClientSession,
    tmp_path: Path,
    sig: signal.Signals,
) -> None:
    folder = write_function(tmp_path / "fn", GATED_HANDLER)
    runtime = await start(folder)
    in_flight = asyncio.create_task(call(http, runtime, "GET", "/?id=last"))
    await until(lambda: (folder / "started-last").exists(), "the request to be in flight")

    runtime.proc.send_signal(sig)
    await until(lambda: refuses_connections(runtime.port), "the server to stop listening")
    # The one deliberate wait: hold the request a while to show the server waits for it (its
    # grace is 9 s) instead of dropping it and exiting at once.
    await asyncio.sleep(HOLD)  # not a readiness wait: the server's deadline must outlast it
    assert runtime.proc.poll() is None
    assert not in_flight.done()
    (folder / "release").touch()

    reply = await in_flight
    assert (reply.status, reply.body) == (200, b"done last")
    assert await runtime.wait_exit() == 0


async def test_a_handler_outliving_the_grace_does_not_keep_the_server_alive(
    start: Callable[..., Awaitable[Runtime]], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    folder = write_function(tmp_path / "fn", GATED_HANDLER)  # never released in this test
    runtime = await start(folder, FAASO_SHUTDOWN_GRACE="0.2")
    in_flight = asyncio.create_task(call(http, runtime, "GET", "/?id=stuck"))
    await until(lambda: (folder / "started-stuck").exists(), "the request to be in flight")
    assert await runtime.stop() == 0
    with pytest.raises(aiohttp.ClientError):
        await in_flight
    assert "a handler is still running after the shutdown grace" in runtime.output()[1]


async def test_body_limit_and_access_log_follow_the_environment(
    start: Callable[..., Awaitable[Runtime]], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    handler = "def handle(event, context):\n    return len(event.body)\n"
    runtime = await start(
        write_function(tmp_path / "fn", handler), FAASO_MAX_BODY="1000", FAASO_ACCESS_LOG="1"
    )
    assert (await call(http, runtime, "POST", "/up?x=1", data=b"x" * 1000)).body == b"1000"
    assert (await call(http, runtime, "POST", "/", data=b"x" * 1001)).status == 413
    assert await runtime.stop() == 0
    stdout, _ = runtime.output()
    assert "POST /up?x=1 200" in stdout.splitlines()


# --------------------------------------------------------------------------- startup failures


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        ("import no_such_module_here\n", "failed: ModuleNotFoundError: No module named"),
        ("def handle(event, context)\n    return 1\n", "failed: SyntaxError"),
        ("raise RuntimeError('config missing')\n", "failed: RuntimeError: config missing"),
        ("def handler(event, context):\n    return 1\n", "defines no callable handle(event"),
        ("handle = 3\n", "defines no callable handle(event"),
        (None, "no handler.py in"),
    ],
    ids=["import-error", "syntax-error", "raises", "misnamed", "not-callable", "missing"],
)
def test_a_broken_handler_stops_startup_with_a_clear_message(
    tmp_path: Path, handler: str | None, message: str
) -> None:
    folder = tmp_path / "fn"
    folder.mkdir()
    if handler is not None:
        (folder / "handler.py").write_text(handler)
    done = subprocess.run(
        [sys.executable, str(SERVER)],
        env=server_env(folder, free_port()),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    assert "faaso python runtime:" in done.stderr
    assert "serving" not in done.stdout


# --------------------------------------------------------------------------- FAASO_SOCKET


async def test_faaso_socket_serves_the_same_app_beside_tcp_and_is_removed_on_exit(
    start: Callable[..., Awaitable[Runtime]], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    sock = tmp_path / "fn.sock"
    sock.write_text("stale")  # left by an earlier run: replaced, not an error
    runtime = await start(FUNCTIONS / "sum", FAASO_SOCKET=str(sock))
    assert sock.is_socket() and sock.stat().st_mode & 0o777 == 0o666
    connector = aiohttp.UnixConnector(path=str(sock))
    async with aiohttp.ClientSession(connector=connector) as unix:
        async with unix.get("http://function/?a=2&b=3") as resp:
            assert (resp.status, await resp.read()) == (200, b"5")
        async with unix.get("http://function/_/health") as resp:
            assert resp.status == 200
    assert (await call(http, runtime, "GET", "/?a=1&b=1")).body == b"2"  # TCP still serves
    assert f"and {sock} with" in runtime.output()[0]
    assert await runtime.stop() == 0
    assert not sock.exists()


async def test_a_faaso_socket_that_cannot_be_made_leaves_tcp_serving(
    start: Callable[..., Awaitable[Runtime]], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    runtime = await start(FUNCTIONS / "sum", FAASO_SOCKET=str(tmp_path / "no-such-dir" / "s"))
    assert (await call(http, runtime, "GET", "/?a=1&b=2")).body == b"3"
    assert "cannot listen on FAASO_SOCKET=" in runtime.output()[1]
    assert await runtime.stop() == 0
