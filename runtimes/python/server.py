"""faaso python runtime: the HTTP server inside each function's container.

It imports ``handle(event, context)`` from ``handler.py`` in ``FAASO_FUNCTION_DIR`` (the folder
loaded as the package ``function``, so ``from .helpers import x`` works) and calls it for every
request, with the calling convention of OpenFaaS's python3-http template, so OpenFaaS
functions run unchanged.

``event``
    ``body`` (bytes), ``headers`` (case-insensitive multidict), ``method`` (``"GET"``...),
    ``path`` (what the function sees: ``"/"``, ``"/x"``), ``query`` (a dict: the first value of
    each parameter) and ``query_all`` (a multidict with every value:
    ``event.query_all.getall("a")``, or ``.items()`` for all pairs in order).
``context``
    ``hostname`` (the container's host name).

What ``handle`` returns becomes the response:

- a dict with ``statusCode``: that status, its optional ``headers`` (a list value repeats the
  header) and optional ``body``: ``str`` (text/plain), ``bytes`` (application/octet-stream),
  anything else JSON-encoded (application/json); a ``Content-Type`` in ``headers`` wins;
- ``str``: text/plain; charset=utf-8 -- ``bytes``: application/octet-stream;
- any other ``dict``, a ``list`` or ``tuple``, ``int``, ``float``, ``bool``: JSON;
- ``None``: 200 with an empty body.

An exception (or a value that cannot be sent, like NaN) becomes a 500 and its traceback goes to
stderr under the request's call id (``X-Call-Id``, made up when absent); the server keeps
serving. The 500's JSON body says ``{"error": "the function failed; ... call id <id>",
"call_id": "<id>"}``; only with ``FAASO_DEBUG=1`` does it carry the exception's text, type and
traceback (``{"error", "type", "traceback", "call_id"}``), which may reveal secrets. Sync
handlers run in a bounded thread pool, ``async def`` ones on the event loop, so a slow handler
never holds up other requests. ``/_/health`` answers 200 ``{"status":"ok"}`` without calling
the handler. SIGTERM or SIGINT: stop accepting, give in-flight requests the shutdown grace to
finish, exit 0.

Environment: ``PORT`` (8080), ``FAASO_HOST`` (0.0.0.0), ``FAASO_FUNCTION_DIR`` (/app/function),
``FAASO_MAX_BODY`` (largest request body in bytes, 64 MiB), ``FAASO_THREADS`` (sync handler
threads, 32), ``FAASO_SHUTDOWN_GRACE`` (seconds, 9: just under Docker's 10 s stop timeout),
``FAASO_ACCESS_LOG`` (``1`` prints one line per request to stdout), ``FAASO_DEBUG`` (``1``:
exception details in 500 bodies), ``FAASO_SOCKET`` (unset: TCP only; a path, which faaso sets
to ``/run/faaso/function.sock``: the same app is also served on that Unix socket, made mode 0666
after a stale file there is removed, listening before the TCP port so it is ready whenever a
health check passes, and removed again on exit; if it cannot be made, a warning goes to stderr
and TCP serves alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import os
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping

JSON_TYPE = "application/json"
HEALTH_PATH = "/_/health"
HEALTH_BODY = b'{"status":"ok"}'
THREAD_PREFIX = "faaso-handler"
LISTEN_BACKLOG = 2048
PREFIX = "faaso python runtime:"
PACKAGE = "function"  # the function folder's package name, as in OpenFaaS's template
CALL_ID = "X-Call-Id"

Handler = Callable[[Any, Any], Any]


@dataclass(slots=True)
class Event:
    """One request as the handler sees it (OpenFaaS python3-http's ``event``, plus query_all)."""

    body: bytes
    headers: CIMultiDictProxy[str]
    method: str
    query: dict[str, str]
    query_all: MultiMapping[str]
    path: str


@dataclass(frozen=True, slots=True)
class Context:
    """What the handler may want to know about where it runs (OpenFaaS's ``context``)."""

    hostname: str


def env_number(name: str, default: int | float) -> int | float:
    """A positive number from the environment, or a clear exit if it is not one."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = type(default)(raw)
    except ValueError:
        value = 0
    if not value > 0:  # also refuses NaN
        sys.exit(f"{PREFIX} {name}={raw!r} must be a positive {type(default).__name__}")
    return value


def load_handler(function_dir: Path) -> Handler:
    """Import ``handle`` from ``function_dir/handler.py``; exit non-zero saying why if we cannot.

    The folder is loaded as the package ``function`` (its ``__init__.py`` runs first if it has
    one), as OpenFaaS's python3-http template does, so ``from .helpers import x`` works; the
    folder is on ``sys.path`` too, so ``import helpers`` keeps working.
    """
    source = function_dir / "handler.py"
    if not source.is_file():
        sys.exit(f"{PREFIX} no handler.py in {function_dir} (set FAASO_FUNCTION_DIR)")
    sys.path.insert(0, str(function_dir))  # so handler.py can import its sibling modules
    init = function_dir / "__init__.py"
    package_spec = (
        importlib.util.spec_from_file_location(
            PACKAGE, init, submodule_search_locations=[str(function_dir)]
        )
        if init.is_file()
        else importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
    )
    if package_spec is None:
        sys.exit(f"{PREFIX} cannot load {init}")
    package_spec.submodule_search_locations = [str(function_dir)]
    package = importlib.util.module_from_spec(package_spec)
    sys.modules[PACKAGE] = package
    try:
        if package_spec.loader is not None:
            package_spec.loader.exec_module(package)
        module = importlib.import_module(f"{PACKAGE}.handler")
    except Exception as exc:  # the function's own code: show exactly what broke, then stop
        traceback.print_exc()
        sys.exit(f"{PREFIX} importing {source} failed: {type(exc).__name__}: {exc}")
    sys.modules.setdefault("handler", module)  # as it was known before it was a package
    handle = getattr(module, "handle", None)
    if not callable(handle):
        sys.exit(f"{PREFIX} {source} defines no callable handle(event, context)")
    return cast(Handler, handle)


def encode_json(value: Any) -> bytes:
    # allow_nan=False: NaN and Infinity are not JSON, so they fail loudly instead of being sent.
    return json.dumps(value, ensure_ascii=False, allow_nan=False).encode()


def to_response(result: Any) -> web.Response:
    """Turn what a handler returned into a response (the rules are in the module docstring)."""
    if isinstance(result, dict) and "statusCode" in result:
        return explicit_response(result)
    if result is None:
        return web.Response()
    if isinstance(result, str):
        return web.Response(text=result)  # text/plain; charset=utf-8
    if isinstance(result, bytes | bytearray | memoryview):
        return web.Response(body=bytes(result), content_type="application/octet-stream")
    if isinstance(result, dict | list | tuple | int | float):  # bool is an int: true/false
        return web.Response(body=encode_json(result), content_type=JSON_TYPE)
    raise TypeError(f"handle() returned a {type(result).__name__}, which faaso cannot send")


def explicit_response(result: dict[str, Any]) -> web.Response:
    """``{"statusCode": 201, "headers": {...}, "body": ...}`` -> that response."""
    status = result["statusCode"]
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise TypeError(f"statusCode must be an HTTP status number, not {status!r}")
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in (result.get("headers") or {}).items():
        for item in value if isinstance(value, list | tuple) else (value,):
            headers.add(str(name), str(item))
    body = result.get("body")
    if body is None:
        data, default_type = b"", None
    elif isinstance(body, str):
        data, default_type = body.encode(), "text/plain; charset=utf-8"
    elif isinstance(body, bytes | bytearray | memoryview):
        data, default_type = bytes(body), "application/octet-stream"
    else:
        data, default_type = encode_json(body), JSON_TYPE
    if default_type and "Content-Type" not in headers:
        headers["Content-Type"] = default_type
    return web.Response(status=status, headers=headers, body=data)


def error_response(exc: Exception, call_id: str, debug: bool) -> web.Response:
    """The 500 for a handler's exception: its text and type only in debug mode (they may carry
    secrets or internals); otherwise a message with the call id to find the traceback by."""
    payload: dict[str, str] = {
        "error": "the function failed; its traceback is in the container's log "
        f"under call id {call_id}",
        "call_id": call_id,
    }
    if debug:
        payload = {
            "error": str(exc) or type(exc).__name__,
            "type": type(exc).__name__,
            "traceback": "".join(traceback.format_exception(exc)),
            "call_id": call_id,
        }
    return web.Response(status=500, body=encode_json(payload), content_type=JSON_TYPE)


class Runtime:
    """The single catch-all request handler: health checks, then the user's ``handle``."""

    def __init__(
        self, handle: Handler, threads: int, access_log: bool, debug: bool = False
    ) -> None:
        self.handle = handle
        self.debug = debug
        self.is_async = inspect.iscoroutinefunction(handle)
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=THREAD_PREFIX)
        self.context = Context(hostname=socket.gethostname())
        self.access_log = access_log

    async def serve(self, request: web.Request) -> web.Response:
        if request.path == HEALTH_PATH:
            return web.Response(body=HEALTH_BODY, content_type=JSON_TYPE)
        query = request.query
        event = Event(
            body=await request.read(),  # a 413 if larger than client_max_size
            headers=request.headers,
            method=request.method,
            query={key: query[key] for key in query},  # the first value of each key
            query_all=query,
            path=request.path,
        )
        try:
            response = to_response(await self.call(event))
        except Exception as exc:  # the function's bug: report it and keep serving
            call_id = request.headers.get(CALL_ID) or str(uuid.uuid4())
            print(
                f"{PREFIX} call {call_id}: {request.method} {request.path_qs} failed:\n"
                f"{traceback.format_exc()}",
                end="",
                file=sys.stderr,
                flush=True,
            )
            response = error_response(exc, call_id, self.debug)
            response.headers[CALL_ID] = call_id
        if self.access_log:
            print(f"{request.method} {request.path_qs} {response.status}", flush=True)
        return response

    async def call(self, event: Event) -> Any:
        if self.is_async:
            result = await self.handle(event, self.context)
        else:  # in the pool, so a slow or blocking handler leaves the event loop free
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self.executor, self.handle, event, self.context)
        if inspect.isawaitable(result):  # e.g. an object whose __call__ is async
            result = await result
        return result


