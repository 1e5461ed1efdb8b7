"""Whatever head the fast path's parser accepts, llhttp (the parser of aiohttp's server, here
through httptools) parses the same way: the same method, target, version, header fields and
values, keep-alive, and framing (the same body, the message ending at the same byte, so a
pipelined request after it is the same request to both). A head the fast path refuses is
aiohttp's to judge, so only acceptance is checked; generated heads mix the ordinary with the
tricky pieces that parsers disagree on."""

from __future__ import annotations

from dataclasses import dataclass, field

import httptools
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faaso.gateway.fast.http1 import NEED_MORE, NOT_FAST, dechunk, parse_request_head

MAX_BODY = 65536

ordinary_methods = st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH"])
odd_methods = st.sampled_from([b"BREW", b"get", b"CONNECT", b"OPTIONS", b"TRACE", b"G\x00T"])
ordinary_targets = st.from_regex(rb"\A/[a-z0-9/._~%-]{0,12}(\?[a-z0-9=&%]{0,8})?\Z")
odd_targets = st.one_of(
    st.sampled_from([b"*", b"http://h/x", b"/a#b", b"/%zz", b"/a b", b"//x", b"/\\"]),
    st.binary(min_size=0, max_size=8).map(lambda b: b"/" + b),
)
odd_versions = st.sampled_from([b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 "])
ordinary_fields = st.sampled_from(
    [
        (b"X-A", b" 1"),
        (b"Accept", b" */*"),
        (b"User-Agent", b" t/1.0"),
        (b"X-Forwarded-For", b" 10.0.0.1"),
        (b"Connection", b" keep-alive"),
        (b"Connection", b" close"),
        (b"X-Call-Id", b" abc"),
        (b"Content-Type", b"text/plain"),
    ]
)
framing_fields = st.sampled_from(
    [
        (b"Content-Length", b" 3"),
        (b"content-length", b"0"),
        (b"Content-Length", b" 003 "),
        (b"Transfer-Encoding", b" chunked"),
        (b"transfer-encoding", b"Chunked\t"),
    ]
)
odd_names = st.sampled_from(
    [b"Content-Length ", b" X-A", b"X A", b"X\x7fA", b"Host", b"Expect", b"Upgrade", b"TE"]
)
odd_values = st.one_of(
    st.sampled_from(
        [
            b" +3",
            b" 3, 3",
            b" -1",
            b" 99999999999999999999",
            b" gzip, chunked",
            b" chunked, gzip",
            b" Keep-Alive, Content-Length",
            b" upgrade",
            b"",
            b" \t",
            b" a\rb",
            b" a\x00b",
            b" caf\xc3\xa9",
            b" 3",
            b" chunked",
        ]
    ),
    st.binary(max_size=8).map(lambda b: b" " + b),
)
odd_separators = st.sampled_from([b"\n", b"\r\n ", b"\r\n\t", b"\r"])


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """Mostly ordinary heads, each with at most a couple of odd parts."""
    odd = draw(st.integers(0, 2))

    def pick(ordinary: st.SearchStrategy[bytes], strange: st.SearchStrategy[bytes]) -> bytes:
        return draw(strange) if odd and draw(st.integers(0, 3)) == 0 else draw(ordinary)

    method = pick(ordinary_methods, odd_methods)
    line = method + b" " + pick(ordinary_targets, odd_targets) + b" "
    line += pick(st.just(b"HTTP/1.1"), odd_versions)
    fields = [(b"Host", b" example"), *draw(st.lists(ordinary_fields, max_size=3))]
    if draw(st.booleans()):
        fields.append(draw(framing_fields))
    for _ in range(odd):
        fields.insert(
            draw(st.integers(0, len(fields))),
            (draw(st.one_of(odd_names, ordinary_fields.map(lambda f: f[0]))), draw(odd_values)),
        )
    if odd and draw(st.booleans()):
        fields.pop(0)  # no Host
    out = line + b"\r\n"
    for name, value in fields:
        out += name + b":" + value + pick(st.just(b"\r\n"), odd_separators)
    return out + b"\r\n"


@dataclass
class Seen:
    url: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    complete: int = 0
    keep_alive: list[bool] = field(default_factory=list)
    methods: list[bytes] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    parser: httptools.HttpRequestParser | None = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.methods.append(self.parser.get_method())
        self.versions.append(self.parser.get_http_version())
        self.keep_alive.append(self.parser.should_keep_alive())
        self.bodies.append(b"")

    def on_body(self, body: bytes) -> None:
        self.bodies[-1] += body

    def on_message_complete(self) -> None:
        self.complete += 1


def body_for(chunked: bool, length: int) -> bytes:
    if chunked:
        return b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    return b"z" * length


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(heads())
def test_what_the_fast_path_accepts_llhttp_parses_the_same(head: bytes) -> None:
    parsed = parse_request_head(head, MAX_BODY)
    if parsed is None:
        return  # aiohttp's to judge
    body = body_for(parsed.chunked, parsed.content_length)
    if parsed.chunked:
        end, decoded = dechunk(body, 0, MAX_BODY)
        assert end not in (NEED_MORE, NOT_FAST)
        assert end == len(body)
        expected_body = decoded
    else:
        expected_body = body
    seen = Seen()
    seen.parser = httptools.HttpRequestParser(seen)
    # Twice, pipelined, when the connection stays open: the second must be the same request.
    n = 2 if parsed.keep_alive else 1
    seen.parser.feed_data((head + body) * n)  # raises if llhttp refuses what we accepted
    assert seen.complete == n, "llhttp ends the message elsewhere"
    assert seen.methods == [parsed.method] * n
    assert seen.versions == ["1.1"] * n
    assert seen.url == parsed.target * n
    fields = [(name, value.strip(b" \t")) for name, _, value in parsed.fields]
    # Values compared without surrounding whitespace (RFC 9110 5.5: not part of the value;
    # llhttp keeps trailing whitespace, the fast path relays values as they were sent anyway).
    assert [(k, v.strip(b" \t")) for k, v in seen.headers] == fields * n
    assert seen.bodies == [expected_body] * n
    assert seen.keep_alive == [parsed.keep_alive] * n


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=40), max_size=4),
    st.sampled_from([b"\r\n", b"\n"]),
    st.sampled_from([b"", b";x=1", b" "]),
)
def test_a_chunked_body_the_fast_path_accepts_llhttp_decodes_the_same(
    chunks: list[bytes], line_end: bytes, extension: bytes
) -> None:
    body = b"".join(b"%x%b%b%b\r\n" % (len(c), extension, line_end, c) for c in chunks)
    body += b"0" + line_end + b"\r\n"
    end, decoded = dechunk(body, 0, MAX_BODY)
    if end in (NEED_MORE, NOT_FAST):
        return
    head = b"POST /f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    seen = Seen()
    seen.parser = httptools.HttpRequestParser(seen)
    seen.parser.feed_data(head + body[:end] + head + body[:end])
    assert seen.complete == 2
    assert seen.bodies == [decoded] * 2 == [b"".join(chunks)] * 2
