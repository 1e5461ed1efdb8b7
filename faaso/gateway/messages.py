"""What the proxy says when it answers for a function, and the headers it adds: one wording for
both front-ends (the fast path and the aiohttp path)."""

from __future__ import annotations

import itertools
import os

from aiohttp import web

from faaso.gateway.fast import http1

# Hop-by-hop header names (RFC 9110 7.6.1), lowercased: the fast path's list, as text.
HOP_BY_HOP = frozenset(name.decode() for name in http1.HOP_BY_HOP)
INTERNAL_HEADER = "X-OpenFaaS-Internal"
CALL_ID = "X-Call-Id"
START_TIME = "X-Start-Time"
DURATION = "X-Duration-Seconds"
COLD_START = "X-Faaso-Cold-Start"  # on a response that had to wake its function: paused|cold
RETRY_AFTER_WAKE = "2"  # seconds, on the 503 of a request whose wake did not finish in time
CLIENT_GONE = 499  # nginx's code for "the client closed the connection": metrics only

# Call ids: a random prefix per process and a counter, as unique as uuid4 without a system call
# per request.
_CALL_PREFIX = os.urandom(8).hex()
_CALL_COUNTER = itertools.count(1)


def new_call_id() -> str:
    return f"{_CALL_PREFIX}{next(_CALL_COUNTER):016x}"


# What the proxy says when it answers for a function: the same words on both paths.
def msg_not_routed(path: str) -> str:
    return f"no function is routed at {path}"


def msg_too_many(function: str, limit: int) -> str:
    return (
        f"function {function!r} already has {limit} requests in flight "
        "(its max_inflight); try again later"
    )


def msg_not_ready(function: str) -> str:
    return f"function {function!r} has no ready instance"


def msg_wake_timed_out(function: str, how: str) -> str:
    return f"function {function!r} is waking from zero ({how}) and was not ready within its timeout"


def msg_timed_out(function: str) -> str:
    return f"function {function!r} did not answer within its timeout"


def msg_cannot_connect(function: str, reason: str) -> str:
    return f"cannot connect to function {function!r}: {reason}"


def json_error(status: int, message: str, **extra: object) -> web.Response:
    """A proxy-made error: JSON body, marked so clients can tell it from the function's own."""
    return web.json_response(
        {"error": message, **extra}, status=status, headers={INTERNAL_HEADER: "proxy"}
    )
