"""Running the app: lock the state directory, listen, start the control plane, wait for a
signal, shut down in order.

Start-up order (:func:`run_server`): lock the state directory (a second faaso on it is refused,
naming the PID that holds it), build the app, acquire its resources (the engine connection,
the stored deployments; nothing touches a container yet), bind the listening socket, and only
then start the control plane (adopt, clean up and launch containers). A taken port therefore
fails before any container is touched.

Signals are handled here and only here: SIGINT/SIGTERM stop the server, SIGHUP calls the app's
``Hooks.on_hangup`` (a reload), SIGUSR2 stops the server but leaves its containers running
(``Hooks.keep_running``: for an upgrade of faaso itself, the next start adopts them).

Shutdown order on SIGINT/SIGTERM: stop accepting connections, let in-flight requests finish
(bounded by ``drain_timeout``), then run the app's cleanup contexts in reverse: the supervisor
cancels what it was doing and stops its containers, then the HTTP client pools close.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from faaso.errors import ListenError
from faaso.gateway.fast.relay import FAST_PATH, FastSite
from faaso.logs import get_logger
from faaso.state.lock import state_lock


@dataclass(frozen=True, slots=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    drain_timeout: float = 15.0
    backlog: int = 2048
    # Relay plain small requests without aiohttp (faaso.gateway.fast); off: aiohttp serves all.
    fast_path: bool = True
    # Serve HTTPS with this context (faaso.config.serving.tls_context); None: plain HTTP.
    ssl_context: ssl.SSLContext | None = None


class Hooks:
    """What an app asks of :func:`serve`, filled in by its cleanup contexts.

    ``after_bind`` is work that must wait until the listening socket is bound (touching
    containers): with ``defer`` set (serve() sets it), a cleanup context stores it here instead
    of running it; without (an app under aiohttp's test client), it runs it at once.
    ``on_hangup`` is what SIGHUP does. ``keep_running`` is set by SIGUSR2 before the shutdown:
    the cleanup contexts then leave the containers running.
    """

    def __init__(self) -> None:
        self.defer = False
        self.keep_running = False
        self.after_bind: Callable[[], Awaitable[None]] | None = None
        self.on_hangup: Callable[[], None] | None = None


HOOKS = web.AppKey("faaso_hooks", Hooks)


async def run_server(
    state_dir: Path,
    make_app: Callable[[], web.Application],
    options: ServerOptions,
    *,
    stop: asyncio.Event | None = None,
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Hold the state directory's lock while ``make_app()``'s app is served."""
    with state_lock(state_dir):
        await serve(make_app(), options, stop=stop, on_listening=on_listening)


async def serve(
    app: web.Application,
    options: ServerOptions,
    *,
    stop: asyncio.Event | None = None,
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Serve ``app`` until ``stop`` is set or SIGINT/SIGTERM arrives, then shut down cleanly.

    Raises :class:`ListenError` when the socket cannot be bound."""
    log = get_logger("faaso.server")
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    hooks = app.get(HOOKS)
    if hooks is not None:
        hooks.defer = True

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

    def on_keep_running() -> None:
        if stop.is_set():
            log.warning("server.signal_again", signal="SIGUSR2", note="already shutting down")
            return
        log.info(
            "server.signal",
            signal="SIGUSR2",
            note="stopping; the containers keep running for the next start to adopt",
        )
        if hooks is not None:
            hooks.keep_running = True
        stop.set()

    def on_hangup() -> None:
        log.info("server.signal", signal="SIGHUP")
        if hooks is not None and hooks.on_hangup is not None:
            hooks.on_hangup()

    stop_signals = (signal.SIGINT, signal.SIGTERM)
    for signum in stop_signals:
        loop.add_signal_handler(signum, on_signal, signum)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    loop.add_signal_handler(signal.SIGUSR2, on_keep_running)
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
                ssl_context=options.ssl_context,
            )
        else:
            site = web.TCPSite(
                runner,
                options.host,
                options.port,
                backlog=options.backlog,
                reuse_address=True,
                ssl_context=options.ssl_context,
            )
        try:
            await site.start()
        except OSError as exc:
            raise ListenError(
                f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}"
            ) from exc
        port = site.port
        scheme = "https" if options.ssl_context is not None else "http"
        log.info("server.listening", url=f"{scheme}://{options.host}:{port}")
        if hooks is not None and hooks.after_bind is not None:
            await hooks.after_bind()
        if on_listening is not None:
            on_listening(port)
        await stop.wait()
        log.info("server.stopping", drain_timeout=options.drain_timeout)
    finally:
        await runner.cleanup()
        for signum in (*stop_signals, signal.SIGHUP, signal.SIGUSR2):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
        log.info("server.stopped")
