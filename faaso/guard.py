"""Long-lived background tasks that cannot die silently.

Every loop that runs for the life of the server (the reload loop and file watcher, the engine
watcher, each controller's reconcile and probe loops, and later the autoscaler and the async
workers) runs under a :class:`TaskGuard`. When the loop raises anything but a cancellation, the
guard logs the exception with its traceback (``task.crashed``), waits a backoff (doubling from
``Backoff.base`` up to ``Backoff.cap``; a run that lasted ``Backoff.stable_after`` seconds resets
it) and starts the loop again (``task.restarted``). A loop that returns has finished its work
and is not restarted. ``close()`` cancels every task and waits for them.

It sits in the bottom layer (it imports nothing of faaso), so config, control and anything above
can use it. asyncio's TaskGroup ends the group on the first failure and aiojobs' Scheduler only
reports it; neither restarts, which is the point here, so this is written by hand.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between restarts of a crashing task."""

    base: float = 0.5
    cap: float = 30.0
    stable_after: float = 60.0  # a run at least this long resets the delay to ``base``

    def delay(self, crashes_in_a_row: int) -> float:
        """``base`` after the first crash, doubling after each further one, capped."""
        exponent = min(max(crashes_in_a_row - 1, 0), 30)
        return float(min(self.base * (1 << exponent), self.cap))


class TaskGuard:
    """Runs named coroutines as tasks; a crash is logged and the coroutine started again."""

    def __init__(self, log: FilteringBoundLogger, backoff: Backoff | None = None) -> None:
        self._log = log
        self._backoff = backoff or Backoff()
        self._tasks: dict[asyncio.Task[None], str] = {}
        self.crashes: dict[str, int] = {}  # by task name, since the guard was made

    def spawn(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        restart: bool = True,
        on_crash: Callable[[BaseException], None] | None = None,
    ) -> asyncio.Task[None]:
        """Start ``run()`` as a task named ``name``.

        ``restart=False`` is for one-shot work (bringing a function up): a crash is still
        logged, then the task ends. ``on_crash`` is told of each crash (say, to show it on
        /healthz) before the backoff.
        """
        task = asyncio.create_task(self._guarded(name, run, restart, on_crash), name=name)
        self._tasks[task] = name
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    def names(self) -> list[str]:
        """The tasks still running (restarting counts as running)."""
        return sorted(self._tasks.values())

    async def close(self) -> None:
        """Cancel every task and wait until they have all ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _guarded(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        restart: bool,
        on_crash: Callable[[BaseException], None] | None,
    ) -> None:
        in_a_row = 0
        while True:
            started = time.monotonic()
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the point of the guard: anything a loop did not expect
                self.crashes[name] = self.crashes.get(name, 0) + 1
                stable = time.monotonic() - started >= self._backoff.stable_after
                in_a_row = 1 if stable else in_a_row + 1
                delay = self._backoff.delay(in_a_row) if restart else None
                self._log.exception(
                    "task.crashed",
                    task=name,
                    error=f"{type(exc).__name__}: {exc}",
                    restart_in=delay,
                )
                if on_crash is not None:
                    try:
                        on_crash(exc)
                    except Exception:  # a broken callback must not stop the restart
                        self._log.exception("task.on_crash_failed", task=name)
                if not restart:
                    return
                await asyncio.sleep(delay or 0.0)  # restart backoff
                self._log.info("task.restarted", task=name, crashes=self.crashes[name])
                continue
            return
