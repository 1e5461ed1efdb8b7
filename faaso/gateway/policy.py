"""Limits the data plane applies the same way on both front-ends."""

from __future__ import annotations

# Seconds an idle kept-alive connection to a function instance is kept, on both paths (the fast
# path's own pool and aiohttp's connector). Below Node's default keepAliveTimeout (5 s) so the
# proxy, not the instance, closes an idle connection: a request written into a connection the
# instance is closing at that moment is lost for a non-idempotent method.
UPSTREAM_IDLE = 4.0
UPSTREAM_IDLE_MAX = 256  # idle connections kept per instance address (fast path)
SMALL_BODY = 64 * 1024  # request bodies up to this are buffered and relayed by the fast path
