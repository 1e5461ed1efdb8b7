"""CSRF protection for the UI's forms: a token per browser session, checked on every change.

The UI's session is a random id in an HttpOnly, SameSite=Strict cookie (path ``/ui``); its
token is an HMAC of that id under a key made when the server starts. Every request that is not
GET/HEAD/OPTIONS must carry the token, in the ``X-CSRF-Token`` header (htmx sends it on every
request, from ``hx-headers`` on the page's body) or in a ``csrf_token`` form field (each form
has it as a hidden input); otherwise it is refused with 403. Another site can neither read the
token nor make the browser send the cookie (SameSite=Strict).

Written by hand: it is twenty lines over the standard library's ``hmac``, and the aiohttp CSRF
packages are unmaintained or need a session store faaso does not otherwise have.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

COOKIE = "faaso_ui_session"
HEADER = "X-CSRF-Token"
FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION = web.RequestKey("faaso_ui_session", str)  # this request's session id
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Csrf:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def token(self, session: str) -> str:
        return hmac.new(self._key, session.encode(), hashlib.sha256).hexdigest()

    def valid(self, session: str | None, given: str | None) -> bool:
        if not session or not given:
            return False
        return hmac.compare_digest(self.token(session), given)

    def middleware(
        self, refused: Callable[[web.Request, str], web.StreamResponse]
    ) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
        @web.middleware
        async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            cookie = request.cookies.get(COOKIE)
            session = cookie or secrets.token_urlsafe(24)
            request[SESSION] = session
            if request.method not in SAFE_METHODS:
                given = request.headers.get(HEADER)
                if given is None and request.content_type in (
                    "application/x-www-form-urlencoded",
                    "multipart/form-data",
                ):
                    form = await request.post()
                    field = form.get(FIELD)
                    given = field if isinstance(field, str) else None
                if not self.valid(cookie, given):
                    return refused(
                        request, "this form has no valid CSRF token: reload the page and try again"
                    )
            response = await handler(request)
            if cookie is None and not response.prepared:
                response.set_cookie(COOKIE, session, httponly=True, samesite="Strict", path="/ui")
            return response

        return csrf_middleware
