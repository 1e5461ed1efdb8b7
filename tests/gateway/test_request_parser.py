"""The fast path's HTTP/1.1 parser: what it takes itself, and that everything else is left to
aiohttp (``None``) rather than guessed at. Every case that is left to aiohttp carries exactly one
Host, so it is refused for the reason it names and not for a missing Host."""

from __future__ import annotations

import pytest

from faaso.gateway.fast.http1 import (
    NEED_MORE,
    NOT_FAST,
    ChunkedScanner,
    Framing,
    dechunk,
    parse_request_head,
    parse_response_head,
)


def head(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode() + b"\r\n"


def test_request_head_fast_case() -> None:
    parsed = parse_request_head(
        head("POST /sum?a=1 HTTP/1.1\nHost: x\nContent-Length: 3\nConnection: keep-alive, X-A\n"),
        65536,
    )
    assert parsed is not None
    assert (parsed.method, parsed.target, parsed.content_length) == (b"POST", b"/sum?a=1", 3)
    assert parsed.keep_alive and not parsed.chunked
    assert parsed.connection_tokens == {b"keep-alive", b"x-a"}


def test_head_requests_are_taken() -> None:
    parsed = parse_request_head(head("HEAD /f HTTP/1.1\nHost: x\n"), 65536)
    assert parsed is not None and parsed.method == b"HEAD"


@pytest.mark.parametrize("value", ["chunked", "Chunked", "\tchunked "])
def test_a_chunked_body_is_taken(value: str) -> None:
    parsed = parse_request_head(
        head(f"POST /f HTTP/1.1\nHost: x\nTransfer-Encoding:{value}\n"), 65536
    )
    assert parsed is not None and parsed.chunked and not parsed.length_given


@pytest.mark.parametrize(
    "text",
    [
        "GET / HTTP/1.0\nHost: x\n",  # HTTP/1.0
        "GET / HTTP/1.1\nHost: x\nUpgrade: websocket\nConnection: upgrade\n",
        "POST / HTTP/1.1\nHost: x\nTransfer-Encoding: gzip, chunked\n",  # another coding
        "POST / HTTP/1.1\nHost: x\nTransfer-Encoding: gzip\n",
        "POST / HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\t\n",  # llhttp refuses it
        "POST / HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\nTransfer-Encoding: chunked\n",
        "POST / HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\nContent-Length: 3\n",  # both
        "POST / HTTP/1.1\nHost: x\nExpect: 100-continue\nContent-Length: 3\n",
        "POST / HTTP/1.1\nHost: x\nContent-Length: 3\nContent-Length: 3\n",  # repeated
        "POST / HTTP/1.1\nHost: x\nContent-Length: +3\n",  # signed
        "POST / HTTP/1.1\nHost: x\nContent-Length: 999999\n",  # too large for the fast path
        "GET / HTTP/1.1\nHost: x\n folded\n",  # obsolete line folding
        "GET / HTTP/1.1\nHost: x\nBad Name: x\n",
        "GET / HTTP/1.1\nHost: x\nX: a\x00b\n",
        "GET http://elsewhere/ HTTP/1.1\nHost: x\n",  # absolute form
        "GET  / HTTP/1.1\nHost: x\n",
        "BREW / HTTP/1.1\nHost: x\n",
        "GET / HTTP/1.1\nX-A: 1\n",  # no Host
        "GET / HTTP/1.1\nHost: a\nHost: b\n",  # two
    ],
)
def test_request_heads_left_to_aiohttp(text: str) -> None:
    assert parse_request_head(head(text), 65536) is None


def test_dechunk_whole_body() -> None:
    buf = b"HEAD" + b"5\r\nhello\r\n01\r\n!\r\n0\r\n\r\nNEXT"
    end, body = dechunk(buf, 4, 65536)
    assert (buf[end:], body) == (b"NEXT", b"hello!")


def test_dechunk_waits_for_every_missing_byte() -> None:
    whole = b"5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n"
    for cut in range(len(whole)):
        assert dechunk(whole[:cut], 0, 65536)[0] == NEED_MORE, cut
    assert dechunk(whole, 0, 65536) == (len(whole), b"hello!")


@pytest.mark.parametrize(
    "body",
    [
        b"5;ext=1\r\nhello\r\n0\r\n\r\n",  # chunk extension
        b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",  # trailer field
        b"5\nhello\r\n0\r\n\r\n",  # bare LF
        b"5 \r\nhello\r\n0\r\n\r\n",  # whitespace after the size
        b"+5\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhello!\r\n0\r\n\r\n",  # data longer than its size
        b"123456789\r\n",  # a size of more than eight digits
        b"10001\r\n",  # more than the fast path's 64 KiB
    ],
)
def test_dechunk_leaves_the_rest_to_aiohttp(body: bytes) -> None:
    assert dechunk(body, 0, 65536)[0] == NOT_FAST


def test_response_framing() -> None:
    assert parse_response_head(head("HTTP/1.1 200 OK\nContent-Length: 5\n")).framing is (
        Framing.LENGTH
    )
    chunked = parse_response_head(head("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n"))
    assert chunked.framing is Framing.CHUNKED and chunked.keep_alive
    close = parse_response_head(head("HTTP/1.0 200 OK\nContent-Type: text/plain\n"))
    assert close.framing is Framing.CLOSE and not close.keep_alive
    assert parse_response_head(head("HTTP/1.1 204 No Content\n")).framing is Framing.NONE
    assert parse_response_head(head("HTTP/1.1 200\nContent-Length: 0\n")).status == 200


def test_a_response_to_head_has_no_body() -> None:
    for fields in ("Content-Length: 5\n", "Transfer-Encoding: chunked\n", ""):
        parsed = parse_response_head(head("HTTP/1.1 200 OK\n" + fields), to_head=True)
        assert parsed.framing is Framing.NONE and parsed.keep_alive


def test_chunked_scanner_across_any_split() -> None:
    body = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\nX-Trailer: 1\r\n\r\n"
    for split in range(1, len(body)):
        scanner = ChunkedScanner()
        used = scanner.feed(body[:split])
        assert used == split and not scanner.done
        assert scanner.feed(body[split:] + b"NEXT") == len(body) - split
        assert scanner.done
