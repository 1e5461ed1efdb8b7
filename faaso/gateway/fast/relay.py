"""The proxy's fast path: plain HTTP/1.1 relayed between asyncio protocols, without aiohttp.

Every connection to faaso's port starts here. For each request, ``faaso.gateway.fast.http1``
says whether it
is the common case: HTTP/1.1, a method other than HEAD, a body of known length up to 64 KiB, no
upgrade, no ``Expect``, a path routed to a function that has a live instance. Those are relayed
here: the head is rewritten once (hop-by-hop fields out, ``X-Forwarded-*``, ``X-Call-Id``,
``X-Start-Time`` in), sent over a kept-alive connection to the instance (its Unix socket when it
has one, else its published port), and the response is relayed as it arrives, its head rewritten
and its body passed byte for byte, with back-pressure both ways. No task, no stream object, no
header multidict per request.

Anything else (``/healthz``, ``/metrics``, ``/system/...``, WebSocket upgrades, large or chunked
uploads, HTTP/1.0, a function with no live instance yet, a request with an ``Origin`` for a
function with a CORS policy, a request this module's strict parser does not accept) is handed
over, connection and buffered bytes, to aiohttp's server, which serves that connection from then
on with ``faaso.gateway.proxy`` and the API. The outcome for the client is the same either way;
only the cost differs. Under TLS (``FastSite`` with an SSL context) the same protocol runs on
the TLS transport, hand-off included.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import cast
from urllib.parse import unquote

from aiohttp import web

from faaso.gateway.access_log import AccessLog
from faaso.gateway.admission import Admission, Hold, Lease, Refusal
from faaso.gateway.fast.http1 import (
    CHUNKED,
    CLOSE,
    IDEMPOTENT,
    LENGTH,
    NEED_MORE,
    NO_BODY,
    NOT_FAST,
    BadResponse,
    ChunkedScanner,
    RequestHead,
    ResponseHead,
    dechunk,
    parse_request_head,
    parse_response_head,
)
from faaso.gateway.headers import call_id_of, downstream_fields, upstream_fields
from faaso.gateway.messages import (
    CLIENT_GONE,
    error_body,
    error_head,
    log_proxy_error,
    msg_cannot_connect,
    msg_closed,
    msg_malformed,
    msg_not_routed,
    msg_timed_out,
)
from faaso.gateway.policy import SMALL_BODY, UPSTREAM_IDLE, UPSTREAM_IDLE_MAX
from faaso.gateway.pools import Member
from faaso.spec.cors import CorsPolicy
from faaso.spec.routing import Match, RouteTable

MAX_HEAD = 16 * 1024 + 4  # the same limit aiohttp applies (max_line_size, max_field_size)
MAX_RESPONSE_HEAD = 64 * 1024
PAUSE_CLIENT_AT = 256 * 1024  # stop reading a client that pipelines this much ahead
CUT_GRACE = 5.0  # seconds a cut client connection may take to read what it was sent

_CHUNKED_END = b"0\r\n\r\n"

Key = tuple[str, int] | str  # (host, port) or a Unix socket path
_NO_CORS: Mapping[str, CorsPolicy] = MappingProxyType({})


def _has_origin(fields: list[tuple[bytes, bytes, bytes]]) -> bool:
    return any(lname == b"origin" for _, lname, _ in fields)


def member_keys(member: Member) -> list[Key]:
    """Where to connect to reach ``member``: its Unix socket first when it has one."""
    endpoint = member.endpoint
    tcp = (endpoint.host, endpoint.port)
    return [endpoint.unix, tcp] if endpoint.unix else [tcp]


def error_response(
    status: int,
    message: str,
    function: str | None,
    call_id: str | None,
    keep_alive: bool,
    **extra: str,
) -> bytes:
    """A proxy-made error, as ``faaso.gateway.proxy.json_error`` makes it on the aiohttp path
    (a 5xx is logged with its call id)."""
    log_proxy_error(status, message, function, call_id)
    body = error_body(message, function, **extra)
    return error_head(status, len(body), call_id, keep_alive) + body


class Deadlines:
    """Coarse timers for many connections: one loop timer ticking on RESOLUTION boundaries
    while anything is due, instead of a loop timer created and cancelled per request.

    Each connection is in at most one slot: that of its earliest deadline. When the slot comes,
    the connection checks its current deadline (which may have moved on meanwhile) and takes a
    new slot if it is not due yet. Per request that is a float and, at most, one dict insert.
    Deadlines fire at most RESOLUTION late (plus the loop's own lateness), never early.
    """

    RESOLUTION = 0.05

    def __init__(self) -> None:
        self._slots: dict[int, dict[FrontConnection, None]] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._ticking = False

    @classmethod
    def slot_of(cls, when: float) -> int:
        return int(when / cls.RESOLUTION) + 1

    def watch(self, connection: FrontConnection, slot: int) -> None:
        bucket = self._slots.get(slot)
        if bucket is None:
            self._slots[slot] = {connection: None}
        else:
            bucket[connection] = None
        if self._handle is None and not self._ticking:
            self._schedule()

    def unwatch(self, connection: FrontConnection, slot: int) -> None:
        bucket = self._slots.get(slot)
        if bucket is not None:
            bucket.pop(connection, None)
            if not bucket:
                del self._slots[slot]

    def _schedule(self) -> None:
        # On the next slot boundary (a millisecond after: loop timers round to milliseconds).
        now = time.monotonic()
        delay = (int(now / self.RESOLUTION) + 1) * self.RESOLUTION - now + 0.001
        self._handle = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        self._handle = None
        self._ticking = True
        try:
            now = time.monotonic()
            current = int(now / self.RESOLUTION)
            for slot in [s for s in self._slots if s <= current]:
                for connection in self._slots.pop(slot):
                    try:
                        connection.check_deadline(now)
                    except Exception as exc:  # one connection's failure must not stop the clock
                        asyncio.get_running_loop().call_exception_handler(
                            {"message": "fast path deadline", "exception": exc}
                        )
                        connection.abort()
        finally:
            self._ticking = False
            if self._slots and self._handle is None:
                self._schedule()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._slots.clear()


class FastPath:
    """Shared by every fast connection of one app: routing, pools, upstream connections."""

    def __init__(
        self,
        admission: Admission,
        routes: Callable[[], RouteTable],
        *,
        header_timeout: float,
        cors: Callable[[], Mapping[str, CorsPolicy]] = lambda: _NO_CORS,
        access_log: AccessLog | None = None,
    ) -> None:
        self.admission = admission
        self.pools = admission.pools
        self.routes = routes
        self.header_timeout = header_timeout
        # Functions with a CORS policy: their requests with an Origin go to aiohttp
        # (faaso.gateway.cors); empty, nothing is looked at.
        self.cors = cors
        self.access_log = access_log  # None: off, and nothing is measured for it
        self.scheme = b"http"  # b"https" when the site listens with TLS (X-Forwarded-Proto)
        self.upstreams = UpstreamPool()
        self.deadlines = Deadlines()
        self.connections: set[FrontConnection] = set()
        self.closing = False
        self._idle = asyncio.Event()
        self._reserved_exact: frozenset[str] = frozenset()
        self._reserved_prefixes: tuple[str, ...] = ()

    def reserve(self, paths: list[str]) -> None:
        """Paths the aiohttp app serves itself (and everything under them)."""
        self._reserved_exact = frozenset(paths)
        self._reserved_prefixes = tuple(p.rstrip("/") + "/" for p in paths)

    def reserved(self, path: str) -> bool:
        return path in self._reserved_exact or path.startswith(self._reserved_prefixes)

    def factory(
        self, fallback: Callable[[], asyncio.BaseProtocol]
    ) -> Callable[[], FrontConnection]:
        """A protocol factory for ``loop.create_server``; ``fallback`` makes aiohttp's."""
        return lambda: FrontConnection(self, fallback)

    def forget(self, connection: FrontConnection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._idle.set()

    async def shutdown(self, timeout: float) -> None:
        """After the listener closed: close idle connections at once, let each busy one finish
        its request (up to ``timeout``), then cut what is left."""
        self.closing = True
        for connection in list(self.connections):
            connection.close_when_idle()
        if self.connections:
            self._idle.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._idle.wait()
            except TimeoutError:
                for connection in list(self.connections):
                    connection.abort()
        self.upstreams.close()
        self.deadlines.close()


FAST_PATH = web.AppKey("faaso_fast_path", FastPath)


class FastSite(web.TCPSite):
    """A TCP site whose connections start on the fast path and are handed to the runner's
    aiohttp server when needed. Stopping it closes the listener, then drains the fast
    connections and aiohttp's at the same time, within one ``drain_timeout`` for both: what is
    still busy then is cut. The runner's own drain afterwards finds nothing left."""

    def __init__(
        self,
        runner: web.BaseRunner,
        fast: FastPath,
        host: str,
        port: int,
        *,
        backlog: int = 2048,
        drain_timeout: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(
            runner, host, port, backlog=backlog, reuse_address=True, ssl_context=ssl_context
        )
        self._fast = fast
        if ssl_context is not None:
            fast.scheme = b"https"
        self._drain_timeout = drain_timeout
        self._host_port = (host, port)

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        fallback = self._runner.server
        assert fallback is not None
        loop = asyncio.get_running_loop()
        self._server = server = await loop.create_server(
            self._fast.factory(fallback),
            *self._host_port,
            backlog=self._backlog,
            reuse_address=True,
            ssl=self._ssl_context,
        )
        self._bound_port = server.sockets[0].getsockname()[1] if server.sockets else None

    async def stop(self) -> None:
        await super().stop()
        server = self._runner.server
        drains = [self._fast.shutdown(self._drain_timeout)]
        if server is not None:
            drains.append(drain_aiohttp(server, self._drain_timeout))
        await asyncio.gather(*drains)


async def drain_aiohttp(server: web.Server, timeout: float) -> None:
    """Let aiohttp's connections finish their requests within ``timeout`` (idle ones close at
    once), then cut those still busy (their handlers are cancelled)."""
    server.pre_shutdown()  # idle connections close now, busy ones after their request
    try:
        async with asyncio.timeout(timeout):
            await server.shutdown(timeout)
    except TimeoutError:
        for connection in list(server.connections):
            connection.force_close()


class FrontConnection(asyncio.Protocol):
    """One client connection, while it stays on the fast path."""

    def __init__(self, fast: FastPath, fallback: Callable[[], asyncio.BaseProtocol]) -> None:
        self.fast = fast
        self._fallback = fallback
        self.transport: asyncio.Transport | None = None
        # What the client sent that is not yet taken: the bytes of one read as they came (the
        # common case: one whole request), a bytearray once pieces have to be joined.
        self._buf: bytes | bytearray = b""
        self._peer = b""
        self._exchange: Exchange | None = None
        # The next deadline: for the next request's head while idle, for the function's answer
        # while an exchange is in flight. None: none.
        self._deadline: float | None = None
        self._watched_slot: int | None = None  # the earliest slot registered with Deadlines
        self._reading_paused = False
        self.writing_paused = False
        self._closed = False
        self._pending: int | None = None  # bytes needed before the buffered request is whole

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self._peer = str(peer[0]).encode()
        self.fast.connections.add(self)
        if self.fast.closing:
            self.transport.close()
            return
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if not self._buf:
            self._buf = data
        elif isinstance(self._buf, bytearray):
            self._buf += data
        else:
            self._buf = bytearray(self._buf) + data
        if self._exchange is None and not self.writing_paused:
            pending = self._pending
            if pending is not None and len(self._buf) < pending:
                return  # a body still on its way: no need to parse the head again
            self._next()
        elif len(self._buf) > PAUSE_CLIENT_AT:
            self._pause_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        # As aiohttp and nginx do: a client that stops sending is gone (a half-closed
        # connection cannot be told from a closed one until a write fails). The transport
        # closes, and connection_lost drops whatever was in flight.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._unwatch()
        self._buf = b""
        self.fast.forget(self)
        exchange = self._exchange
        if exchange is not None:
            # Nobody will read the answer: drop the request to the function.
            exchange.abort(CLIENT_GONE)

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self._exchange is not None:
            self._exchange.pause_upstream()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self._exchange is not None:
            self._exchange.resume_upstream()
        elif not self._closed:
            # Pipelined requests waited for the client to read its answers.
            self._resume_reading()
            self._next()

    # lifecycle

    def close_when_idle(self) -> None:
        if self._exchange is None and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def cut(self) -> None:
        """End a response that cannot be completed: close after what was already written (the
        client sees the body end early, short of its length or final chunk); a client that does
        not read that is cut off after CUT_GRACE seconds."""
        self._closed = True
        transport = self.transport
        if transport is not None:
            transport.close()
            asyncio.get_running_loop().call_later(CUT_GRACE, transport.abort)

    def _arm_idle(self) -> None:
        # One deadline for the next request's head (and small body), however slowly it
        # dribbles in: slowloris clients are cut off; also the keep-alive idle timeout.
        self.set_deadline(time.monotonic() + self.fast.header_timeout)

    def set_deadline(self, when: float) -> None:
        self._deadline = when
        slot = Deadlines.slot_of(when)
        watched = self._watched_slot
        if watched is None or slot < watched:
            deadlines = self.fast.deadlines
            if watched is not None:
                deadlines.unwatch(self, watched)
            self._watched_slot = slot
            deadlines.watch(self, slot)

    def _unwatch(self) -> None:
        self._deadline = None
        if self._watched_slot is not None:
            self.fast.deadlines.unwatch(self, self._watched_slot)
            self._watched_slot = None

    def check_deadline(self, now: float) -> None:
        """Called by Deadlines when this connection's slot has come (and left it)."""
        self._watched_slot = None
        when = self._deadline
        if when is None or self._closed:
            return
        if when > now:
            self.set_deadline(when)
            return
        self._deadline = None
        exchange = self._exchange
        if exchange is not None:
            exchange.timed_out()
        elif self.transport is not None:
            self.transport.close()

    # requests

    def _next(self) -> None:
        """Take the next complete requests from the buffer, as long as they can be answered.

        ``pos`` walks the buffer; what is left is stored back once, on the way out (so many
        pipelined requests in one read cost one pass, not a copy of the rest each).
        """
        fast = self.fast
        log = fast.access_log
        buf = self._buf
        pos = 0
        while self._exchange is None and not self._closed:
            if self.writing_paused:
                # The client is not reading its answers: stop taking its requests until it does.
                self._buf = buf[pos:] if pos else buf
                self._pause_reading()
                return
            self._pending = None
            if pos >= len(buf):
                self._buf = b""
                return
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                self._buf = buf[pos:] if pos else buf
                if len(self._buf) > MAX_HEAD or b"\n\n" in self._buf:
                    self._hand_off()  # aiohttp answers 431/400, or parses what we would not
                return
            if end + 4 - pos > MAX_HEAD:
                self._buf = buf[pos:] if pos else buf
                self._hand_off()
                return
            head = parse_request_head(bytes(buf[pos : end + 4]), SMALL_BODY)
            if head is None:
                self._buf = buf[pos:] if pos else buf
                self._hand_off()
                return
            body_at = end + 4
            if head.chunked:
                total, body = dechunk(buf, body_at, SMALL_BODY)
                if total == NEED_MORE:
                    self._buf = buf[pos:] if pos else buf
                    self._pending = len(self._buf) + 1  # any more bytes: look again
                    return  # the body is on its way (within the same idle deadline)
                if total == NOT_FAST:
                    self._buf = buf[pos:] if pos else buf
                    self._hand_off()  # aiohttp streams it, or refuses it
                    return
                # Sent to the instance with its length: no chunk framing to disagree about.
                head.content_length = len(body)
                head.length_given = True
            else:
                total = body_at + head.content_length
                if len(buf) < total:
                    self._buf = buf[pos:] if pos else buf
                    self._pending = total - pos
                    return  # the body is on its way (within the same idle deadline)
                body = bytes(buf[body_at:total]) if total > body_at else b""
            target = head.target.decode("latin-1")
            raw_path, _, query = target.partition("?")
            # aiohttp routes its own paths once percent-decoded: so must the check.
            if fast.reserved(unquote(raw_path) if "%" in raw_path else raw_path):
                self._buf = buf[pos:] if pos else buf
                self._hand_off()
                return
            match = fast.routes().resolve(raw_path)
            if match is None:
                pos = total
                path = unquote(raw_path)
                self._reply(404, msg_not_routed(path), None, None, head.keep_alive, path=path)
                if log is not None:
                    log.record(head.method.decode(), raw_path, None, 404, 0.0, None)
                continue
            policies = fast.cors()
            if policies and match.function in policies and _has_origin(head.fields):
                self._buf = buf[pos:] if pos else buf
                self._hand_off()  # CORS: aiohttp answers preflights and adds the fields
                return
            decided = fast.admission.try_admit(match.function)
            if isinstance(decided, Hold):
                self._buf = buf[pos:] if pos else buf
                self._hand_off()  # aiohttp's proxy holds the request until an instance is back
                return
            pos = total
            if isinstance(decided, Refusal):
                call_id = call_id_of(head.fields)
                self._reply(
                    decided.status, decided.message, decided.function, call_id, head.keep_alive
                )
                if log is not None:
                    log.record(
                        head.method.decode(),
                        raw_path,
                        decided.function,
                        decided.status,
                        0.0,
                        call_id,
                    )
                continue
            # Stored before the exchange starts: its completion may come back here.
            self._buf = buf[pos:] if pos < len(buf) else b""
            self._exchange = Exchange(self, head, match, query, body, decided)
            self._exchange.start()
            return
        self._buf = buf[pos:] if pos else buf

    def _reply(
        self,
        status: int,
        message: str,
        function: str | None,
        call_id: str | None,
        keep_alive: bool,
        **extra: str,
    ) -> None:
        keep_alive = keep_alive and not self.fast.closing
        assert self.transport is not None
        self.transport.write(
            error_response(status, message, function, call_id, keep_alive, **extra)
        )
        if not keep_alive:
            self._closed = True
            self.transport.close()
            return
        # A response was sent: the next request's deadline starts now, as after any other.
        self._arm_idle()

    def exchange_done(self, keep_alive: bool) -> None:
        self._exchange = None
        transport = self.transport
        if transport is None or self._closed:
            return
        if not keep_alive or self.fast.closing:
            self._closed = True
            transport.close()
            return
        self._arm_idle()
        if not self.writing_paused:
            self._resume_reading()
        if self._buf:
            self._next()

    def _hand_off(self) -> None:
        """From here on aiohttp serves this connection, starting with the buffered bytes."""
        transport = self.transport
        assert transport is not None
        self._unwatch()
        self.fast.forget(self)
        self._closed = True
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        protocol = self._fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self.writing_paused:
            # The transport will not say so again until its buffer drains.
            protocol.pause_writing()
        if self._buf:
            assert isinstance(protocol, asyncio.Protocol)
            protocol.data_received(bytes(self._buf))
            self._buf = b""

    @property
    def peer(self) -> bytes:
        return self._peer


class Exchange:
    """One request relayed to one function instance, and its response relayed back."""

    __slots__ = (
        "_body",
        "_call_id",
        "_connect_task",
        "_done",
        "_front",
        "_function",
        "_keep_alive",
        "_lease",
        "_method",
        "_request",
        "_retried",
        "_start_time",
        "_target",
        "_tried",
        "chunk_wrap",
        "conn",
        "head_sent",
        "status",
    )

    def __init__(
        self,
        front: FrontConnection,
        head: RequestHead,
        match: Match,
        query: str,
        body: bytes,
        lease: Lease,
    ) -> None:
        self._front = front
        self._function = match.function
        self._method = head.method
        self._keep_alive = head.keep_alive
        self._lease = lease
        self.conn: UpstreamConnection | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._done = False
        self._retried = False
        self._tried: set[str] = set()
        self.head_sent = False
        self.chunk_wrap = False
        self.status = 502
        self._target = head.target
        target = match.path + ("?" + query if query else "")
        self._call_id, self._start_time, self._request = _upstream_request(
            head, target.encode("latin-1"), front.peer, front.fast.scheme
        )
        self._body = body

    @property
    def member(self) -> Member:
        return self._lease.member

    def start(self) -> None:
        fast = self._front.fast
        self._front.set_deadline(self._lease.deadline)
        for key in member_keys(self.member):
            conn = fast.upstreams.acquire(key)
            if conn is not None:
                self._send(conn)
                return
        self._connect_task = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        fast = self._front.fast
        while True:
            self._tried.add(self.member.instance_id)
            refused: OSError | None = None
            for key in member_keys(self.member):
                try:
                    conn = await fast.upstreams.connect(key)
                except OSError as exc:
                    refused = exc
                    continue
                self._connect_task = None
                self._send(conn)
                return
            # Nothing was sent: any method may go to another instance, if there is one.
            if self._lease.retry_elsewhere(self._tried) is None:
                assert refused is not None
                reason = refused.strerror or str(refused)
                self._connect_task = None
                self._fail(502, msg_cannot_connect(self._function, reason))
                return

    def _send(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        if self._front.writing_paused:
            conn.pause_reading()
        conn.send(self, self._request, self._body, self._method == b"HEAD")

    # called by the upstream connection

    def on_head(self, head: ResponseHead, body: bytes, done: bool, reusable: bool) -> None:
        front = self._front
        self.status = head.status
        self.head_sent = True
        if front.fast.closing:
            self._keep_alive = False  # shutting down: this is the connection's last response
        self.chunk_wrap = head.framing is CLOSE
        out = _downstream_head(
            head,
            self._call_id,
            self._start_time,
            time.monotonic() - self._lease.started,
            self._keep_alive,
        )
        transport = front.transport
        assert transport is not None
        if self.chunk_wrap:
            if body:
                out += b"%x\r\n%b\r\n" % (len(body), body)
            if done:
                out += _CHUNKED_END
            transport.write(out)
        elif body:
            transport.write(out + body)
        else:
            transport.write(out)
        if done:
            self._finish(reusable)

    def on_body(self, body: bytes, done: bool, reusable: bool) -> None:
        transport = self._front.transport
        assert transport is not None
        if self.chunk_wrap:
            out = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if done:
                out += _CHUNKED_END
            if out:
                transport.write(out)
        elif body:
            transport.write(body)
        if done:
            self._finish(reusable)

    def on_lost(self, conn: UpstreamConnection, replied: bool) -> None:
        """The upstream connection closed before the response was complete."""
        self.conn = None
        if self._done:
            return
        if not replied and conn.uses > 1 and self._method in IDEMPOTENT and not self._retried:
            # A kept-alive connection the instance had closed: once more on a new one.
            self._retried = True
            self._connect_task = asyncio.get_running_loop().create_task(self._connect())
            return
        if self.head_sent:
            self._front.cut()  # headers are out: cutting the connection is all that is left
            self._complete(self.status)
            return
        self._fail(502, msg_closed(self._function))

    def on_bad_response(self, problem: str) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
        if self.head_sent:
            self._front.cut()
            self._complete(self.status)
        else:
            self._fail(502, msg_malformed(self._function, problem))

    def pause_upstream(self) -> None:
        if self.conn is not None:
            self.conn.pause_reading()

    def resume_upstream(self) -> None:
        if self.conn is not None:
            self.conn.resume_reading()

    # endings

    def timed_out(self) -> None:
        if self._done:
            return
        if self.head_sent:
            self._drop_upstream()
            self._front.cut()
            self._complete(self.status)
            return
        self._fail(504, msg_timed_out(self._function, self._lease.timeout))

    def abort(self, status: int) -> None:
        """The client went away."""
        if self._done:
            return
        self._drop_upstream()
        self._complete(status)

    def _fail(self, status: int, message: str) -> None:
        self._drop_upstream()
        front = self._front
        keep_alive = self._keep_alive and not front.fast.closing
        if front.transport is not None:
            front.transport.write(
                error_response(status, message, self._function, self._call_id, keep_alive)
            )
        self._complete(status, keep_alive)

    def _drop_upstream(self) -> None:
        if self._connect_task is not None:
            self._connect_task.cancel()
            self._connect_task = None
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def _finish(self, reusable: bool) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            if reusable:
                self._front.fast.upstreams.release(conn)
            else:
                conn.close()
        self._complete(self.status)

    def _complete(self, status: int, keep_alive: bool | None = None) -> None:
        if self._done:
            return
        self._done = True
        self._lease.finish(status)
        log = self._front.fast.access_log
        if log is not None:
            log.record(
                self._method.decode(),
                self._target.partition(b"?")[0].decode("latin-1"),
                self._function,
                status,
                time.monotonic() - self._lease.started,
                self._call_id,
            )
        self._front.exchange_done(self._keep_alive if keep_alive is None else keep_alive)


def _upstream_request(
    head: RequestHead, target: bytes, peer: bytes, scheme: bytes
) -> tuple[str, bytes, bytes]:
    """The request as the instance gets it: (call id, start time, head bytes)."""
    call_id, start, pairs = upstream_fields(head.fields, head.connection_tokens, peer, scheme)
    parts = [head.method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in pairs:
        parts += (name, b":" if value[:1] in (b" ", b"\t") else b": ", value, b"\r\n")
    if head.length_given:
        parts += (b"Content-Length: ", str(head.content_length).encode(), b"\r\n")
    parts.append(b"\r\n")
    return call_id, start, b"".join(parts)


def _downstream_head(
    head: ResponseHead, call_id: str, start: bytes, duration: float, keep_alive: bool
) -> bytes:
    rechunk = head.framing is CHUNKED or head.framing is CLOSE
    pairs = downstream_fields(
        head.fields, head.connection_tokens, call_id, start, duration, drop_length=rechunk
    )
    rest = head.status_line_rest
    parts = [b"HTTP/1.1 ", rest if len(rest) > 3 else rest + b" ", b"\r\n"]
    for name, value in pairs:
        parts += (name, b":" if value[:1] in (b" ", b"\t") else b": ", value, b"\r\n")
    if rechunk:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class UpstreamPool:
    """Kept-alive connections to function instances, per address, most recently used first."""

    def __init__(self) -> None:
        self._idle: dict[Key, list[UpstreamConnection]] = {}
        self._closed = False
        self._sweeper: asyncio.TimerHandle | None = None

    def acquire(self, key: Key) -> UpstreamConnection | None:
        conns = self._idle.get(key)
        if not conns:
            return None
        now = time.monotonic()
        while conns:
            conn = conns.pop()
            if not conn.closed and now - conn.idle_since < UPSTREAM_IDLE:
                return conn
            conn.close()
        return None

    async def connect(self, key: Key) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        conn: UpstreamConnection
        if isinstance(key, str):
            _, conn = await loop.create_unix_connection(lambda: UpstreamConnection(self, key), key)
        else:
            _, conn = await loop.create_connection(
                lambda: UpstreamConnection(self, key), key[0], key[1]
            )
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        conns = self._idle.setdefault(conn.key, [])
        if self._closed or conn.closed or len(conns) >= UPSTREAM_IDLE_MAX:
            conn.close()
            return
        conn.resume_reading()  # paused for a slow client of its last exchange, maybe
        conn.idle_since = time.monotonic()
        conns.append(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(UPSTREAM_IDLE, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle for longer than UPSTREAM_IDLE (oldest first in each list)."""
        self._sweeper = None
        now = time.monotonic()
        for key, conns in list(self._idle.items()):
            expired = 0
            while expired < len(conns) and now - conns[expired].idle_since >= UPSTREAM_IDLE:
                conns[expired].close()
                expired += 1
            del conns[:expired]
            if not conns:
                del self._idle[key]
        if self._idle and not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(UPSTREAM_IDLE / 2, self._sweep)

    def discard(self, conn: UpstreamConnection) -> None:
        conns = self._idle.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)

    def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


class UpstreamConnection(asyncio.Protocol):
    """One connection to a function instance; carries one exchange at a time."""

    def __init__(self, pool: UpstreamPool, key: Key) -> None:
        self._pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.closed = False
        self.idle_since = 0.0
        self.uses = 0
        self._buf = b""
        self._head: ResponseHead | None = None
        self._remaining = 0
        self._scanner: ChunkedScanner | None = None
        self._replied = False
        self._paused = False
        self._to_head = False  # the exchange's request is HEAD: its response has no body

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, exchange: Exchange, request: bytes, body: bytes, to_head: bool) -> None:
        self.exchange = exchange
        self.uses += 1
        self._to_head = to_head
        self._head = None
        self._buf = b""
        self._replied = False
        assert self.transport is not None
        if body:
            self.transport.writelines((request, body))
        else:
            self.transport.write(request)

    def pause_reading(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.exchange = None
            if self.transport is not None:
                self.transport.abort()

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            self.close()  # nothing was asked: an instance that talks out of turn is dropped
            return
        self._replied = True
        head = self._head
        try:
            if head is None:
                buf = self._buf + data if self._buf else data
                while True:
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        if len(buf) > MAX_RESPONSE_HEAD:
                            raise BadResponse("response head too large")
                        self._buf = buf
                        return
                    head = parse_response_head(buf[: end + 4], self._to_head)
                    buf = buf[end + 4 :]
                    if head.status >= 200:
                        break
                    if head.status == 101:
                        raise BadResponse("101 Switching Protocols without an upgrade")
                    # 1xx informational: not relayed on the fast path; the final one follows.
                self._buf = b""
                self._head = head
                self._remaining = head.length
                self._scanner = ChunkedScanner() if head.framing is CHUNKED else None
                body, done, extra = self._take(head, buf)
                if done:
                    self._reset()
                exchange.on_head(head, body, done, head.keep_alive and not extra)
                return
            body, done, extra = self._take(head, data)
        except BadResponse as exc:
            exchange.on_bad_response(str(exc))
            return
        if done:
            self._reset()
        exchange.on_body(body, done, head.keep_alive and not extra)

    def _take(self, head: ResponseHead, data: bytes) -> tuple[bytes, bool, bool]:
        """(the body bytes in ``data``, whether the body is complete, whether bytes follow it)."""
        framing = head.framing
        if framing is LENGTH:
            remaining = self._remaining
            if len(data) <= remaining:
                self._remaining = remaining - len(data)
                return data, self._remaining == 0, False
            self._remaining = 0
            return data[:remaining], True, True
        if framing is CHUNKED:
            assert self._scanner is not None
            used = self._scanner.feed(data)
            if self._scanner.done:
                return data[:used] if used < len(data) else data, True, used < len(data)
            return data, False, False
        if framing is NO_BODY:
            return b"", True, bool(data)
        return data, False, False  # CLOSE: the end is the connection's end

    def _reset(self) -> None:
        self.exchange = None
        self._head = None
        self._scanner = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.discard(self)
        exchange, self.exchange = self.exchange, None
        if exchange is None:
            return
        head = self._head
        if head is not None and head.framing is CLOSE and exc is None:
            exchange.on_body(b"", True, False)  # a clean close ends such a body
        else:
            exchange.on_lost(self, self._replied)
