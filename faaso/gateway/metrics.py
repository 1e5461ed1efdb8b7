"""Prometheus metrics with the OpenFaaS gateway's names and labels, plus faaso's own.

- ``gateway_function_invocation_total{function_name, code}`` (counter)
- ``gateway_functions_seconds{function_name, code}`` (histogram)
- ``gateway_function_invocation_started{function_name}`` (exported as a gauge that only grows:
  the Python client would append ``_total`` to a counter, and dashboards look for this name)
- ``gateway_service_count{function_name}`` (desired replicas)
- ``faaso_function_inflight``, ``faaso_function_available_replicas``,
  ``faaso_function_restarts_total``, ``faaso_reloads_total{result}``

``function_name`` is ``<name>.openfaas-fn``, as the gateway writes it. Each app has its own
registry, so two servers in one process (tests) never share counts.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from faaso.spec.function import NAMESPACE

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
disable_created_metrics()  # type: ignore[no-untyped-call]  # the gateway has no *_created


def label(function: str) -> str:
    return function if "." in function else f"{function}.{NAMESPACE}"  # key of another namespace


# The Prometheus client's default buckets, as the OpenFaaS gateway uses them.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


_BOUNDS = (*map(floatToGoString, BUCKETS), "+Inf")


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0


class Metrics:
    """Counts kept in plain dicts on the request path (a few hundred nanoseconds per request,
    no locks: everything runs on the event loop) and turned into metric families at scrape
    time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._started: defaultdict[str, int] = defaultdict(int)
        self._finished: defaultdict[tuple[str, int], _Histogram] = defaultdict(_Histogram)
        self._counts: defaultdict[str, int] = defaultdict(int)
        self.registry.register(_Callback(self._collect))

    def started(self, function: str) -> None:
        self._started[function] += 1

    def finished(self, function: str, status: int, seconds: float) -> None:
        histogram = self._finished[(function, status)]
        histogram.counts[bisect_left(BUCKETS, seconds)] += 1
        histogram.total += seconds
        self._counts[function] += 1

    def started_count(self, function: str) -> int:
        """Requests started for a function so far (the autoscaler's request rate)."""
        return self._started.get(function, 0)

    def invocations(self, function: str) -> int:
        return self._counts.get(function, 0)

    def totals(self, function: str) -> tuple[int, int, list[int]]:
        """Calls finished so far, how many of them were 5xx, and their duration histogram
        (one count per bucket of ``BUCKETS``, then +Inf). For the UI's charts."""
        count = errors = 0
        buckets = [0] * (len(BUCKETS) + 1)
        for (name, status), histogram in self._finished.items():
            if name != function:
                continue
            n = sum(histogram.counts)
            count += n
            if status >= 500:
                errors += n
            for i, c in enumerate(histogram.counts):
                buckets[i] += c
        return count, errors, buckets

    def add_collector(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Metrics read at scrape time from live state (supervisor, pools, reloader)."""
        self.registry.register(_Callback(collect))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def _collect(self) -> list[Metric]:
        invocations = CounterMetricFamily(
            "gateway_function_invocation",
            "Function invocations by status code",
            labels=["function_name", "code"],
        )
        seconds = HistogramMetricFamily(
            "gateway_functions_seconds",
            "Function call duration, end to end through faaso",
            labels=["function_name", "code"],
        )
        for (function, status), histogram in sorted(self._finished.items()):
            labels = [label(function), str(status)]
            count = sum(histogram.counts)
            invocations.add_metric(labels, count)
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip(_BOUNDS, histogram.counts, strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            seconds.add_metric(labels, buckets, histogram.total)
        started = GaugeMetricFamily(
            "gateway_function_invocation_started",
            "Function invocations started",
            labels=["function_name"],
        )
        for function, n in sorted(self._started.items()):
            started.add_metric([label(function)], n)
        return [invocations, seconds, started]


class _Callback(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()

    def describe(self) -> Iterable[Metric]:
        return []


def gauge(name: str, documentation: str, values: dict[str, float]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=["function_name"])
    for function, value in sorted(values.items()):
        family.add_metric([label(function)], value)
    return family


def counter(
    name: str, documentation: str, labels: list[str], values: dict[tuple[str, ...], float]
) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family
