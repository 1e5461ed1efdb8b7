"""How ``faaso serve`` listens and what it exposes: the routes file's ``server:`` block, merged
with the command line's flags (a flag wins), validated in one place.

These settings are read when faaso starts; a reload does not change them (a changed block is
logged as needing a restart).
"""

from __future__ import annotations

import dataclasses
import ssl
from dataclasses import dataclass
from pathlib import Path

from faaso.errors import ConfigError

SERVER_KEYS = frozenset({"access_log", "metrics_auth", "certfile", "keyfile"})


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """``access_log``: one line per request (method, path, function, status, duration, call
    id); ``metrics_auth``: ``/metrics`` needs the API's basic auth; ``certfile``/``keyfile``:
    serve HTTPS with this certificate (chain) and private key (PEM files)."""

    access_log: bool = False
    metrics_auth: bool = False
    certfile: Path | None = None
    keyfile: Path | None = None


def parse_server(doc: dict[str, object], path: Path) -> ServerSettings:
    """The ``server:`` block of the routes file at ``path`` (files relative to it)."""
    for k in doc:
        if k not in SERVER_KEYS:
            raise ConfigError(
                path, f"server.{k}", k, f"unknown key; expected one of {sorted(SERVER_KEYS)}"
            )
    flags: dict[str, bool] = {}
    for key in ("access_log", "metrics_auth"):
        value = doc.get(key, False)
        if not isinstance(value, bool):
            raise ConfigError(path, f"server.{key}", value, "must be true or false")
        flags[key] = value
    files: dict[str, Path | None] = {}
    for key in ("certfile", "keyfile"):
        value = doc.get(key)
        if value is None:
            files[key] = None
            continue
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(path, f"server.{key}", value, "must be a file name")
        files[key] = (path.parent / value).resolve()
    settings = ServerSettings(
        access_log=flags["access_log"],
        metrics_auth=flags["metrics_auth"],
        certfile=files["certfile"],
        keyfile=files["keyfile"],
    )
    check_tls(settings, path, "server.")
    return settings


def server_settings(
    settings: ServerSettings,
    path: Path,
    *,
    access_log: bool = False,
    metrics_auth: bool = False,
    certfile: Path | None = None,
    keyfile: Path | None = None,
) -> tuple[ServerSettings, Path | str, str]:
    """The routes file's settings with the command line's on top: a flag turns a setting on;
    ``--certfile``/``--keyfile``, when either is given, replace both of the file's. Returns the
    settings and where the TLS files came from (source, key prefix) for error messages."""
    merged = dataclasses.replace(
        settings,
        access_log=settings.access_log or access_log,
        metrics_auth=settings.metrics_auth or metrics_auth,
    )
    if certfile is None and keyfile is None:
        return merged, path, "server."
    merged = dataclasses.replace(
        merged,
        certfile=certfile.resolve() if certfile is not None else None,
        keyfile=keyfile.resolve() if keyfile is not None else None,
    )
    return merged, "the command line", "--"


def check_tls(settings: ServerSettings, source: Path | str, prefix: str) -> None:
    """Both files or neither, and each a readable file. ``prefix`` names where they were given
    (``server.`` in the routes file, ``--`` on the command line)."""
    cert, key = settings.certfile, settings.keyfile
    if (cert is None) != (key is None):
        given, missing = ("certfile", "keyfile") if cert is not None else ("keyfile", "certfile")
        raise ConfigError(
            source,
            f"{prefix}{missing}",
            None,
            f"{prefix}{given} is given: HTTPS needs both the certificate and its private key",
        )
    for name, file in (("certfile", cert), ("keyfile", key)):
        if file is not None and not file.is_file():
            raise ConfigError(source, f"{prefix}{name}", str(file), "is not a file")


def tls_context(settings: ServerSettings, source: Path | str, prefix: str) -> ssl.SSLContext | None:
    """The server side TLS context of ``settings`` (None: plain HTTP). Raises ConfigError when
    the certificate or the key cannot be loaded, or do not belong together."""
    check_tls(settings, source, prefix)
    if settings.certfile is None or settings.keyfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.certfile, settings.keyfile)
    except ssl.SSLError as exc:
        raise ConfigError(
            source,
            f"{prefix}certfile",
            str(settings.certfile),
            f"cannot load the certificate with {prefix}keyfile {str(settings.keyfile)!r}: "
            f"{exc.reason or exc}",
        ) from exc
    except OSError as exc:
        raise ConfigError(
            source, f"{prefix}certfile", str(settings.certfile), f"cannot read it: {exc.strerror}"
        ) from exc
    # HTTP/1.1 only: the gateway speaks no HTTP/2.
    context.set_alpn_protocols(["http/1.1"])
    return context
