"""Basic auth for the management API, as the OpenFaaS gateway does it.

User ``admin``; the password lives in ``<state-dir>/secrets/basic-auth-password``, generated
(random, mode 0600) on first start. Its path is logged, never its value. Every ``/system/*``
route needs it, and so does the web UI under ``/ui`` (and ``/metrics`` with
``--metrics-auth``); ``/function/*``, ``/healthz`` and the user routes stay open.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from faaso.state.files import atomic_write, private_dir

USER = "admin"
REALM = "faaso"
PASSWORD_FILE = Path("secrets") / "basic-auth-password"
PROTECTED_PREFIX = "/system"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def password_path(state_dir: Path) -> Path:
    return state_dir / PASSWORD_FILE


def ensure_password(state_dir: Path) -> tuple[str, bool]:
    """Read the password, creating it first when missing. Returns (password, created)."""
    path = password_path(state_dir)
    private_dir(path.parent)
    if path.is_file():
        password = path.read_text(encoding="utf-8").strip()
        if password:
            return password, False
    password = secrets.token_urlsafe(24)
    atomic_write(path, password.encode() + b"\n", mode=0o600)
    return password, True


def _authorized(header: str | None, password: str) -> bool:
    if not header or not header.startswith("Basic "):
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    user, sep, given = decoded.partition(":")
    if not sep:
        return False
    ok_user = hmac.compare_digest(user.encode(), USER.encode())
    ok_password = hmac.compare_digest(given.encode(), password.encode())
    return ok_user and ok_password


def basic_auth_middleware(password: str, prefix: str = PROTECTED_PREFIX) -> Middleware:
    """Basic auth as admin for every path under ``prefix`` (``/system``; the UI's ``/ui``;
    ``/metrics`` with ``--metrics-auth``)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        protected = path == prefix or path.startswith(prefix + "/")
        if protected and not _authorized(request.headers.get("Authorization"), password):
            return web.json_response(
                {"error": "authentication required: basic auth as admin"},
                status=401,
                headers={"WWW-Authenticate": f'Basic realm="{REALM}"'},
            )
        return await handler(request)

    return middleware
