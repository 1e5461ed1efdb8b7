"""Asynchronous invocations: the rules both the gateway (enqueue) and the workers (run, retry,
call back) apply, with no I/O.

- :class:`RetryPolicy`: OpenFaaS Pro's retry annotations and their defaults
  (``com.openfaas.retry.attempts`` 10, ``.codes`` "429 502 500 504 408", ``.min_wait`` 5s,
  ``.max_wait`` 2m), exponential backoff with jitter, ``Retry-After`` honoured.
- :class:`CallbackHosts`: the allow-list of callback hosts (``host`` or ``host:port`` patterns,
  ``*`` wildcards); empty allows any host, as OpenFaaS does.
- :func:`parse_callback_url`: what a usable ``X-Callback-Url`` is.
"""

from __future__ import annotations

import email.utils
import fnmatch
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from yarl import URL

RETRY_ATTEMPTS = "com.openfaas.retry.attempts"
RETRY_CODES = "com.openfaas.retry.codes"
RETRY_MIN_WAIT = "com.openfaas.retry.min_wait"
RETRY_MAX_WAIT = "com.openfaas.retry.max_wait"
# faaso's own: how many jobs of the function run at once (the routes file's async_concurrency).
CONCURRENCY = "faaso.async.concurrency"

DEFAULT_ATTEMPTS = 10
DEFAULT_CODES = frozenset({429, 502, 500, 504, 408})
DEFAULT_MIN_WAIT = 5.0
DEFAULT_MAX_WAIT = 120.0
MAX_RETRY_AFTER = 3600.0  # a Retry-After further away than this is taken as this

# Job states, as GET /system/async/CALL-ID reports them.
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
DEAD = "dead"
CANCELLED = "cancelled"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, DEAD, CANCELLED)

# A caller's X-Call-Id is the job's key: printable, no spaces, bounded.
CALL_ID_RE = re.compile(r"^[A-Za-z0-9._:~+=@-]{1,128}$")

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str) -> float:
    """A Go duration (``5s``, ``2m``, ``1m30s``, ``250ms``) or a plain number of seconds.
    Raises ValueError. Written here because OpenFaaS's annotations use Go's syntax, which no
    Python library parses as such."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if value < 0 or value != value:
            raise ValueError("must not be negative")
        return value
    pos = 0
    total = 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError("not a duration; write e.g. 5s, 2m, 250ms")
    return total


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = DEFAULT_ATTEMPTS  # attempts in all, the first one included
    codes: frozenset[int] = DEFAULT_CODES
    min_wait: float = DEFAULT_MIN_WAIT
    max_wait: float = DEFAULT_MAX_WAIT

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str]) -> RetryPolicy:
        """The policy the function's annotations ask for. Raises ValueError naming the key."""
        attempts = DEFAULT_ATTEMPTS
        codes = DEFAULT_CODES
        min_wait = DEFAULT_MIN_WAIT
        max_wait = DEFAULT_MAX_WAIT
        if RETRY_ATTEMPTS in annotations:
            raw = annotations[RETRY_ATTEMPTS].strip()
            if not raw.isdigit() or not 1 <= int(raw) <= 1000:
                raise ValueError(f"{RETRY_ATTEMPTS}: must be a whole number from 1 to 1000")
            attempts = int(raw)
        if RETRY_CODES in annotations:
            parts = annotations[RETRY_CODES].replace(",", " ").split()
            if not all(p.isdigit() and 100 <= int(p) <= 599 for p in parts):
                raise ValueError(f"{RETRY_CODES}: must be HTTP status codes, e.g. '429 502 500'")
            codes = frozenset(int(p) for p in parts)
        for key in (RETRY_MIN_WAIT, RETRY_MAX_WAIT):
            if key in annotations:
                try:
                    value = parse_duration(annotations[key])
                except ValueError as exc:
                    raise ValueError(f"{key}: {exc}") from exc
                if key == RETRY_MIN_WAIT:
                    min_wait = value
                else:
                    max_wait = value
        if max_wait < min_wait:
            raise ValueError(f"{RETRY_MAX_WAIT}: must not be shorter than {RETRY_MIN_WAIT}")
        return cls(attempts=attempts, codes=codes, min_wait=min_wait, max_wait=max_wait)

    def retryable(self, status: int) -> bool:
        return status in self.codes

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 for the first): min_wait
        doubling per attempt, capped at max_wait, with "equal jitter" (half fixed, half random)
        so that jobs failing together do not come back together. A ``Retry-After`` from the
        function is a floor."""
        return backoff(attempt, self.min_wait, self.max_wait, retry_after)


def backoff(
    attempt: int, min_wait: float, max_wait: float, retry_after: float | None = None
) -> float:
    base = min(max_wait, min_wait * 2.0 ** max(0, min(attempt - 1, 60)))
    wait = base / 2 + random.uniform(0, base / 2)
    if retry_after is not None:
        wait = max(wait, min(retry_after, MAX_RETRY_AFTER))
    return wait


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delay-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_callback_url(value: str) -> URL:
    """An absolute http(s) URL with a host. Raises ValueError saying what is wrong."""
    if len(value) > 4096:
        raise ValueError("X-Callback-Url is longer than 4096 characters")
    try:
        url = URL(value)
    except ValueError as exc:
        raise ValueError(f"X-Callback-Url is not a URL: {exc}") from exc
    if url.scheme not in ("http", "https"):
        raise ValueError("X-Callback-Url must be an http:// or https:// URL")
    if not url.host:
        raise ValueError("X-Callback-Url has no host")
    try:
        _ = url.port
    except ValueError as exc:
        raise ValueError("X-Callback-Url has a bad port") from exc
    return url


def split_host_pattern(pattern: str) -> tuple[str, str]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port or "")."""
    pattern = pattern.strip().lower()
    if pattern.startswith("["):
        host, _, rest = pattern[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if pattern.count(":") == 1:
        host, _, port = pattern.partition(":")
        return host, port
    return pattern, ""


def valid_host_pattern(pattern: str) -> bool:
    """What the routes file accepts in ``async.callback_hosts``."""
    host, port = split_host_pattern(pattern)
    if port and port != "*" and not (port.isdigit() and 0 < int(port) < 65536):
        return False
    return bool(re.fullmatch(r"[a-z0-9*._:-]+", host))


@dataclass(frozen=True, slots=True)
class CallbackHosts:
    """``host`` or ``host:port`` patterns (``*`` matches within the host: ``*.example.com``,
    and a port of ``*`` any port). No pattern at all allows every host (OpenFaaS's
    behaviour)."""

    patterns: tuple[str, ...] = ()

    def allows(self, url: URL) -> bool:
        if not self.patterns:
            return True
        host = (url.host or "").lower().rstrip(".")
        port = str(url.port)
        for pattern in self.patterns:
            want_host, want_port = split_host_pattern(pattern)
            if want_port and want_port not in ("*", port):
                continue
            if fnmatch.fnmatchcase(host, want_host):
                return True
        return False


def check_async_annotations(annotations: Mapping[str, str]) -> str | None:
    """What is wrong with a function's asynchronous annotations (retries, concurrency), or
    None. Shared with API deployments."""
    try:
        RetryPolicy.from_annotations(annotations)
    except ValueError as exc:
        return str(exc)
    if CONCURRENCY in annotations:
        raw = annotations[CONCURRENCY].strip()
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            return f"{CONCURRENCY}: must be a whole number from 1 to 1000"
    return None
