"""The routes file's ``server:`` block and the flags on top of it, validated in one place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from faaso.config.reloader import Reloader
from faaso.config.routes_file import Config, load_config
from faaso.config.serving import ServerSettings, server_settings
from faaso.errors import ConfigError
from faaso.logs import get_logger
from tests.helpers import eventually


def _load(tmp_path: Path, block: str) -> ServerSettings:
    path = tmp_path / "routes.yml"
    path.write_text(block + "\nfunctions: {}\n")
    return load_config(path).server


def test_defaults_and_block(tmp_path: Path) -> None:
    assert _load(tmp_path, "") == ServerSettings()
    (tmp_path / "c.pem").write_text("x")
    (tmp_path / "k.pem").write_text("x")
    got = _load(
        tmp_path,
        "server: {access_log: true, metrics_auth: true, certfile: c.pem, keyfile: k.pem}",
    )
    assert got == ServerSettings(True, True, tmp_path / "c.pem", tmp_path / "k.pem")


@pytest.mark.parametrize(
    ("block", "key"),
    [
        ("server: {access_log: yes please}", "server.access_log"),
        ("server: {metrics_auth: 1}", "server.metrics_auth"),
        ("server: {port: 1}", "server.port"),
        ("server: {certfile: missing.pem, keyfile: missing.pem}", "server.certfile"),
        ("server: {keyfile: k.pem}", "server.certfile"),
        ("server: [x]", "server"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, block: str, key: str) -> None:
    (tmp_path / "k.pem").write_text("x")
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, block)
    assert caught.value.key == key
    assert caught.value.path == str(tmp_path / "routes.yml")


def test_flags_on_top(tmp_path: Path) -> None:
    base = ServerSettings(access_log=True, certfile=tmp_path / "a", keyfile=tmp_path / "b")
    merged, source, prefix = server_settings(base, tmp_path / "r.yml", metrics_auth=True)
    assert (merged.access_log, merged.metrics_auth, merged.certfile) == (
        True,
        True,
        tmp_path / "a",
    )
    assert (source, prefix) == (tmp_path / "r.yml", "server.")
    merged, source, prefix = server_settings(base, tmp_path / "r.yml", certfile=Path("c.pem"))
    assert merged.certfile == Path("c.pem").resolve()
    assert merged.keyfile is None  # the flags replace the file's pair
    assert prefix == "--"


async def test_a_reload_says_the_server_block_needs_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "routes.yml"
    path.write_text("functions: {}\n")
    applied: list[Config] = []

    async def apply(config: Config) -> object:
        applied.append(config)
        return {}

    with capture_logs() as logs:
        reloader = Reloader(load_config(path), apply, get_logger("test"), watch=False)
        reloader.start()
        try:
            reloader.trigger()  # nothing changed in server:
            await eventually(_count(applied, 1), 10, "the first reload")
            path.write_text("server: {access_log: true}\nfunctions: {}\n")
            reloader.trigger()
            await eventually(_count(applied, 2), 10, "the second reload")
        finally:
            await reloader.close()
    warned = [e for e in logs if e["event"] == "reload.server_unchanged"]
    assert len(warned) == 1
    assert "restart" in warned[0]["note"]


def _count(items: list[Config], n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(items) >= n

    return check
