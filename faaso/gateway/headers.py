"""Header rewriting, written once for both front-ends, on raw header fields.

A field is ``(name as sent, lowercased name, value as sent)``, in bytes: the fast path's parser
makes them directly, and the aiohttp path builds them from ``raw_headers``. The rules:

- requests: hop-by-hop fields and those the client names in ``Connection`` go (never the
  message's framing or Host); ``X-Forwarded-For`` gets the peer appended, ``X-Forwarded-Host``
  and ``-Proto`` are added when absent; ``X-Call-Id`` is the client's or a new one;
  ``X-Start-Time`` is always the proxy's (a client cannot set it).
- responses: hop-by-hop fields and those the function names in ``Connection`` go (never the
  framing); ``X-Call-Id``, ``X-Start-Time`` and ``X-Duration-Seconds`` are the proxy's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from faaso.gateway.fast.http1 import HOP_BY_HOP
from faaso.gateway.messages import new_call_id

Field = tuple[bytes, bytes, bytes]
Pair = tuple[bytes, bytes]

# Content-Length is written by each front-end for the body it sends; X-Start-Time only ever
# comes from the proxy.
_DROP_UPSTREAM = HOP_BY_HOP | {b"content-length", b"x-start-time"}
_DROP_DOWNSTREAM = HOP_BY_HOP | {b"x-call-id", b"x-duration-seconds", b"x-start-time"}
# Request fields read while copying them.
_READ_UPSTREAM = frozenset(
    {b"x-forwarded-for", b"x-call-id", b"host", b"x-forwarded-host", b"x-forwarded-proto"}
)
# What a Connection header may not remove: the message's framing, and the request's Host.
FRAMING = frozenset({b"content-length", b"host"})
_NONE: frozenset[bytes] = frozenset()


def connection_tokens(fields: Iterable[Field]) -> frozenset[bytes]:
    """The lowercased names listed in the ``Connection`` fields."""
    tokens = [
        token
        for _, lname, value in fields
        if lname == b"connection"
        for token in (part.strip(b" \t").lower() for part in value.split(b","))
        if token
    ]
    return frozenset(tokens) if tokens else _NONE


def call_id_of(fields: Iterable[Field]) -> str:
    """The client's ``X-Call-Id`` when it sent one, else a new id (for proxy-made errors)."""
    for _, lname, value in fields:
        if lname == b"x-call-id":
            value = value.strip(b" \t")
            if value:
                return value.decode("latin-1")
    return new_call_id()


def upstream_fields(
    fields: Iterable[Field], tokens: frozenset[bytes], peer: bytes, proto: bytes = b"http"
) -> tuple[str, bytes, list[Pair]]:
    """The request's fields as the instance gets them: (call id, start time, pairs).

    ``tokens`` are the request's Connection tokens (:func:`connection_tokens`). Values copied
    from the client are kept byte for byte (leading whitespace included).
    """
    drop = _DROP_UPSTREAM
    if tokens:
        drop = drop | (tokens - FRAMING)
    out: list[Pair] = []
    forwarded_for: bytes | None = None
    host: bytes | None = None
    forwarded_host = forwarded_proto = False
    call_id: bytes | None = None
    for name, lname, value in fields:
        if lname in drop:
            continue
        if lname in _READ_UPSTREAM:
            if lname == b"x-forwarded-for":
                value = value.strip(b" \t")
                forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
                continue
            if lname == b"x-call-id":
                value = value.strip(b" \t")
                if call_id is None and value:
                    call_id = value
                continue
            if lname == b"host":
                host = value.strip(b" \t")
            elif lname == b"x-forwarded-host":
                forwarded_host = True
            else:
                forwarded_proto = True
        out.append((name, value))
    out.append(
        (b"X-Forwarded-For", forwarded_for + b", " + peer if forwarded_for is not None else peer)
    )
    if not forwarded_host and host is not None:
        out.append((b"X-Forwarded-Host", host))
    if not forwarded_proto:
        out.append((b"X-Forwarded-Proto", proto))
    text_id = call_id.decode("latin-1") if call_id is not None else new_call_id()
    start = str(time.time_ns()).encode()
    out.append((b"X-Call-Id", text_id.encode("latin-1")))
    out.append((b"X-Start-Time", start))
    return text_id, start, out


def downstream_fields(
    fields: Iterable[Field],
    tokens: frozenset[bytes],
    call_id: str,
    start: bytes,
    duration: float,
    *,
    drop_length: bool = False,
) -> list[Pair]:
    """The response's fields as the client gets them (without framing of the front-end's own).

    ``drop_length``: the body goes out with another framing, so a Content-Length would lie.
    """
    drop = _DROP_DOWNSTREAM
    if tokens:
        drop = drop | (tokens - FRAMING)
    if drop_length:
        drop = drop | {b"content-length"}
    out = [(name, value) for name, lname, value in fields if lname not in drop]
    out.append((b"X-Call-Id", call_id.encode("latin-1")))
    out.append((b"X-Start-Time", start))
    out.append((b"X-Duration-Seconds", b"%.6f" % duration))
    return out


def raw_fields(raw: Iterable[tuple[bytes, bytes]]) -> list[Field]:
    """Fields from aiohttp's ``raw_headers`` (name, value) pairs."""
    return [(name, name.lower(), value) for name, value in raw]
