"""Running the app: listen, wait for a signal, shut down in order.

Shutdown order on SIGINT/SIGTERM: stop accepting connections, let in-flight requests finish
(bounded by ``drain_timeout``), then run the app's cleanup contexts in reverse: the supervisor
cancels what it was doing and stops its containers, then the HTTP client pools close.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from faaso.gateway.fast.relay import FAST_PATH, FastSite
from faaso.logs import get_logger


@dataclass(frozen=True, slots=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    drain_timeout: float = 15.0
    backlog: int = 2048
    # Relay plain small requests without aiohttp (faaso.fastpath); off: aiohttp serves all.
    fast_path: bool = True


async def serve(
    app: web.Application,
    options: ServerOptions,
    *,
    stop: asyncio.Event | None = None,
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Serve ``app`` until ``stop`` is set or SIGINT/SIGTERM arrives, then shut down cleanly."""
    log = get_logger("faaso.server")
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning(
                "server.signal_again",
                signal=signal.Signals(signum).name,
                note="already shutting down",
            )
            return
        log.info("server.signal", signal=signal.Signals(signum).name)
        stop.set()

    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=options.drain_timeout,
        # A client that goes away cancels its handler: the proxy then drops the request to the
        # function instead of waiting for an answer nobody will read.
        handler_cancellation=True,
    )
    try:
        await runner.setup()
        fast = app.get(FAST_PATH) if options.fast_path else None
        site: web.TCPSite
        if fast is not None:
            site = FastSite(
                runner,
                fast,
                options.host,
                options.port,
                backlog=options.backlog,
                drain_timeout=options.drain_timeout,
            )
        else:
            site = web.TCPSite(
                runner, options.host, options.port, backlog=options.backlog, reuse_address=True
            )
        await site.start()
        port = site.port
        log.info("server.listening", url=f"http://{options.host}:{port}")
        if on_listening is not None:
            on_listening(port)
        await stop.wait()
        log.info("server.stopping", drain_timeout=options.drain_timeout)
    finally:
        await runner.cleanup()
        for signum in signals:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
        log.info("server.stopped")
