"""The asynchronous plane's composition: one queue's workers and intake, wired to a gateway.

:func:`compose` is what :mod:`faaso.server.app` runs when the server starts, and what the
tests' async rig runs in front of stand-in functions, so both are the same wiring: the workers
invoke through the gateway's admission, the intake wakes them, and both report to the
gateway's metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from faaso.config.routes_file import AsyncSettings
from faaso.control.async_workers import LEASE, RENEW_EVERY, AsyncWorkers
from faaso.gateway import metrics
from faaso.gateway.app import GatewayState
from faaso.gateway.async_enqueue import AsyncIntake
from faaso.gateway.invoke import Invoker
from faaso.spec.asyncjob import CallbackHosts
from faaso.spec.function import FunctionSpec
from faaso.state.queue import JobQueue


@dataclass(frozen=True, slots=True)
class AsyncPlane:
    """A queue with its workers and its enqueue endpoint's intake."""

    queue: JobQueue
    workers: AsyncWorkers
    intake: AsyncIntake

    def apply(self, settings: AsyncSettings) -> None:
        """A reloaded config's ``async:`` settings, for the jobs and enqueues that come next."""
        self.workers.settings = settings
        self.intake.hosts = CallbackHosts(settings.callback_hosts)
        self.intake.max_body = settings.max_body


def compose(
    queue: JobQueue,
    state: GatewayState,
    invoke_session: aiohttp.ClientSession,
    callback_session: aiohttp.ClientSession,
    *,
    settings: AsyncSettings,
    spec_of: Callable[[str], FunctionSpec | None],
    timeout_of: Callable[[str], float],
    log: Any,
    lease: float = LEASE,
    renew_every: float = RENEW_EVERY,
) -> AsyncPlane:
    """The workers and intake of ``queue`` in front of ``state``'s functions; their metrics
    are added to the gateway's. The workers are not started (``plane.workers.start()``)."""
    workers = AsyncWorkers(
        queue,
        Invoker(invoke_session, state.admission),
        callback_session,
        functions=lambda: state.routes.functions,
        spec_of=spec_of,
        timeout_of=timeout_of,
        settings=settings,
        log=log,
        lease=lease,
        renew_every=renew_every,
    )
    intake = AsyncIntake(
        queue,
        lambda: state.routes,
        wake=workers.enqueued,
        hosts=CallbackHosts(settings.callback_hosts),
        max_body=settings.max_body,
    )
    state.metrics.add_collector(workers.collect)
    state.metrics.add_collector(
        lambda: [
            metrics.counter(
                "faaso_async_enqueued",
                "Asynchronous jobs accepted",
                ["function_name"],
                {(metrics.label(f),): float(n) for f, n in intake.enqueued.items()},
            )
        ]
    )
    return AsyncPlane(queue, workers, intake)
