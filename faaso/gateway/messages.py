"""What the proxy says when it answers for a function, and the headers it adds: one wording and
one error body for both front-ends (the fast path and the aiohttp path) and for programmatic
callers of :mod:`faaso.gateway.admission`."""

from __future__ import annotations

import itertools
import json
import os
from http import HTTPStatus

from faaso.gateway.fast import http1
from faaso.logs import get_logger

# Hop-by-hop header names (RFC 9110 7.6.1), lowercased: the fast path's list, as text.
HOP_BY_HOP = frozenset(name.decode() for name in http1.HOP_BY_HOP)
INTERNAL_HEADER = "X-OpenFaaS-Internal"
CALL_ID = "X-Call-Id"
START_TIME = "X-Start-Time"
DURATION = "X-Duration-Seconds"
COLD_START = "X-Faaso-Cold-Start"  # on a response that had to wake its function: paused|cold
RETRY_AFTER_WAKE = "2"  # seconds, on the 503 of a request whose wake did not finish in time
CLIENT_GONE = 499  # nginx's code for "the client closed the connection": metrics only
TIMEOUT_KEY = "timeout"  # the function's key in the routes file / deploy request that sets it

_log = get_logger("faaso.gateway")

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


def msg_timed_out(function: str, timeout: float) -> str:
    return (
        f"function {function!r} did not answer within its timeout of {timeout:g} s "
        f"(set by the function's {TIMEOUT_KEY!r} key)"
    )


def msg_cannot_connect(function: str, reason: str) -> str:
    return f"cannot connect to function {function!r}: {reason}"


def msg_closed(function: str) -> str:
    """The instance closed the connection before its response was complete (or began)."""
    return f"function {function!r} closed the connection before answering in full"


def msg_malformed(function: str, problem: str) -> str:
    return f"function {function!r} sent a malformed response: {problem}"


def error_body(message: str, function: str | None = None, **extra: str) -> bytes:
    """The JSON body of a proxy-made error: ``{"error": ..., "function": ...}``."""
    payload: dict[str, str] = {"error": message}
    if function is not None:
        payload["function"] = function
    payload.update(extra)
    return json.dumps(payload).encode()


def error_head(status: int, length: int, call_id: str | None, keep_alive: bool) -> bytes:
    """The HTTP/1.1 head of a proxy-made error, as the fast path writes it."""
    return (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {length}\r\n"
        f"{INTERNAL_HEADER}: proxy\r\n"
        + (f"{CALL_ID}: {call_id}\r\n" if call_id is not None else "")
        + ("" if keep_alive else "Connection: close\r\n")
        + "\r\n"
    ).encode("latin-1")


def log_proxy_error(status: int, message: str, function: str | None, call_id: str | None) -> None:
    """A proxy-made 5xx goes to the log with its call id (4xx are the client's business)."""
    if status >= 500:
        _log.warning(
            "gateway.proxy_error",
            status=status,
            function=function,
            call_id=call_id,
            error=message,
        )


def msg_cors_refused(function: str, why: str) -> str:
    return f"CORS preflight refused by function {function!r}'s policy: {why}"
