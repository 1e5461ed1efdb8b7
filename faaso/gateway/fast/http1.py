"""HTTP/1.1 message heads, strictly parsed, for the proxy's fast path.

The fast path (``faaso.gateway.fast.relay``) handles the common case itself: an HTTP/1.1
request with a small body, of known length or chunked. This module recognises that case and
nothing else. Whatever it does not accept, for any reason (HTTP/1.0, a ``Transfer-Encoding``
other than a lone ``chunked``, ``Upgrade``, ``Expect``, chunk extensions or trailers, obsolete
line folding, a bare LF, odd bytes), it answers ``None`` and the connection is handed to
aiohttp's full server, whose C parser (llhttp) then accepts or rejects the request. So this
parser only has to be right about what it accepts; it never has to produce an error itself.
A property test (tests/gateway/test_request_parser_agrees.py) checks that whatever it accepts,
llhttp parses the same way.

Why by hand and not httptools (llhttp): the fast path needs the byte offset where each
pipelined request ends, to hand the rest of the buffer to aiohttp untouched, and httptools does
not report it (only for upgrades); a strict regex over the head also costs less per request
than llhttp's per-header Python callbacks.

Responses from function instances are parsed here too, with their framing (length, chunked, or
until the connection closes), so bodies can be relayed byte for byte as they arrive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Final

# Methods the fast path takes (a response to HEAD has no body, whatever its framing fields say).
FAST_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"})
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS"})

# RFC 9110 7.6.1: meaningful for one connection only, never forwarded; compared lowercased.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Request target: origin form, visible ASCII only (llhttp refuses bytes above 0x7e in a target:
# such a request is aiohttp's to refuse, found by the property test).
_TARGET = re.compile(rb"/[\x21-\x7e]*")
# A block of header lines, each "token: value CRLF", value without control bytes except tab.
_FIELDS = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*\r\n)*")
_FIELD = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*")
_REQUEST_SPECIAL = frozenset(
    {b"host", b"content-length", b"connection", b"transfer-encoding", b"upgrade", b"expect"}
)
_RESPONSE_SPECIAL = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_NO_TOKENS: frozenset[bytes] = frozenset()
_DIGITS = re.compile(rb"[0-9]{1,18}")
_STATUS = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: ([\t\x20-\x7e\x80-\xff]*))?")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})(?:[ \t]*;[\t\x20-\x7e\x80-\xff]*)?")


@dataclass(slots=True)
class RequestHead:
    """A request the fast path may take: HTTP/1.1, a known (possibly zero) body length."""

    method: bytes
    target: bytes
    # (name as sent, lowercased name, value as sent after the colon, whitespace included) for
    # every field, in order: written back as name + b":" + value
    fields: list[tuple[bytes, bytes, bytes]]
    content_length: int  # for a chunked body: its decoded length, once it is whole
    length_given: bool  # a Content-Length field was sent (it may be 0), or the body was chunked
    keep_alive: bool
    connection_tokens: frozenset[bytes]  # lowercased names listed in Connection
    chunked: bool = False  # Transfer-Encoding: chunked (the body is read by dechunk)


def parse_request_head(head: bytes, max_body: int) -> RequestHead | None:
    """``head`` runs from the request line up to and including the blank line.

    None means "not for the fast path", never "invalid": aiohttp decides that.
    """
    line_end = head.find(b"\r\n")
    parts = head[:line_end].split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if version != b"HTTP/1.1" or method not in FAST_METHODS or not _TARGET.fullmatch(target):
        return None
    block = head[line_end + 2 : -2]
    if not _FIELDS.fullmatch(block):
        return None
    fields: list[tuple[bytes, bytes, bytes]] = []
    length: bytes | None = None
    connection: list[bytes] = []
    hosts = 0
    chunked = False
    for line in block.split(b"\r\n"):
        if not line:
            continue  # the split's last, empty, piece
        name, _, value = line.partition(b":")
        lname = name.lower()
        # Values are kept as they came (see RequestHead.fields); what is read is stripped.
        if lname in _REQUEST_SPECIAL:
            stripped = value.strip(b" \t")
            if lname == b"host":
                hosts += 1
            elif lname == b"content-length":
                if length is not None or not _DIGITS.fullmatch(stripped):
                    return None
                length = stripped
            elif lname == b"connection":
                connection.append(stripped)
            elif lname == b"transfer-encoding":
                # One field saying exactly "chunked"; any other coding, or a list, is aiohttp's
                # (and so is a trailing tab, which llhttp refuses there).
                if chunked or value.lstrip(b" \t").rstrip(b" ").lower() != b"chunked":
                    return None
                chunked = True
            else:  # upgrade, expect
                return None
        fields.append((name, lname, value))
    if chunked and length is not None:
        return None  # both framings: RFC 9112 6.3 says reject or trust TE; aiohttp decides
    content_length = int(length) if length is not None else 0
    if content_length > max_body or hosts != 1:  # RFC 9112 3.2: exactly one Host
        return None
    tokens = _tokens(connection)
    return RequestHead(
        method,
        target,
        fields,
        content_length,
        length is not None,
        b"close" not in tokens,
        tokens,
        chunked,
    )


# A chunk-size line the fast path takes: hex digits only (extensions are left to aiohttp).
_REQUEST_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,8}")
NEED_MORE: Final = -1  # dechunk: the body is not all there yet
NOT_FAST: Final = -2  # dechunk: not for the fast path (aiohttp decides)


def dechunk(buf: bytes | bytearray, pos: int, max_body: int) -> tuple[int, bytes]:
    """Decode a chunked request body that starts at ``buf[pos]``: (where it ends, the body).

    The end is NEED_MORE while it has not all arrived, NOT_FAST for anything but plain
    ``size CRLF data CRLF`` chunks ending in ``0 CRLF CRLF`` (no extensions, no trailers, CRLF
    everywhere) of at most ``max_body`` bytes in all; the body is then empty.
    """
    parts: list[bytes] = []
    total = 0
    size_of = len(buf)
    while True:
        eol = buf.find(b"\r\n", pos, pos + 10)
        if eol < 0:
            return (NEED_MORE if size_of - pos < 10 else NOT_FAST), b""
        line = buf[pos:eol]
        if not _REQUEST_CHUNK_SIZE.fullmatch(line):
            return NOT_FAST, b""
        size = int(line, 16)
        pos = eol + 2
        if size == 0:
            break
        total += size
        if total > max_body:
            return NOT_FAST, b""
        end = pos + size
        if size_of < end + 2:
            return NEED_MORE, b""
        if buf[end : end + 2] != b"\r\n":
            return NOT_FAST, b""
        parts.append(bytes(buf[pos:end]))
        pos = end + 2
    if size_of < pos + 2:
        return NEED_MORE, b""
    if buf[pos : pos + 2] != b"\r\n":
        return NOT_FAST, b""  # trailer fields: aiohttp's
    return pos + 2, b"".join(parts)


def _tokens(connection: list[bytes]) -> frozenset[bytes]:
    """The lowercased names listed in the Connection fields (``connection``: their values)."""
    if not connection:
        return _NO_TOKENS
    return frozenset(
        token
        for value in connection
        for token in (part.strip(b" \t").lower() for part in value.split(b","))
        if token
    )


class Framing(Enum):
    """How a response body ends."""

    NONE = 0  # 1xx, 204, 304: no body at all
    LENGTH = 1  # Content-Length bytes
    CHUNKED = 2  # chunked transfer coding, relayed as it is
    CLOSE = 3  # until the connection closes (no length, not chunked)


# The members as plain module globals: the hot path compares them per response, and an Enum
# class attribute lookup costs several times a global one.
NO_BODY: Final = Framing.NONE
LENGTH: Final = Framing.LENGTH
CHUNKED: Final = Framing.CHUNKED
CLOSE: Final = Framing.CLOSE


@dataclass(slots=True)
class ResponseHead:
    status: int
    status_line_rest: bytes  # "200 OK" as sent (code and reason)
    fields: list[tuple[bytes, bytes, bytes]]
    framing: Framing
    length: int  # with Framing.LENGTH
    keep_alive: bool  # the connection may carry another request afterwards
    connection_tokens: frozenset[bytes]


class BadResponse(Exception):
    """A function instance answered something that is not HTTP/1.x."""


def parse_response_head(head: bytes, to_head: bool = False) -> ResponseHead:
    """``to_head``: the request was HEAD, so there is no body whatever the fields say."""
    line_end = head.find(b"\r\n")
    status_line = head[:line_end]
    match = _STATUS.fullmatch(status_line)
    if match is None:
        raise BadResponse(f"bad status line {status_line[:80]!r}")
    minor, code = match.group(1), int(match.group(2))
    block = head[line_end + 2 : -2]
    if not _FIELDS.fullmatch(block):
        raise BadResponse("malformed header fields")
    fields: list[tuple[bytes, bytes, bytes]] = []
    length: int | None = None
    chunked = False
    encoded = False
    connection: list[bytes] = []
    for line in block.split(b"\r\n"):
        if not line:
            continue  # the split's last, empty, piece
        name, _, value = line.partition(b":")
        lname = name.lower()
        # Values are kept as they came (see RequestHead.fields); what is read is stripped.
        if lname in _RESPONSE_SPECIAL:
            stripped = value.strip(b" \t")
            if lname == b"content-length":
                if not _DIGITS.fullmatch(stripped) or (
                    length is not None and length != int(stripped)
                ):
                    raise BadResponse(f"bad Content-Length {stripped[:40]!r}")
                length = int(stripped)
            elif lname == b"transfer-encoding":
                encoded = True
                chunked = stripped.lower().rsplit(b",", 1)[-1].strip(b" \t") == b"chunked"
            else:
                connection.append(stripped)
        fields.append((name, lname, value))
    tokens = _tokens(connection)
    keep_alive = b"close" not in tokens if minor == b"1" else b"keep-alive" in tokens
    if code < 200 or code in (204, 304) or to_head:
        framing, length = NO_BODY, 0
    elif encoded:
        # RFC 9112 6.3: Transfer-Encoding wins over Content-Length; not chunked last = close.
        framing = CHUNKED if chunked else CLOSE
        length = 0
    elif length is not None:
        framing = LENGTH
    else:
        framing, length = CLOSE, 0
    if framing is CLOSE:
        keep_alive = False
    return ResponseHead(code, status_line[9:], fields, framing, length, keep_alive, tokens)


class ChunkedScanner:
    """Finds where a chunked body ends, without decoding it (it is relayed as it is)."""

    __slots__ = ("_line", "_remaining", "_state")

    # states
    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self) -> None:
        self._state = self._SIZE
        self._remaining = 0
        self._line = b""  # a size or trailer line split across reads

    def feed(self, data: bytes) -> int:
        """How many bytes of ``data`` belong to the body: all of them while it goes on, up to
        its last byte once it ends (then ``done`` is true). Raises BadResponse if malformed."""
        pos = 0
        size = len(data)
        while pos < size:
            state = self._state
            if state == self._DATA:
                take = min(self._remaining, size - pos)
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = self._DATA_END
                    self._line = b""
                continue
            end = data.find(b"\n", pos)
            if end < 0:
                self._line += data[pos:]
                if len(self._line) > 4096:
                    raise BadResponse("chunk line too long")
                return size
            line = self._line + data[pos:end]
            self._line = b""
            pos = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if state == self._SIZE:
                match = _CHUNK_SIZE.fullmatch(line)
                if match is None:
                    raise BadResponse(f"bad chunk size line {line[:40]!r}")
                self._remaining = int(match.group(1), 16)
                self._state = self._DATA if self._remaining else self._TRAILER
            elif state == self._DATA_END:
                if line:
                    raise BadResponse("chunk data longer than its size")
                self._state = self._SIZE
            else:  # trailer fields, up to an empty line
                if not line:
                    self._state = -1
                    return pos
                if not _FIELD.fullmatch(line):  # relayed as they are: as strict as a head
                    raise BadResponse(f"malformed trailer field {line[:40]!r}")
        return size

    @property
    def done(self) -> bool:
        return self._state == -1