def finish_threads(runtime: Runtime, wait: float) -> None:
    """Stop the pool; a sync handler still running after the grace must not keep us alive."""
    runtime.executor.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + wait
    for thread in threading.enumerate():
        if thread.name.startswith(THREAD_PREFIX):
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                print(
                    f"{PREFIX} a handler is still running after the shutdown grace; exiting anyway",
                    file=sys.stderr,
                    flush=True,
                )
                sys.stdout.flush()
                os._exit(0)  # worker threads are joined at exit, which would hang forever


def unix_listener(path: str) -> tuple[socket.socket, int] | None:
    """A listening Unix socket at ``path`` (a stale file there removed first) and the inode of
    its file, or None if it cannot be made."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if os.path.lexists(path) and not os.path.isdir(path):
            os.unlink(path)  # left by an earlier run: bind() would fail with EADDRINUSE
        sock.bind(path)
        os.chmod(path, 0o666)  # faaso, on the host, may be another uid than ours
        sock.listen(LISTEN_BACKLOG)
        inode = os.stat(path).st_ino
    except OSError as exc:
        sock.close()
        print(
            f"{PREFIX} cannot listen on FAASO_SOCKET={path}: {exc}; serving TCP only",
            file=sys.stderr,
            flush=True,
        )
        return None
    return sock, inode


def remove_socket(path: str, inode: int) -> None:
    """Remove our socket file, unless something else has replaced it meanwhile."""
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == inode:
            os.unlink(path)


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main() -> None:
    function_dir = Path(os.environ.get("FAASO_FUNCTION_DIR", "/app/function")).resolve()
    host = os.environ.get("FAASO_HOST") or "0.0.0.0"  # every interface of the container
    port = int(env_number("PORT", 8080))
    max_body = int(env_number("FAASO_MAX_BODY", 64 * 1024 * 1024))
    threads = int(env_number("FAASO_THREADS", 32))
    grace = float(env_number("FAASO_SHUTDOWN_GRACE", 9.0))

    runtime = Runtime(
        load_handler(function_dir),
        threads=threads,
        access_log=os.environ.get("FAASO_ACCESS_LOG", "") == "1",
        debug=os.environ.get("FAASO_DEBUG", "") == "1",
    )
    app = web.Application(client_max_size=max_body)
    app.router.add_route("*", "/{path:.*}", runtime.serve)

    loop = new_event_loop()
    # Bound and listening before run_app starts the TCP port: whoever finds the TCP port
    # healthy finds the socket there too (connections wait in its backlog until we serve).
    socket_path = os.environ.get("FAASO_SOCKET") or None
    unix = unix_listener(socket_path) if socket_path else None
    kind = "async" if runtime.is_async else f"sync, {threads} threads"
    where = f"{host}:{port}" + (f" and {socket_path}" if unix is not None else "")
    print(
        f"{PREFIX} serving {function_dir / 'handler.py'} ({kind}) on {where} "
        f"with {type(loop).__module__.split('.')[0]}",
        flush=True,
    )
    # run_app installs SIGTERM/SIGINT handlers (we are PID 1 in the container: without them
    # SIGTERM would be ignored), stops listening on either, waits up to ``grace`` for in-flight
    # requests, then returns.
    try:
        web.run_app(
            app,
            host=host,
            port=port,
            sock=unix[0] if unix is not None else None,
            backlog=LISTEN_BACKLOG,
            shutdown_timeout=grace,
            access_log=None,
            print=None,
            handle_signals=True,
            loop=loop,
        )
    finally:
        if unix is not None and socket_path is not None:
            remove_socket(socket_path, unix[1])
            unix[0].close()
    finish_threads(runtime, wait=1.0)


if __name__ == "__main__":
    main()
