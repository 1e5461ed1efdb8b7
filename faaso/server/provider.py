"""Provider mode: faaso behind a real OpenFaaS gateway (its ``functions_provider_url``).

The gateway then answers ``/system/info`` itself, nesting the provider's shape (which the API
gives in this mode, :func:`faaso.api.handlers.info`), and exports the ``gateway_*`` metrics
itself. A Prometheus that scrapes both must not count a call twice, so in this mode faaso's
copies of the gateway's metrics are renamed ``faaso_*`` (``faaso_function_invocation_total``,
``faaso_functions_seconds``, ``faaso_function_invocation_started``, ``faaso_service_count``);
faaso's own metrics keep their names.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from faaso.gateway.metrics import Metrics

GATEWAY_PREFIX = "gateway_"
PROVIDER_PREFIX = "faaso_"


def _renamed(name: str) -> str:
    if name.startswith(GATEWAY_PREFIX):
        return PROVIDER_PREFIX + name[len(GATEWAY_PREFIX) :]
    return name


def _rename(family: Metric) -> Metric:
    out = Metric(_renamed(family.name), family.documentation, family.type, family.unit)
    out.samples = [s._replace(name=_renamed(s.name)) for s in family.samples]
    return out


class _Renaming(Collector):
    """A registry view: what ``registry`` collects, with the gateway's names renamed."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return [_rename(family) for family in self._registry.collect()]


class ProviderMetrics(Metrics):
    """The gateway's metrics, exported under faaso's names (the scrape-time view only: the
    counts, and what the autoscaler and the API read, are the same)."""

    def render(self) -> bytes:
        return generate_latest(_Renaming(self.registry))
