"""The access log: one line per request, off unless asked for (``--access-log``,
``server.access_log``), rendered as every other log line (console or JSON, ``--log-format``).

Both front-ends write it: the fast path for what it relays or refuses itself, aiohttp (a
middleware, added only when the log is on) for what it serves. Each line has the method, the
path (as sent, without the query string, which may carry secrets), the function (null for
faaso's own paths), the status (499: the client left first), the duration in milliseconds and
the call id (null when the answer has none).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from structlog.typing import FilteringBoundLogger

from faaso.gateway.messages import CALL_ID, CLIENT_GONE
from faaso.logs import get_logger

EVENT = "access"


class AccessLog:
    def __init__(self, log: FilteringBoundLogger | None = None) -> None:
        self._log = log or get_logger("faaso.access")

    def record(
        self,
        method: str,
        path: str,
        function: str | None,
        status: int,
        duration: float,
        call_id: str | None,
    ) -> None:
        self._log.info(
            EVENT,
            method=method,
            path=path,
            function=function,
            status=status,
            duration_ms=round(duration * 1000, 3),
            call_id=call_id,
        )


def access_log_middleware(
    log: AccessLog, function_of: Callable[[web.Request], str | None]
) -> Middleware:
    """The aiohttp side's lines; ``function_of`` names the function a request went to."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        status = 500
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_GONE
            raise
        finally:
            call_id = response.headers.get(CALL_ID) if response is not None else None
            log.record(
                request.method,
                request.raw_path.partition("?")[0],
                function_of(request),
                status,
                time.monotonic() - started,
                call_id,
            )

    return middleware
