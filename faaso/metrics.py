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

from collections import defaultdict
from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from faaso.openfaas import NAMESPACE

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
disable_created_metrics()  # type: ignore[no-untyped-call]  # the gateway has no *_created


def label(function: str) -> str:
    return f"{function}.{NAMESPACE}"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._invocations = Counter(
            "gateway_function_invocation",
            "Function invocations by status code",
            ["function_name", "code"],
            registry=self.registry,
        )
        self._seconds = Histogram(
            "gateway_functions_seconds",
            "Function call duration, end to end through faaso",
            ["function_name", "code"],
            registry=self.registry,
        )
        self._started = Gauge(
            "gateway_function_invocation_started",
            "Function invocations started",
            ["function_name"],
            registry=self.registry,
        )
        self._counts: defaultdict[str, int] = defaultdict(int)

    def started(self, function: str) -> None:
        self._started.labels(label(function)).inc()

    def finished(self, function: str, status: int, seconds: float) -> None:
        name = label(function)
        code = str(status)
        self._invocations.labels(name, code).inc()
        self._seconds.labels(name, code).observe(seconds)
        self._counts[function] += 1

    def invocations(self, function: str) -> int:
        return self._counts.get(function, 0)

    def add_collector(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Metrics read at scrape time from live state (supervisor, pools, reloader)."""
        self.registry.register(_Callback(collect))

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
