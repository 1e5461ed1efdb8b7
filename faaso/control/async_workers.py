"""The asynchronous workers: they claim queued jobs, run them through the data plane, retry,
record the outcome and POST it to the caller's callback URL.

- Claims are leased (``LEASE`` seconds) and renewed while a job runs; a job whose worker died
  is queued again by :meth:`JobQueue.recover` (at once on start for every lease not ours).
- Concurrency: at most ``async_concurrency`` (routes file) or the ``faaso.async.concurrency``
  annotation (else ``async.concurrency``) jobs of one function at once, ``async.max_running``
  in all; each claim round shares the free slots one per function in turn, so a burst for one
  function does not hold another's job behind it. A function without a live instance is not
  claimed for (its jobs wait, their attempts untouched).
- Retries: OpenFaaS Pro's annotations (:class:`faaso.spec.asyncjob.RetryPolicy`), exponential
  backoff with jitter, ``Retry-After`` honoured; a job out of attempts is a dead letter.
- Callbacks: OpenFaaS's queue-worker headers (``X-Call-Id``, ``X-Function-Status``,
  ``X-Function-Name``, ``X-Duration-Seconds``) plus the function's own; a delivery that fails
  (no connection, timeout, 408, 429, 5xx) is retried with backoff up to
  ``async.callback_attempts``; hosts outside ``async.callback_hosts`` are refused.
- Shutdown: stop claiming, give running jobs the drain budget, put the rest back in the queue.

Each background loop is supervised here: an unexpected exception is logged and the loop
restarted after a short backoff (the generic task guard, when it lands, can replace
``_supervised``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Literal

import aiohttp
from multidict import CIMultiDict
from prometheus_client.core import Metric

from faaso.config.routes_file import AsyncSettings
from faaso.gateway import metrics
from faaso.gateway.invoke import Invocation, Invoker
from faaso.gateway.messages import CALL_ID, DURATION, HOP_BY_HOP, INTERNAL_HEADER
from faaso.guard import TaskGuard
from faaso.spec.asyncjob import (
    CONCURRENCY,
    DEAD,
    FAILED,
    SUCCEEDED,
    CallbackHosts,
    RetryPolicy,
    backoff,
    parse_callback_url,
    parse_retry_after,
)
from faaso.spec.function import FunctionSpec
from faaso.state.queue import FunctionQueue, Job, JobQueue

LEASE = 30.0  # seconds a claim lasts unless renewed
RENEW_EVERY = 10.0
UPKEEP_EVERY = 1.0  # seconds between refreshes of the queue's figures
RECOVER_EVERY = 5  # upkeep ticks between sweeps of expired leases and old jobs
CALLBACK_SLOTS = 32  # callbacks being delivered at once
CALLBACK_TIMEOUT = 10.0
IDLE_WAIT = 1.0  # longest wait of the dispatcher between looks at the queue

Outcome = Literal["delivered", "failed", "refused", "pending"]


class AsyncWorkers:
    def __init__(
        self,
        queue: JobQueue,
        invoker: Invoker,
        callback_session: aiohttp.ClientSession,
        *,
        functions: Callable[[], Iterable[str]],
        spec_of: Callable[[str], FunctionSpec | None],
        timeout_of: Callable[[str], float],
        settings: AsyncSettings,
        log: Any,
        lease: float = LEASE,
        renew_every: float = RENEW_EVERY,
    ) -> None:
        self.queue = queue
        self.settings = settings
        self.owner = os.urandom(8).hex()
        self._invoker = invoker
        self._session = callback_session
        self._functions = functions
        self._spec_of = spec_of
        self._timeout_of = timeout_of
        self._log = log
        self._lease = lease
        self._renew_every = renew_every
        self._wake = asyncio.Event()
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self._running: dict[str, tuple[asyncio.Task[None], str]] = {}
        self._per_function: defaultdict[str, int] = defaultdict(int)
        self._sending: dict[str, asyncio.Task[None]] = {}
        # Figures for /metrics and the function's status.
        self.stats: dict[str, FunctionQueue] = {}
        self.outcomes: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.attempts: defaultdict[str, int] = defaultdict(int)
        self.callbacks: defaultdict[str, int] = defaultdict(int)
        self.loop_restarts = 0
        # The loops run under the one task guard: a crash is logged, the loop restarted.
        self._guard = TaskGuard(log)
        self.draining = False  # close() is waiting for running jobs

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Queue again what a previous process left running, then start the loops."""
        jobs, callbacks = await self.queue.recover(time.time(), owner_alive=self.owner)
        if jobs or callbacks:
            self._log.info("async.recovered", jobs=jobs, callbacks=callbacks)
        self.stats = await self.queue.stats()
        for name, body in (
            ("dispatch", self._dispatch),
            ("renew", self._renew),
            ("upkeep", self._upkeep),
        ):
            self._loops.append(
                self._guard.spawn(f"async-{name}", body, on_crash=self._count_restart)
            )

    def _count_restart(self, _exc: BaseException) -> None:
        self.loop_restarts += 1

    def wake(self) -> None:
        """Something changed (a slot freed, jobs replayed): look at the queue now."""
        self._wake.set()

    def enqueued(self, function: str) -> None:
        """A job of ``function`` was enqueued: look at the queue if it could start now (when
        every slot is taken, the end of a running job is what wakes the dispatcher)."""
        if len(self._running) < self.settings.max_running and self._per_function[
            function
        ] < self.concurrency_of(function):
            self._wake.set()

    def stop_claiming(self) -> None:
        self._stopping = True
        self._wake.set()

    async def close(self, drain: float) -> None:
        """Stop claiming, let running jobs finish within ``drain`` seconds, put the rest
        back in the queue."""
        self.stop_claiming()
        dispatch = self._loops[0] if self._loops else None
        if dispatch is not None:
            dispatch.cancel()
            await asyncio.gather(dispatch, return_exceptions=True)
        busy = [t for t, _ in self._running.values()] + list(self._sending.values())
        if busy:
            self._log.info("async.draining", running=len(self._running), budget=drain)
            self.draining = True
            _, pending = await asyncio.wait(busy, timeout=drain)
            self.draining = False
        else:
            pending = set()
        left = [call_id for call_id, (task, _) in self._running.items() if task in pending]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in self._loops[1:]:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if left:
            released = await self.queue.release(self.owner, left)
            self._log.info("async.released", jobs=released)

    # -- claiming ----------------------------------------------------------------------------

    def concurrency_of(self, function: str) -> int:
        spec = self._spec_of(function)
        if spec is not None:
            if spec.async_concurrency is not None:
                return spec.async_concurrency
            raw = spec.annotations.get(CONCURRENCY, "").strip()
            if raw.isdigit() and int(raw) > 0:
                return int(raw)
        return self.settings.concurrency

    def _policy_of(self, function: str) -> RetryPolicy:
        spec = self._spec_of(function)
        if spec is None:
            return RetryPolicy()
        try:
            return RetryPolicy.from_annotations(spec.annotations)
        except ValueError as exc:  # API deployments are checked too; this is a safety net
            self._log.warning("async.bad_retry_annotations", function=function, error=str(exc))
            return RetryPolicy()

    async def _dispatch(self) -> None:
        while not self._stopping:
            self._wake.clear()
            if await self._claim_round():
                continue
            due = await self.queue.next_due()
            now = time.time()
            wait = IDLE_WAIT if due is None or due <= now else min(IDLE_WAIT, due - now)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _claim_round(self) -> int:
        now = time.time()
        total = self.settings.max_running - len(self._running)
        free: dict[str, int] = {}
        if total > 0:
            for function in self._functions():
                if not self._invoker.ready(function):
                    queued = self.stats.get(function)
                    if queued is not None and queued.queued > 0:
                        # A function at zero starts for its queued jobs; they are claimed
                        # once it is holding (its instance on the way) or live.
                        self._invoker.wake(function)
                    continue
                slots = self.concurrency_of(function) - self._per_function[function]
                if slots > 0:
                    free[function] = slots
            # The least served first: with one slot free, a function with nothing running
            # goes before one that already has jobs running.
            free = dict(sorted(free.items(), key=lambda kv: self._per_function[kv[0]]))
        cb_free = CALLBACK_SLOTS - len(self._sending)
        jobs, callbacks = await asyncio.gather(
            self.queue.claim(self.owner, free, total, now, self._lease),
            self.queue.claim_callbacks(self.owner, cb_free, now, self._lease),
        )
        if self._stopping:  # claimed while stopping: give them straight back
            if jobs:
                await self.queue.release(self.owner, [j.id for j in jobs])
            for job in callbacks:
                await self.queue.callback_done(
                    self.owner, job.id, outcome="pending", now=now, status=None,
                    error=None, retry_at=now,
                )  # fmt: skip
            return 0
        for job in jobs:
            self._per_function[job.function] += 1
            task = asyncio.create_task(self._run(job))
            self._running[job.id] = (task, job.function)
        for job in callbacks:
            self._sending[job.id] = asyncio.create_task(self._deliver(job))
        return len(jobs) + len(callbacks)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._renew_every)  # periodic, not a readiness wait
            ids = list(self._running) + list(self._sending)
            if ids:
                await self.queue.renew(self.owner, ids, time.time() + self._lease)

    async def _upkeep(self) -> None:
        tick = 0
        while True:
            self.stats = await self.queue.stats()
            if tick % RECOVER_EVERY == 0:
                now = time.time()
                jobs, callbacks = await self.queue.recover(now)
                if jobs or callbacks:
                    self._log.warning("async.leases_expired", jobs=jobs, callbacks=callbacks)
                    self.wake()
                await self.queue.expire(now - self.settings.retention)
            tick += 1
            await asyncio.sleep(UPKEEP_EVERY)  # periodic, not a readiness wait

    # -- running a job -----------------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        function = job.function
        try:
            await self._attempt(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The lease runs out and the job is queued again by the upkeep loop.
            self._log.exception("async.job_error", call_id=job.id, function=function)
        finally:
            self._running.pop(job.id, None)
            self._per_function[function] -= 1
            self._wake.set()

    async def _attempt(self, job: Job) -> None:
        function = job.function
        policy = self._policy_of(function)
        self.attempts[function] += 1
        result = await self._invoker.invoke(
            function,
            job.method,
            job.path,
            job.query,
            job.headers,
            job.body,
            self._timeout_of(function),
            job.id,
        )
        now = time.time()
        headers, body = _stored_response(result)
        if policy.retryable(result.status) and job.attempts < policy.attempts:
            retry_after = None
            for key, value in result.headers:
                if key.lower() == "retry-after":
                    retry_after = parse_retry_after(value)
            wait = policy.backoff(job.attempts, retry_after)
            if await self.queue.retry(
                self.owner, job.id, at=now + wait, status=result.status, error=result.internal
            ):
                self.outcomes[(function, "retried")] += 1
                self._log.info(
                    "async.retry",
                    call_id=job.id,
                    function=function,
                    status=result.status,
                    attempt=job.attempts,
                    wait=round(wait, 3),
                )
            return
        if policy.retryable(result.status):
            state = DEAD
        elif result.status < 400 and result.internal is None:
            state = SUCCEEDED
        else:
            state = FAILED
        if await self.queue.finish(
            self.owner,
            job.id,
            state=state,
            now=now,
            status=result.status,
            duration=result.duration,
            headers=headers,
            body=body,
            error=result.internal,
        ):
            self.outcomes[(function, state)] += 1
            if state == DEAD:
                self._log.warning(
                    "async.dead_letter", call_id=job.id, function=function, status=result.status
                )

    # -- callbacks ---------------------------------------------------------------------------

    async def _deliver(self, job: Job) -> None:
        try:
            outcome, status, error = await self._post(job)
            now = time.time()
            retry_at = None
            if outcome == "pending":
                if job.callback_attempts >= self.settings.callback_attempts:
                    outcome = "failed"
                else:
                    retry_at = now + backoff(
                        job.callback_attempts,
                        self.settings.callback_min_wait,
                        self.settings.callback_max_wait,
                    )
            await self.queue.callback_done(
                self.owner,
                job.id,
                outcome=outcome,
                now=now,
                status=status,
                error=error,
                retry_at=retry_at,
            )
            self.callbacks["retried" if outcome == "pending" else outcome] += 1
            if outcome != "delivered":
                self._log.info(
                    "async.callback",
                    call_id=job.id,
                    outcome=outcome,
                    status=status,
                    error=error,
                    attempt=job.callback_attempts,
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            self._log.exception("async.callback_error", call_id=job.id)
        finally:
            self._sending.pop(job.id, None)
            self._wake.set()

    async def _post(self, job: Job) -> tuple[Outcome, int | None, str | None]:
        assert job.callback_url is not None
        try:
            url = parse_callback_url(job.callback_url)
        except ValueError as exc:
            return "refused", None, str(exc)
        if not CallbackHosts(self.settings.callback_hosts).allows(url):
            return "refused", None, f"{url.host}:{url.port} is not in async.callback_hosts"
        headers = CIMultiDict(
            [
                (k, v)
                for k, v in job.response_headers
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"
            ]
        )
        headers[CALL_ID] = job.id
        headers["X-Function-Status"] = str(job.status if job.status is not None else 500)
        headers["X-Function-Name"] = job.function
        headers[DURATION] = f"{job.duration or 0.0:.6f}"
        try:
            async with self._session.post(
                url,
                data=job.response_body or b"",
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT),
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return "pending", None, f"{exc.__class__.__name__}: {exc}"
        if status < 400:
            return "delivered", status, None
        if status in (408, 429) or status >= 500:
            return "pending", status, f"the callback answered {status}"
        return "failed", status, f"the callback answered {status}"

    # -- figures -----------------------------------------------------------------------------

    def collect(self) -> list[Metric]:
        now = time.time()
        stats = self.stats
        depth = {f: float(s.queued) for f, s in stats.items()}
        running = {f: float(s.running) for f, s in stats.items()}
        dead = {f: float(s.dead) for f, s in stats.items()}
        oldest = {
            f: max(0.0, now - s.oldest_created)
            for f, s in stats.items()
            if s.oldest_created is not None
        }
        return [
            metrics.gauge("faaso_async_queue_depth", "Asynchronous jobs queued", depth),
            metrics.gauge("faaso_async_running", "Asynchronous jobs running", running),
            metrics.gauge("faaso_async_dead_letters", "Jobs out of retries", dead),
            metrics.gauge(
                "faaso_async_oldest_job_age_seconds", "Age of the oldest queued job", oldest
            ),
            metrics.counter(
                "faaso_async_jobs",
                "Asynchronous job attempts by outcome (succeeded, failed, dead, retried)",
                ["function_name", "outcome"],
                {(metrics.label(f), o): float(n) for (f, o), n in self.outcomes.items()},
            ),
            metrics.counter(
                "faaso_async_attempts",
                "Asynchronous job attempts started",
                ["function_name"],
                {(metrics.label(f),): float(n) for f, n in self.attempts.items()},
            ),
            metrics.counter(
                "faaso_async_callbacks",
                "Callback deliveries by outcome (delivered, retried, failed, refused)",
                ["outcome"],
                {(o,): float(n) for o, n in self.callbacks.items()},
            ),
        ]

    def pending(self, function: str) -> int:
        """Jobs queued or running for ``function``: the autoscaler keeps it from idling."""
        queued = self.stats.get(function)
        return self._per_function[function] + (queued.queued if queued is not None else 0)

    def queue_of(self, function: str) -> dict[str, Any]:
        """The function's queue, for its status."""
        s = self.stats.get(function, FunctionQueue())
        out: dict[str, Any] = {"queued": s.queued, "running": s.running, "dead": s.dead}
        if s.oldest_created is not None:
            out["oldestAgeSeconds"] = round(max(0.0, time.time() - s.oldest_created), 3)
        return out


def _stored_response(result: Invocation) -> tuple[tuple[tuple[str, str], ...], bytes]:
    """What is stored and called back: the function's answer, or faaso's JSON error."""
    if result.internal is None:
        return result.headers, result.body
    body = json.dumps({"error": result.internal}).encode()
    return (("Content-Type", "application/json"), (INTERNAL_HEADER, "proxy")), body
