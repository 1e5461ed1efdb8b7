"""The route table: URL path -> (function, the path the function sees).

A route ``/sum`` matches ``/sum``, ``/sum/`` and ``/sum/anything``; the longest prefix wins.
Every function is also at ``/function/<name>`` and ``/function/<name>.<namespace>`` (the OpenFaaS
convention): a function of the default namespace at both, one of another namespace (keyed
``name.namespace``, see :mod:`faaso.spec.function`) at the second only. A table is immutable:
a reload builds a new one and swaps it in one assignment, so a request sees either the old
table or the new one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from faaso.spec.function import function_key

ROUTE_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@%-]+$")
# Paths faaso itself answers; user routes may not shadow them.
RESERVED_PREFIXES = ("/function", "/async-function", "/system", "/healthz", "/metrics", "/_")


FUNCTION_PREFIX = "/function/"


@dataclass(frozen=True, slots=True)
class Match:
    function: str
    path: str  # what the function sees: always starts with '/'


class RouteTable:
    __slots__ = ("_functions", "_max_depth", "_routes")

    def __init__(self, routes: Mapping[str, str], functions: frozenset[str] | set[str]) -> None:
        self._routes = dict(routes)
        self._functions = frozenset(functions)
        self._max_depth = max((r.count("/") for r in self._routes if r != "/"), default=0)

    @property
    def functions(self) -> frozenset[str]:
        """The functions this table routes to (every one also at ``/function/<name>``)."""
        return self._functions

    def resolve(self, raw_path: str) -> Match | None:
        """Match a raw (still percent-encoded) request path, without its query string."""
        if raw_path.startswith(FUNCTION_PREFIX):
            return self._resolve_function(raw_path)
        routes = self._routes
        if not routes:
            return None
        # Try the path itself, then each shorter prefix ending at a '/', longest first.
        candidate = raw_path.rstrip("/") or "/"
        depth = candidate.count("/")
        if depth > self._max_depth:
            candidate = "/".join(candidate.split("/", self._max_depth + 1)[: self._max_depth + 1])
        while True:
            target = routes.get(candidate)
            if target is not None:
                rest = raw_path[len(candidate) :] if candidate != "/" else raw_path
                return Match(target, rest if rest.startswith("/") else "/" + rest)
            if candidate == "/":
                return None
            cut = candidate.rfind("/")
            candidate = candidate[:cut] or "/"

    def _resolve_function(self, raw_path: str) -> Match | None:
        rest = raw_path[len(FUNCTION_PREFIX) :]
        name, slash, sub = rest.partition("/")
        # name.namespace -> the function's key (the name alone in the default namespace)
        base, dot, namespace = name.partition(".")
        key = function_key(base, namespace)
        if (dot and not namespace) or key not in self._functions:
            return None
        return Match(key, "/" + sub if slash else "/")


def normalise_route(prefix: str) -> str:
    """``/sum/`` -> ``/sum``; ``/`` stays ``/``. Does not validate."""
    stripped = prefix.rstrip("/")
    return stripped or "/"
