"""``faaso invoke --async`` and ``faaso async list|show|cancel|replay|purge``, each run as its own
``python -m faaso`` process against the real gateway with its /system API (basic auth), a real
queue, real workers and real function servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from aiohttp import web

from faaso.spec.function import FunctionSpec
from tests.helpers import RIG_PASSWORD, ROOT, AsyncRig, CallbackSink, async_rig, eventually


@dataclass
class Run:
    code: int
    out: str
    err: str


async def faaso(rig: AsyncRig, *argv: str, password: str = RIG_PASSWORD) -> Run:
    env = {k: v for k, v in os.environ.items() if k not in ("FAASO_GATEWAY", "FAASO_PASSWORD")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "faaso",
        *argv,
        "--gateway",
        rig.url,
        "--password",
        password,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def recorder(statuses: list[int]) -> tuple[web.Application, list[dict[str, str]]]:
    """A function answering ``statuses`` in turn (then 200); records each call."""
    seen: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.text()
        seen.append(
            {
                "method": request.method,
                "path": request.raw_path,
                "body": body,
                "call": request.headers.get("X-Call-Id", ""),
                "x": request.headers.get("X-Extra", ""),
            }
        )
        status = statuses.pop(0) if statuses else 200
        return web.Response(status=status, text=f"answer {status}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app, seen


async def test_invoke_async_prints_the_call_id_and_the_callback_arrives(tmp_path: Path) -> None:
    app, seen = recorder([])
    sink = CallbackSink()
    await sink.up()
    try:
        async with async_rig(tmp_path, {"f": app}) as rig:
            run = await faaso(
                rig, "invoke", "f", "--async", "--callback", sink.url, "--call-id", "cli-1",
                "--path", "/sub?q=1", "--data", "hello", "-H", "X-Extra: yes",
            )  # fmt: skip
            assert (run.code, run.out, run.err) == (0, "cli-1\n", "")
            (callback,) = await sink.wait_for(1, 20)
            # Without --call-id the server's own id is printed.
            run = await faaso(rig, "invoke", "f", "--async")
            assert run.code == 0 and len(run.out.strip()) >= 8
            generated = run.out.strip()

            async def ran() -> bool:
                return any(s["call"] == generated for s in seen)

            await eventually(ran, 20, "the second call to run")
            # An unknown function is refused at once, with the server's message.
            run = await faaso(rig, "invoke", "nope", "--async")
            assert run.code != 0 and "nope" in run.err and "404" in run.err
    finally:
        await sink.down()
    assert seen[0] == {
        "method": "POST",
        "path": "/sub?q=1",
        "body": "hello",
        "call": "cli-1",
        "x": "yes",
    }
    assert callback.headers["X-Call-Id"] == "cli-1"
    assert callback.body == b"answer 200"


async def test_list_show_and_cancel(tmp_path: Path) -> None:
    app, _ = recorder([])
    async with async_rig(tmp_path, {"f": app}, start_workers=False) as rig:
        for call_id in ("q1", "q2"):
            run = await faaso(rig, "invoke", "f", "--async", "--call-id", call_id)
            assert run.code == 0, run.err
        run = await faaso(rig, "async", "list")
        assert run.code == 0
        header, *rows = run.out.splitlines()
        assert header.split()[:4] == ["CALL", "ID", "FUNCTION", "STATE"]
        assert [r.split()[:3] for r in rows] == [["q1", "f", "queued"], ["q2", "f", "queued"]]
        run = await faaso(rig, "async", "list", "--json", "--state", "queued", "--limit", "1")
        assert [j["callId"] for j in json.loads(run.out)] == ["q1"]
        run = await faaso(rig, "async", "show", "q2")
        assert run.code == 0
        shown = json.loads(run.out)
        assert (shown["callId"], shown["state"], shown["function"]) == ("q2", "queued", "f")
        run = await faaso(rig, "async", "cancel", "q1")
        assert (run.code, run.out) == (0, "cancelled q1\n")
        run = await faaso(rig, "async", "cancel", "q1")
        assert run.code != 0 and "only a queued call" in run.err
        run = await faaso(rig, "async", "show", "nope")
        assert run.code != 0 and "nope" in run.err and "404" in run.err
        run = await faaso(rig, "async", "list", "--state", "sleeping")
        assert run.code != 0 and "state must be one of" in run.err
        run = await faaso(rig, "async", "list", password="wrong")
        assert run.code != 0 and "401" in run.err
        stored = await rig.queue.get("q1")
        assert stored is not None and stored.state == "cancelled"


async def test_replay_and_purge(tmp_path: Path) -> None:
    app, seen = recorder([500, 500, 500])
    specs = {
        "f": FunctionSpec(
            name="f",
            image="test",
            annotations=MappingProxyType({"com.openfaas.retry.attempts": "1"}),
        )
    }
    async with async_rig(tmp_path, {"f": app}, specs=specs) as rig:
        for call_id in ("d1", "d2", "d3"):
            await faaso(rig, "invoke", "f", "--async", "--call-id", call_id)

        async def three_dead() -> bool:
            return len(await rig.queue.find(state="dead")) == 3

        await eventually(three_dead, 20, "three dead letters")
        run = await faaso(rig, "async", "list", "--state", "dead", "--json")
        assert sorted(j["callId"] for j in json.loads(run.out)) == ["d1", "d2", "d3"]
        run = await faaso(rig, "async", "replay", "d2")
        assert (run.code, run.out) == (0, "replayed 1 dead letter(s): d2\n")

        async def replayed() -> bool:
            job = await rig.queue.get("d2")
            return job is not None and job.state == "succeeded"

        await eventually(replayed, 20, "d2 replayed and succeeded")
        run = await faaso(rig, "async", "purge", "--function", "f")
        assert (run.code, run.out) == (0, "purged 2 dead letter(s): d1 d3\n")
        run = await faaso(rig, "async", "purge")
        assert (run.code, run.out) == (0, "purged 0 dead letter(s)\n")
        assert await rig.queue.find(state="dead") == []
    assert sorted(s["call"] for s in seen) == ["d1", "d2", "d2", "d3"]
