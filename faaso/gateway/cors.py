"""CORS at the gateway: preflights answered here, ``Access-Control-Allow-Origin`` added to the
answers of allowed origins, for every function that has a policy (:mod:`faaso.config.cors`
says which). A function without one is untouched: its preflights and headers pass through.

Only requests that carry an ``Origin`` header, to a function with a policy, come here; the fast
path hands those to aiohttp (``faaso.gateway.fast.relay``), so a plain request pays nothing.

The rules are the Fetch standard's CORS protocol, written by hand: aiohttp-cors binds policies
to aiohttp's routes once at start-up, while here a policy belongs to a function, is swapped on
reload, and must cover the route table's paths, ``/function/`` and ``/async-function/`` alike.

- A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) never reaches
  the function: 204 with the policy's ``Access-Control-Allow-*`` and ``Max-Age`` when the
  origin, the method and the requested headers are allowed, else 403 with a JSON error that
  says which was not.
- Any other request goes to the function; on its answer the function's own
  ``Access-Control-Allow-Origin`` and ``-Allow-Credentials`` are replaced by the policy's: the
  origin (or ``*`` for a policy of any origin without credentials) and ``true`` when the policy
  allows credentials, for an allowed origin; nothing for another. Both carry ``Vary: Origin``,
  so a cache keeps answers to different origins apart. A policy with ``expose_headers`` also
  replaces the function's ``Access-Control-Expose-Headers`` (for an allowed origin); without
  it, the function's own is kept.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from multidict import CIMultiDict, istr

from faaso.gateway.messages import msg_cors_refused
from faaso.gateway.proxy import json_error
from faaso.spec.cors import ANY, CorsPolicy

ORIGIN = istr("Origin")
REQUEST_METHOD = istr("Access-Control-Request-Method")
REQUEST_HEADERS = istr("Access-Control-Request-Headers")
ALLOW_ORIGIN = "Access-Control-Allow-Origin"
ALLOW_CREDENTIALS = "Access-Control-Allow-Credentials"
EXPOSE_HEADERS = "Access-Control-Expose-Headers"
# The function's own fields that are always replaced (the policy's other fields replace theirs).
_REPLACED = (istr(ALLOW_ORIGIN), istr(ALLOW_CREDENTIALS))
_VARY = istr("Vary")
# Where a request's answer fields wait for the response to be prepared (its headers sent).
FIELDS_KEY = web.RequestKey("faaso_cors_fields", list[tuple[str, str]])

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _allow_origin(policy: CorsPolicy, origin: str) -> str:
    return ANY if ANY in policy.allow_origins and not policy.allow_credentials else origin


def answer_fields(policy: CorsPolicy, origin: str) -> list[tuple[str, str]]:
    """The CORS fields of an answer to a request from ``origin``."""
    fields = [("Vary", "Origin")]
    if policy.allows_origin(origin):
        fields.append((ALLOW_ORIGIN, _allow_origin(policy, origin)))
        if policy.allow_credentials:
            fields.append((ALLOW_CREDENTIALS, "true"))
        if policy.expose_headers:
            fields.append((EXPOSE_HEADERS, ", ".join(policy.expose_headers)))
    return fields


def preflight(policy: CorsPolicy, request: web.Request, function: str) -> web.Response:
    """The answer to a preflight request for ``function``."""
    origin = request.headers[ORIGIN]
    method = request.headers[REQUEST_METHOD].strip()
    asked = [
        h.strip().lower() for h in request.headers.get(REQUEST_HEADERS, "").split(",") if h.strip()
    ]
    refused: str | None = None
    if not policy.allows_origin(origin):
        refused = f"origin {origin!r} is not in its allow_origins"
    elif not policy.allows_method(method):
        refused = f"method {method!r} is not in its allow_methods"
    else:
        bad = policy.disallowed_headers(asked)
        if bad:
            refused = f"header(s) {', '.join(bad)} not in its allow_headers"
    if refused is not None:
        response = json_error(403, msg_cors_refused(function, refused), function, None)
        response.headers["Vary"] = "Origin"
        return response
    headers = CIMultiDict(answer_fields(policy, origin))
    headers["Access-Control-Allow-Methods"] = (
        method if ANY in policy.allow_methods else ", ".join(policy.allow_methods)
    )
    allowed = ", ".join(asked) if ANY in policy.allow_headers else ", ".join(policy.allow_headers)
    if allowed:
        headers["Access-Control-Allow-Headers"] = allowed
    if policy.max_age is not None:
        headers["Access-Control-Max-Age"] = str(policy.max_age)
    return web.Response(status=204, headers=headers)


async def handle(
    request: web.Request, policy: CorsPolicy, function: str, handler: Handler
) -> web.StreamResponse:
    """A request with an ``Origin`` for ``function``, whose policy is ``policy``: a preflight
    is answered here, anything else goes on to ``handler`` and gets the policy's fields."""
    if request.method == "OPTIONS" and REQUEST_METHOD in request.headers:
        return preflight(policy, request, function)
    request[FIELDS_KEY] = answer_fields(policy, request.headers[ORIGIN])
    return await handler(request)


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp's signal, just before a response's head is sent: the policy's fields replace the
    function's own ``Access-Control-Allow-Origin`` and ``-Allow-Credentials`` (and
    ``-Expose-Headers`` when the policy has its own)."""
    fields = request.get(FIELDS_KEY)
    if fields is None:
        return
    headers = response.headers
    for name in {*_REPLACED, *(istr(n) for n, _ in fields)} - {_VARY}:
        headers.popall(name, None)
    for name, value in fields:
        headers.add(name, value)
