"""What the UI's charts show: a few minutes of per-function samples, taken from live state.

A sampler (started and stopped with the UI app, restarted after an error) reads the gateway's
metrics and the supervisor every ``SAMPLE_EVERY`` seconds and keeps ``KEEP`` samples per
function: request rate, 5xx rate, latency p50/p95 over the last ``WINDOW`` samples (from the
duration histogram, interpolated inside a bucket as Prometheus's ``histogram_quantile`` does),
requests in flight, ready and desired replicas, and what the autoscaler sees (its observed load,
in the unit of the function's scale type) and wants (its desired replicas).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from faaso.api.handlers import HOLDER, ApiContext
from faaso.gateway.app import GatewayState
from faaso.gateway.metrics import BUCKETS
from faaso.logs import get_logger

SAMPLE_EVERY = 2.0  # seconds
KEEP = 150  # samples: five minutes
WINDOW = 15  # samples the latency quantiles are taken over (30 s)


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    count: int  # calls finished, cumulative
    errors: int  # 5xx, cumulative
    buckets: tuple[int, ...]  # duration histogram, cumulative per bucket
    rate: float  # calls per second since the previous sample
    error_rate: float  # 5xx per second since the previous sample
    p50: float | None  # seconds, over the window
    p95: float | None
    inflight: int
    available: int
    desired: int
    load: float | None = None  # the autoscaler's observed load (stable window), None: no view
    wanted: int | None = None  # the replicas the autoscaler wants


def quantile(q: float, counts: list[int]) -> float | None:
    """The q-quantile of a histogram with ``BUCKETS`` bounds (+Inf last); None when empty."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if seen + n >= rank and n > 0:
            if i >= len(BUCKETS):
                return BUCKETS[-1]  # in +Inf: the highest finite bound, as Prometheus does
            low = BUCKETS[i - 1] if i > 0 else 0.0
            return low + (BUCKETS[i] - low) * (rank - seen) / n
        seen += n
    return BUCKETS[-1]


class History:
    def __init__(self) -> None:
        self._samples: dict[str, deque[Sample]] = {}

    def samples(self, function: str) -> list[Sample]:
        return list(self._samples.get(function, ()))

    def latest(self, function: str) -> Sample | None:
        found = self._samples.get(function)
        return found[-1] if found else None

    def take(self, ctx: ApiContext, gateway: GatewayState, now: float) -> None:
        names = set(ctx.desired.effective().functions)
        for gone in set(self._samples) - names:
            del self._samples[gone]
        for name in names:
            count, errors, buckets = ctx.metrics.totals(name)
            series = self._samples.setdefault(name, deque(maxlen=KEEP))
            previous = series[-1] if series else None
            elapsed = now - previous.at if previous else 0.0
            rate = (count - previous.count) / elapsed if previous and elapsed > 0 else 0.0
            error_rate = (errors - previous.errors) / elapsed if previous and elapsed > 0 else 0.0
            base = series[-WINDOW] if len(series) >= WINDOW else (series[0] if series else None)
            window = [c - (base.buckets[i] if base else 0) for i, c in enumerate(buckets)]
            spec = ctx.desired.spec(name)
            view = ctx.autoscaler.status(name) if ctx.autoscaler is not None else None
            load = view.get("stable_load") if view else None
            wanted = view.get("desired") if view else None
            series.append(
                Sample(
                    at=now,
                    count=count,
                    errors=errors,
                    buckets=tuple(buckets),
                    rate=max(rate, 0.0),
                    error_rate=max(error_rate, 0.0),
                    p50=quantile(0.5, window),
                    p95=quantile(0.95, window),
                    inflight=gateway.pools.get(name).inflight(),
                    available=len(gateway.pools.get(name)),
                    desired=spec.replicas if spec else 0,
                    load=float(load) if isinstance(load, int | float) else None,
                    wanted=wanted if isinstance(wanted, int) else None,
                )
            )


HISTORY = web.AppKey("faaso_ui_history", History)
GATEWAY = web.AppKey("faaso_ui_gateway", GatewayState)


async def sampler_ctx(app: web.Application) -> AsyncIterator[None]:
    """The sampler, for the UI app's ``cleanup_ctx``: an error is logged and sampling goes on."""
    history = app[HISTORY]
    holder = app[HOLDER]
    gateway = app[GATEWAY]
    log = get_logger("faaso.ui")

    async def run() -> None:
        while True:
            try:
                if holder.ctx is not None:
                    history.take(holder.ctx, gateway, time.time())
            except Exception as exc:  # supervised: logged, and the next tick tries again
                log.error("ui.sampler_failed", error=str(exc), kind=type(exc).__name__)
            await asyncio.sleep(SAMPLE_EVERY)  # a fixed sampling period, not a wait for readiness

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
