"""A CORS policy: which browser origins may call a function, and how (the Fetch standard's
CORS protocol). Built and validated in :mod:`faaso.config.cors`; applied by the gateway
(:mod:`faaso.gateway.cors`)."""

from __future__ import annotations

from dataclasses import dataclass

ANY = "*"
DEFAULT_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """``allow_origins``: exact origins (``scheme://host[:port]``, lowercased) or ``("*",)``;
    ``allow_methods``: method tokens (upper case) or ``("*",)``; ``allow_headers``: header
    names (lower case) or ``("*",)``; ``expose_headers``: response header names a page's
    script may read (empty: the function's own say); ``max_age``: seconds a browser may cache
    a preflight's answer (None: not said); ``allow_credentials``: cookies and HTTP auth may
    be sent."""

    allow_origins: tuple[str, ...]
    allow_methods: tuple[str, ...] = DEFAULT_METHODS
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None
    allow_credentials: bool = False

    def allows_origin(self, origin: str) -> bool:
        return ANY in self.allow_origins or origin.lower() in self.allow_origins

    def allows_method(self, method: str) -> bool:
        return ANY in self.allow_methods or method.upper() in self.allow_methods

    def disallowed_headers(self, names: list[str]) -> list[str]:
        """Of the (lowercased) header names a preflight asks for, those not allowed."""
        if ANY in self.allow_headers:
            return []
        return [n for n in names if n not in self.allow_headers]
