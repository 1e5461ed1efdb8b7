"""faaso python runtime: the HTTP server inside each function's container.

Calls ``handle(event, context)`` from ``handler.py`` with the calling convention of OpenFaaS's
python3-http template, so OpenFaaS functions run unchanged.

- ``event``: ``body`` (bytes), ``headers`` (case-insensitive), ``method``, ``query`` (first value
  of each parameter), ``query_all`` (every value, a multidict), ``path``.
- ``context``: ``hostname``.
- Return a dict with ``statusCode`` (and ``body``, ``headers``), or a plain value: ``str``
  (text/plain), ``bytes`` (application/octet-stream), ``dict``/``list``/number (JSON), ``None``
  (an empty 200). An exception becomes a 500 with a JSON error; the server keeps serving.
- Sync handlers run in a bounded thread pool; ``async def`` handlers on the event loop.
- ``GET /_/health`` answers 200 without calling the handler. SIGTERM/SIGINT: stop accepting,
  let in-flight requests finish, exit 0.

Environment: ``PORT`` (8080), ``FAASO_HOST`` (0.0.0.0), ``FAASO_FUNCTION_DIR`` (/app/function),
``FAASO_MAX_BODY`` (bytes, 64 MiB), ``FAASO_THREADS`` (sync handler threads, 32),
``FAASO_ACCESS_LOG`` (1 to log each request).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import inspect
import json
import logging
import os
import socket
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import CIMultiDictProxy, MultiDictProxy

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Event:
    body: bytes
    headers: CIMultiDictProxy[str]
    method: str
    query: dict[str, str]
    query_all: MultiDictProxy[str]
    path: str


@dataclass(frozen=True, slots=True)
class Context:
    hostname: str


def load_handler(function_dir: Path) -> Any:
    """Import ``handler.py`` from the function folder; exit with a clear message if we cannot."""
    source = function_dir / "handler.py"
    if not source.is_file():
        sys.exit(f"faaso python runtime: no handler.py in {function_dir}")
    sys.path.insert(0, str(function_dir))
    try:
        spec = importlib.util.spec_from_file_location("handler", source)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["handler"] = module
        spec.loader.exec_module(module)
    except Exception:  # the function's own code: say exactly what broke, then stop
        traceback.print_exc()
        sys.exit(f"faaso python runtime: cannot import {source}")
    handle = getattr(module, "handle", None)
    if not callable(handle):
        sys.exit(f"faaso python runtime: {source} defines no callable handle(event, context)")
    return handle


def to_response(result: Any) -> web.Response:
    """Turn what a handler returned into a response (see the module docstring)."""
    if isinstance(result, dict) and "statusCode" in result:
        status = result["statusCode"]
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise TypeError(f"statusCode must be an HTTP status number, got {status!r}")
        headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
        body = result.get("body")
        if body is None:
            return web.Response(status=status, headers=headers)
        if isinstance(body, bytes | bytearray):
            return web.Response(status=status, headers=headers, body=bytes(body))
        if isinstance(body, str):
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "text/plain; charset=utf-8"
            return web.Response(status=status, headers=headers, body=body.encode())
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = JSON
        return web.Response(status=status, headers=headers, body=json.dumps(body).encode())
    if result is None:
        return web.Response(status=200)
    if isinstance(result, str):
        return web.Response(text=result, content_type="text/plain", charset="utf-8")
    if isinstance(result, bytes | bytearray):
        return web.Response(body=bytes(result), content_type="application/octet-stream")
    if isinstance(result, dict | list | int | float) and not isinstance(result, bool):
        return web.Response(body=json.dumps(result).encode(), content_type=JSON)
    if isinstance(result, bool):
        return web.Response(body=json.dumps(result).encode(), content_type=JSON)
    raise TypeError(f"cannot turn a {type(result).__name__} into a response")


def error_response(status: int, message: str, kind: str | None = None) -> web.Response:
    body: dict[str, str] = {"error": message}
    if kind:
        body["type"] = kind
    return web.Response(status=status, body=json.dumps(body).encode(), content_type=JSON)


class Runtime:
    def __init__(self, handle: Any, threads: int, access_log: bool) -> None:
        self.handle = handle
        self.is_async = inspect.iscoroutinefunction(handle)
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="handler")
        self.context = Context(hostname=socket.gethostname())
        self.access_log = access_log

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/_/health" and request.method in ("GET", "HEAD"):
            return web.Response(body=b'{"status":"ok"}', content_type=JSON)
        event = Event(
            body=await request.read(),
            headers=request.headers,
            method=request.method,
            query={k: request.query[k] for k in request.query},
            query_all=request.query,
            path=request.path,
        )
        try:
            if self.is_async:
                result = await self.handle(event, self.context)
            else:
                loop = asyncio.get_running_loop()
                call = functools.partial(self.handle, event, self.context)
                result = await loop.run_in_executor(self.executor, call)
            response = to_response(result)
        except Exception as exc:  # the function's bug: report it, keep serving
            traceback.print_exc()
            response = error_response(500, str(exc) or type(exc).__name__, type(exc).__name__)
        if self.access_log:
            print(f"{request.method} {request.path_qs} {response.status}", flush=True)
        return response


def main() -> None:
    function_dir = Path(os.environ.get("FAASO_FUNCTION_DIR", "/app/function"))
    handle = load_handler(function_dir)
    runtime = Runtime(
        handle,
        threads=int(os.environ.get("FAASO_THREADS", "32")),
        access_log=os.environ.get("FAASO_ACCESS_LOG") == "1",
    )
    app = web.Application(client_max_size=int(os.environ.get("FAASO_MAX_BODY", str(64 << 20))))
    app.router.add_route("*", "/{tail:.*}", runtime)

    async def shutdown_executor(_app: web.Application) -> None:
        runtime.executor.shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(shutdown_executor)
    host = os.environ.get("FAASO_HOST", "0.0.0.0")  # noqa: S104 - inside a container
    port = int(os.environ.get("PORT", "8080"))
    kind = "async" if runtime.is_async else "sync"
    print(f"faaso python runtime: serving {function_dir}/handler.py ({kind}) on {host}:{port}",
          flush=True)
    logging.basicConfig(level=logging.WARNING)
    loop_factory = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    web.run_app(
        app,
        host=host,
        port=port,
        backlog=2048,
        access_log=None,
        print=None,
        shutdown_timeout=10.0,
        handle_signals=True,
        loop=loop_factory() if loop_factory else None,
    )


if __name__ == "__main__":
    main()
