"""Long-lived tasks run under a guard: an unexpected exception is logged and the task restarted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog
from structlog.testing import capture_logs
from structlog.typing import FilteringBoundLogger

from faaso.config.reloader import Reloader
from faaso.config.routes_file import Config, load_config
from faaso.guard import Backoff, TaskGuard
from tests.helpers import eventually

FAST = Backoff(base=0.01, cap=0.02)


def logger() -> FilteringBoundLogger:
    log: FilteringBoundLogger = structlog.get_logger()
    return log


def test_backoff_doubles_up_to_the_cap() -> None:
    backoff = Backoff(base=0.5, cap=3.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


async def test_a_crash_is_logged_and_the_task_restarted() -> None:
    calls = 0
    second_run = asyncio.Event()
    crashes: list[BaseException] = []

    async def loop() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        second_run.set()
        await asyncio.Event().wait()  # runs until cancelled

    with capture_logs() as logs:
        guard = TaskGuard(logger(), FAST)
        guard.spawn("loop", loop, on_crash=crashes.append)
        await asyncio.wait_for(second_run.wait(), 10)
        assert guard.names() == ["loop"]
        await guard.close()
    assert guard.names() == []
    crashed = [e for e in logs if e["event"] == "task.crashed"]
    assert len(crashed) == 1
    assert crashed[0]["task"] == "loop" and crashed[0]["error"] == "RuntimeError: a bug"
    assert crashed[0]["log_level"] == "error" and crashed[0]["exc_info"] is True
    assert [e["task"] for e in logs if e["event"] == "task.restarted"] == ["loop"]
    assert [str(c) for c in crashes] == ["a bug"]
    assert guard.crashes == {"loop": 1}


async def test_one_shot_work_is_logged_not_restarted() -> None:
    calls = 0

    async def once() -> None:
        nonlocal calls
        calls += 1
        raise KeyError("missing")

    with capture_logs() as logs:
        guard = TaskGuard(logger(), FAST)
        task = guard.spawn("once", once, restart=False)
        await task
    assert calls == 1
    assert [e["event"] for e in logs] == ["task.crashed"]
    assert guard.names() == []


async def test_a_loop_that_returns_is_done() -> None:
    calls = 0

    async def finite() -> None:
        nonlocal calls
        calls += 1

    guard = TaskGuard(logger(), FAST)
    await guard.spawn("finite", finite)
    assert calls == 1


def _config(tmp_path: Path) -> Config:
    path = tmp_path / "routes.yml"
    path.write_text("functions:\n  hello: {image: faaso/debian:bookworm}\nroutes: {}\n")
    return load_config(path)


async def test_reload_loop_survives_an_unexpected_exception(tmp_path: Path) -> None:
    """A bug in applying a reload is logged, shown under ``reload``, and the loop reloads again."""
    applied: list[Config] = []
    calls = 0

    async def apply(config: Config) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise AttributeError("a bug in apply")
        applied.append(config)
        return {}

    with capture_logs() as logs:
        reloader = Reloader(_config(tmp_path), apply, logger(), watch=False)
        reloader.start()
        reloader.trigger()

        async def crashed() -> bool:
            return reloader.reloads_failed == 1

        await eventually(crashed, 10, "the crash to be recorded")
        assert reloader.last["ok"] is False
        assert "AttributeError: a bug in apply" in str(reloader.last["error"])

        async def restarted() -> bool:
            return any(e["event"] == "task.restarted" for e in logs)

        await eventually(restarted, 10, "the reload loop to restart")
        reloader.trigger()

        async def reloaded() -> bool:
            return len(applied) == 1

        await eventually(reloaded, 10, "the next reload to be applied")
        await reloader.close()
    assert reloader.last.get("ok") is True
    crashed_events = [e for e in logs if e["event"] == "task.crashed"]
    assert [e["task"] for e in crashed_events] == ["reload"]
