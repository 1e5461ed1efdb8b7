"""/async-function/ through the real gateway (fast path in front) with a real queue, real
workers, real function servers and a real callback server, all on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from faaso.config.routes_file import AsyncSettings
from tests.helpers import CallbackSink, async_rig, exchange


def recorder() -> tuple[web.Application, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(
            {
                "method": request.method,
                "raw_path": request.raw_path,
                "headers": dict(request.headers),
                "body": body.decode(errors="replace"),
            }
        )
        return web.json_response(seen[-1], status=201, headers={"X-From": "function"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app, seen


async def test_method_path_query_headers_and_body_are_kept(tmp_path: Path) -> None:
    app, seen = recorder()
    sink = CallbackSink()
    await sink.up()
    try:
        async with async_rig(tmp_path, {"echo": app}) as rig:
            status, headers, _ = await rig.enqueue(
                "/async-function/echo.openfaas-fn/sub/a%20b?x=1&y=%2F&x=2",
                method="PATCH",
                body=b"payload",
                headers={"X-Callback-Url": sink.url, "X-Custom": "kept"},
            )
            assert status == 202
            call_id = headers["X-Call-Id"]
            assert int(headers["X-Start-Time"]) > 0
            (callback,) = await sink.wait_for(1, 20)
    finally:
        await sink.down()
    assert seen[0]["method"] == "PATCH"
    assert seen[0]["raw_path"] == "/sub/a%20b?x=1&y=%2F&x=2"
    assert seen[0]["body"] == "payload"
    assert seen[0]["headers"]["X-Custom"] == "kept"
    assert seen[0]["headers"]["X-Call-Id"] == call_id
    assert callback.path == "/hook"
    assert callback.headers["X-Call-Id"] == call_id
    assert callback.headers["X-Function-Status"] == "201"
    assert callback.headers["X-Function-Name"] == "echo"
    assert float(callback.headers["X-Duration-Seconds"]) >= 0
    assert callback.headers["X-From"] == "function"
    assert json.loads(callback.body)["method"] == "PATCH"


async def test_a_callers_call_id_is_an_idempotency_key(tmp_path: Path) -> None:
    app, seen = recorder()
    sink = CallbackSink()
    await sink.up()
    try:
        settings = AsyncSettings(concurrency=1)
        async with async_rig(tmp_path, {"echo": app}, settings=settings) as rig:
            hook = {"X-Callback-Url": sink.url}
            for _ in range(2):
                status, headers, _ = await rig.enqueue(
                    "/async-function/echo", headers={**hook, "X-Call-Id": "mine-1"}
                )
                assert (status, headers["X-Call-Id"]) == (202, "mine-1")
            await rig.enqueue("/async-function/echo", headers={**hook, "X-Call-Id": "after"})
            await sink.wait_for(2, 20)
    finally:
        await sink.down()
    # FIFO with one job at a time: "after" ran last, and "mine-1" ran once.
    assert [s["headers"]["X-Call-Id"] for s in seen] == ["mine-1", "after"]
    assert sink.ids() == ["mine-1", "after"]


async def test_bad_requests_are_refused_at_enqueue(tmp_path: Path) -> None:
    app, _ = recorder()
    settings = AsyncSettings(max_body=1024, callback_hosts=("127.0.0.1:9",))
    async with async_rig(tmp_path, {"echo": app}, settings=settings, start_workers=False) as rig:
        status, headers, body = await rig.enqueue("/async-function/nope")
        assert status == 404 and "nope" in json.loads(body)["error"]
        status, _, _ = await rig.enqueue("/async-function/echo.other-ns")
        assert status == 404
        status, _, body = await rig.enqueue("/async-function/echo", body=b"x" * 1025)
        assert status == 413 and "1024" in json.loads(body)["error"]
        for bad in ("not a url", "ftp://127.0.0.1/x", "http:///nohost", "http://h:99999/"):
            status, _, body = await rig.enqueue(
                "/async-function/echo", headers={"X-Callback-Url": bad}
            )
            assert status == 400, bad
            assert "X-Callback-Url" in json.loads(body)["error"]
        status, _, body = await rig.enqueue(
            "/async-function/echo", headers={"X-Callback-Url": "http://10.0.0.1:9/x"}
        )
        assert status == 400 and "callback_hosts" in json.loads(body)["error"]
        status, _, _ = await rig.enqueue(
            "/async-function/echo", headers={"X-Call-Id": "spaces are bad"}
        )
        assert status == 400
        assert await rig.queue.find() == []
        # Within the limits: accepted.
        status, _, _ = await rig.enqueue(
            "/async-function/echo",
            body=b"x" * 1024,
            headers={"X-Callback-Url": "http://127.0.0.1:9/x"},
        )
        assert status == 202


async def test_cancel_a_job_that_has_not_started(tmp_path: Path) -> None:
    app, seen = recorder()
    sink = CallbackSink()
    await sink.up()
    try:
        async with async_rig(tmp_path, {"echo": app}, start_workers=False) as rig:
            hook = {"X-Callback-Url": sink.url}
            _, headers, _ = await rig.enqueue("/async-function/echo", headers=hook)
            call_id = headers["X-Call-Id"]
            status, _, body = await rig.enqueue(f"/async-function/{call_id}", method="DELETE")
            assert (status, json.loads(body)["state"]) == (200, "cancelled")
            status, _, _ = await rig.enqueue(f"/async-function/{call_id}", method="DELETE")
            assert status == 409
            status, _, _ = await rig.enqueue("/async-function/unknown-id", method="DELETE")
            assert status == 404
            await rig.enqueue("/async-function/echo", headers={**hook, "X-Call-Id": "later"})
            await rig.workers.start()
            await sink.wait_for(1, 20)
            await rig.workers.close(5.0)
            stored = await rig.queue.get(call_id)
            assert stored is not None and stored.state == "cancelled"
    finally:
        await sink.down()
    assert [s["headers"]["X-Call-Id"] for s in seen] == ["later"]


async def test_delete_to_a_function_is_a_call_not_a_cancel(tmp_path: Path) -> None:
    app, seen = recorder()
    sink = CallbackSink()
    await sink.up()
    try:
        async with async_rig(tmp_path, {"echo": app}, start_workers=False) as rig:
            # A queued job whose id is also the function's name.
            await rig.enqueue(
                "/async-function/echo", headers={"X-Call-Id": "echo", "X-Callback-Url": sink.url}
            )
            status, headers, _ = await rig.enqueue(
                "/async-function/echo",
                method="DELETE",
                headers={"X-Callback-Url": sink.url, "X-Call-Id": "del-1"},
            )
            assert (status, headers["X-Call-Id"]) == (202, "del-1")
            queued = await rig.queue.get("echo")
            assert queued is not None and queued.state == "queued"  # not cancelled
            # Not a call id (a space): no function, no cancel.
            status, _, body = await rig.enqueue("/async-function/a%20b", method="DELETE")
            assert status == 404 and "no function" in json.loads(body)["error"]
            await rig.workers.start()
            await sink.wait_for(2, 20)
            await rig.workers.close(5.0)
    finally:
        await sink.down()
    assert sorted((s["method"], s["headers"]["X-Call-Id"]) for s in seen) == [
        ("DELETE", "del-1"),
        ("POST", "echo"),
    ]


async def test_bodies_over_the_limit_are_413_streamed_or_announced(tmp_path: Path) -> None:
    app, _ = recorder()
    settings = AsyncSettings(max_body=1024)
    async with async_rig(tmp_path, {"echo": app}, settings=settings, start_workers=False) as rig:

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield b"x" * 600  # chunked: no Content-Length to refuse it by

        status, _, body = await rig.enqueue("/async-function/echo", body=chunks())
        assert status == 413 and "1024" in json.loads(body)["error"]
        # An announced length over the limit is refused before its body is read: the answer
        # comes though the client sends nothing after the head.
        port = int(rig.url.rsplit(":", 1)[1])
        raw = await exchange(
            port,
            b"POST /async-function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n",
        )
        assert raw.startswith(b"HTTP/1.1 413"), raw[:200]
        assert await rig.queue.find() == []
