"""HTTPS (``--certfile``/``--keyfile``): ``serve()`` on one TLS listener, the fast path relaying
under TLS and handing connections to aiohttp as over plain HTTP. A self-signed certificate made
by the test with openssl; a real aiohttp function and client on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import pytest
import uvloop
from aiohttp import web

from faaso.config.serving import ServerSettings, tls_context
from faaso.errors import ConfigError
from faaso.gateway.app import GatewayState, gateway_app
from faaso.server.serve import ServerOptions, serve
from faaso.spec.endpoint import Endpoint
from faaso.spec.routing import RouteTable
from tests.helpers import free_port, make_certificate


async def _https_roundtrips(cert: Path, key: Path, fast: bool) -> None:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(text=f"{request.headers['X-Forwarded-Proto']} {len(body)}")

    app = web.Application(client_max_size=2**20)
    app.router.add_route("*", "/{tail:.*}", echo)
    backend = web.AppRunner(app, access_log=None)
    await backend.setup()
    backend_port = free_port()
    await web.TCPSite(backend, "127.0.0.1", backend_port).start()
    state = GatewayState(RouteTable({"/f": "f"}, {"f"}))
    state.pools.get("f").add("f-0", Endpoint("127.0.0.1", backend_port))
    context = tls_context(ServerSettings(certfile=cert, keyfile=key), "test", "--")
    assert context is not None
    port = free_port()
    stop = asyncio.Event()
    listening = asyncio.Event()
    server = asyncio.create_task(
        serve(
            gateway_app(state),
            ServerOptions(port=port, fast_path=fast, ssl_context=context, drain_timeout=2),
            stop=stop,
            on_listening=lambda _port: listening.set(),
        )
    )
    try:
        await asyncio.wait_for(listening.wait(), 10)
        trust = ssl.create_default_context(cafile=str(cert))
        base = f"https://127.0.0.1:{port}"
        # One connection (limit=1): relayed, handed off (healthz, a large upload), relayed.
        connector = aiohttp.TCPConnector(ssl=trust, limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.get(base + "/f/x") as resp:
                assert (resp.status, await resp.text()) == (200, "https 0")
            async with session.get(base + "/healthz") as resp:
                assert resp.status == 200
            async with session.post(base + "/f/up", data=b"x" * 300_000) as resp:
                assert (resp.status, await resp.text()) == (200, "https 300000")
            async with session.post(base + "/f/small", data=b"y" * 10) as resp:
                assert (resp.status, await resp.text()) == (200, "https 10")
        # A client that does not trust the certificate is refused by its own TLS check.
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(base + "/f/x")
    finally:
        stop.set()
        await asyncio.wait_for(server, 20)
        await backend.cleanup()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
def test_https_on_both_front_ends(tmp_path: Path, fast: bool, loop: str) -> None:
    """On asyncio's loop and on uvloop (what ``faaso serve`` runs on): their TLS transports
    both take the fast path's hand-off to aiohttp."""
    cert, key = make_certificate(tmp_path)
    factory = uvloop.new_event_loop if loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_https_roundtrips(cert, key, fast))


def test_bad_certificate_or_key_is_a_config_error(tmp_path: Path) -> None:
    first = tmp_path / "one"
    second = tmp_path / "two"
    first.mkdir()
    second.mkdir()
    cert, _ = make_certificate(first)
    _, other_key = make_certificate(second)
    with pytest.raises(ConfigError) as caught:
        tls_context(ServerSettings(certfile=cert, keyfile=other_key), "routes.yml", "server.")
    assert caught.value.key == "server.certfile"
    assert "server.keyfile" in caught.value.problem
    with pytest.raises(ConfigError, match="--keyfile"):
        tls_context(ServerSettings(certfile=cert), "the command line", "--")
    with pytest.raises(ConfigError, match="is not a file"):
        tls_context(ServerSettings(certfile=cert, keyfile=tmp_path / "nope.pem"), "x", "--")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    with pytest.raises(ConfigError, match="cannot load"):
        tls_context(ServerSettings(certfile=not_pem, keyfile=not_pem), "x", "--")
