"""An HTTP client for a running faaso (or any OpenFaaS-compatible gateway).

Async, over aiohttp; it never prints. Every failure is a :class:`ClientError`: the server's own
``{"error": ...}`` message with its HTTP status, or a message naming the gateway when it cannot
be reached. The management API (``/system``) gets basic auth as ``admin``; function calls
(``/function/<name>``) never carry faaso's credentials.

    async with Client("http://127.0.0.1:8080", password) as client:
        for status in await client.list_functions():
            ...
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from faaso import __version__
from faaso.errors import ClientError

USER = "admin"
INTERNAL_HEADER = "X-OpenFaaS-Internal"
CONNECT_TIMEOUT = 10.0
# Deploy, update and scale answer once the new instances are healthy (or have failed to be),
# which can take a function's whole startup timeout; the server bounds that, not the client.
API_TIMEOUT = 900.0
MAX_LOG_LINE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Invocation:
    """A function's answer. ``internal`` is true when the gateway made it (no such function...)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def internal(self) -> bool:
        return self.headers.get(INTERNAL_HEADER, "") != ""


def parse_gateway(gateway: str) -> URL:
    """The gateway's base URL, checked: http(s), a host, no query."""
    try:
        url = URL(gateway.strip())
    except (TypeError, ValueError) as exc:
        raise ClientError(f"the gateway URL {gateway!r} is not valid: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ClientError(f"the gateway URL {gateway!r} is not valid: give it as http://HOST:PORT")
    if url.query_string or url.fragment:
        raise ClientError(f"the gateway URL {gateway!r} must not have a query or a fragment")
    return url.with_path(url.path.rstrip("/") or "/")


def error_message(body: bytes, reason: str | None) -> str:
    """The server's ``{"error": ...}``, else its plain text, else the status's reason."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        doc = json.loads(text) if text else None
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"]:
        return str(doc["error"])
    if isinstance(doc, dict) and isinstance(doc.get("message"), str) and doc["message"]:
        return str(doc["message"])
    if text and len(text) <= 500 and doc is None:
        return text.splitlines()[0]
    return reason or "request failed"


class Client:
    def __init__(
        self,
        gateway: str,
        password: str | None = None,
        *,
        user: str = USER,
        timeout: float = API_TIMEOUT,
    ) -> None:
        self.base = parse_gateway(gateway)
        self.gateway = str(self.base).rstrip("/")
        self._auth = aiohttp.BasicAuth(user, password) if password is not None else None
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self._session = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
            headers={"User-Agent": f"faaso/{__version__}"},
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- plumbing ----------------------------------------------------------------------------

    def url(self, path: str) -> URL:
        """``path`` (which may carry a query string) under the gateway's base path."""
        base = str(self.base).rstrip("/")
        return URL(base + path)

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use the client as 'async with Client(...) as client'")
        return self._session

    def _unreachable(self, exc: BaseException) -> ClientError:
        if isinstance(exc, aiohttp.ClientConnectorError):
            errno = exc.os_error.errno
            reason = os.strerror(errno) if errno else str(exc.os_error) or "cannot connect"
            reason = reason[:1].lower() + reason[1:]
            return ClientError(
                f"cannot connect to the faaso gateway at {self.gateway}: {reason} "
                "(is 'faaso serve' running there? give another with --gateway or FAASO_GATEWAY)"
            )
        if isinstance(exc, TimeoutError):
            return ClientError(f"the faaso gateway at {self.gateway} did not answer in time")
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return ClientError(f"the faaso gateway at {self.gateway} closed the connection")
        return ClientError(f"request to the faaso gateway at {self.gateway} failed: {exc}")

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        ok: Sequence[int] = (),
    ) -> tuple[int, Any]:
        """A management API call: JSON in, JSON out. Raises ClientError on >= 400 (except ok)."""
        session = self._require_session()
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with session.request(
                method,
                self.url(path),
                data=data,
                params=params,
                headers=headers,
                auth=self._auth,
                timeout=aiohttp.ClientTimeout(total=self._timeout, sock_connect=CONNECT_TIMEOUT),
            ) as resp:
                raw = await resp.read()
                status, reason = resp.status, resp.reason
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc
        if status >= 400 and status not in ok:
            raise ClientError(error_message(raw, reason), status)
        if not raw.strip():
            return status, None
        try:
            return status, json.loads(raw)
        except ValueError as exc:
            raise ClientError(
                f"the gateway at {self.gateway} answered {method} {path} with something "
                f"that is not JSON: {raw[:200]!r}",
                status,
            ) from exc

    async def _json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        _, doc = await self._call(method, path, body=body, **kw)
        return doc

    @staticmethod
    def _message(doc: Any, default: str) -> str:
        if isinstance(doc, dict) and isinstance(doc.get("message"), str):
            return str(doc["message"])
        return default

    # -- functions ---------------------------------------------------------------------------

    async def list_functions(self, namespace: str | None = None) -> list[dict[str, Any]]:
        doc = await self._json("GET", "/system/functions", params=_ns_query(namespace))
        if not isinstance(doc, list):
            raise ClientError(f"the gateway at {self.gateway} sent a function list that is not one")
        return [item for item in doc if isinstance(item, dict)]

    async def describe(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        doc = await self._json(
            "GET", f"/system/function/{_segment(name)}", params=_ns_query(namespace)
        )
        if not isinstance(doc, dict):
            raise ClientError(
                f"the gateway at {self.gateway} sent a function status that is not one"
            )
        return doc

    async def deploy(self, deployment: Mapping[str, Any], *, update: bool = False) -> str:
        """POST a FunctionDeployment, or PUT it with ``update``; a PUT answered 404 is POSTed."""
        name = deployment.get("service")
        if update:
            status, doc = await self._call("PUT", "/system/functions", body=deployment, ok=(404,))
            if status != 404:
                return self._message(doc, f"function {name!r} updated")
        doc = await self._json("POST", "/system/functions", deployment)
        return self._message(doc, f"function {name!r} deployed")

    async def remove(self, name: str, namespace: str | None = None) -> str:
        doc = await self._json(
            "DELETE", "/system/functions", {"functionName": name, **_ns_body(namespace)}
        )
        return self._message(doc, f"function {name!r} removed")

    async def scale(self, name: str, replicas: int, namespace: str | None = None) -> str:
        doc = await self._json(
            "POST",
            f"/system/scale-function/{_segment(name)}",
            {"serviceName": name, "replicas": replicas, **_ns_body(namespace)},
        )
        return self._message(doc, f"function {name!r} scaled to {replicas}")

    async def reset_scale(self, name: str, namespace: str | None = None) -> str:
        doc = await self._json(
            "DELETE",
            f"/system/scale-function/{_segment(name)}",
            None,
            params=_ns_query(namespace),
        )
        return self._message(doc, f"function {name!r}: replica override dropped")

    async def store_list(self) -> dict[str, Any]:
        """The server's function store: ``{"location", "architecture", "functions": [...]}``."""
        doc = await self._json("GET", "/system/store")
        if not isinstance(doc, dict) or not isinstance(doc.get("functions"), list):
            raise ClientError("the server sent a store that is not {functions: [...]}")
        return doc

    async def store_describe(self, name: str) -> dict[str, Any]:
        doc = await self._json("GET", f"/system/store/{_segment(name)}")
        if not isinstance(doc, dict):
            raise ClientError("the server sent a store entry that is not an object")
        return doc

    async def store_deploy(self, name: str, new_name: str | None = None) -> str:
        """Deploy a store entry (as ``new_name``); answers once it is deployed."""
        body = {"name": new_name} if new_name else {}
        doc = await self._json("POST", f"/system/store/{_segment(name)}", body)
        return self._message(doc, f"store function {name!r} deployed")

    async def invoke(
        self,
        name: str,
        *,
        method: str = "GET",
        body: bytes | None = None,
        headers: Sequence[tuple[str, str]] = (),
        path: str = "",
        timeout: float | None = None,
        asynchronous: bool = False,
        namespace: str | None = None,
    ) -> Invocation:
        """Call a function at ``/function/<name>[.<namespace>]<path>`` (``/async-function/``
        with ``asynchronous``: the answer is then 202 with ``X-Call-Id``). Any status is
        returned, not raised."""
        session = self._require_session()
        if path and not path.startswith(("/", "?")):
            path = "/" + path
        prefix = "/async-function/" if asynchronous else "/function/"
        target = f"{name}.{namespace}" if namespace else name
        url = self.url(f"{prefix}{_segment(target)}{path}")
        try:
            async with session.request(
                method.upper(),
                url,
                data=body,
                headers=CIMultiDict(headers),
                timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=CONNECT_TIMEOUT),
            ) as resp:
                raw = await resp.read()
                return Invocation(resp.status, resp.headers, raw)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc

    # -- asynchronous calls ------------------------------------------------------------------

    async def async_jobs(
        self, *, state: str | None = None, function: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        params = {"limit": str(limit)}
        if state:
            params["state"] = state
        if function:
            params["function"] = function
        doc = await self._json("GET", "/system/async", params=params)
        return list(doc or [])

    async def async_job(self, call_id: str) -> dict[str, Any]:
        doc = await self._json("GET", f"/system/async/{_segment(call_id)}")
        return dict(doc or {})

    async def async_cancel(self, call_id: str) -> dict[str, Any]:
        """Cancel a job that has not started (``DELETE /system/async/CALL-ID``)."""
        doc = await self._json("DELETE", f"/system/async/{_segment(call_id)}")
        return dict(doc or {})

    async def async_dead(
        self, action: str, *, ids: Sequence[str] = (), function: str | None = None
    ) -> list[str]:
        """``replay`` or ``purge`` dead letters (all of them when neither is given)."""
        body: dict[str, Any] = {}
        if ids:
            body["ids"] = list(ids)
        if function:
            body["function"] = function
        doc = await self._json("POST", f"/system/async/{action}", body)
        key = "replayed" if action == "replay" else "purged"
        return [str(i) for i in (doc or {}).get(key, [])]

    # -- logs --------------------------------------------------------------------------------

    async def logs(
        self,
        name: str,
        *,
        tail: int | None = None,
        since: str | None = None,
        follow: bool = False,
        instance: str | None = None,
        namespace: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """The function's log entries (``timestamp``, ``instance``, ``text``...), as they come."""
        session = self._require_session()
        params = {"name": name, "follow": "true" if follow else "false"}
        if tail is not None:
            params["tail"] = str(tail)
        if since:
            params["since"] = since
        if instance:
            params["instance"] = instance
        params.update(_ns_query(namespace))
        try:
            async with session.get(
                self.url("/system/logs"),
                params=params,
                auth=self._auth,
                timeout=aiohttp.ClientTimeout(
                    total=None if follow else self._timeout, sock_connect=CONNECT_TIMEOUT
                ),
                read_bufsize=MAX_LOG_LINE,  # readline() takes lines up to twice this
            ) as resp:
                if resp.status >= 400:
                    raise ClientError(error_message(await resp.read(), resp.reason), resp.status)
                while True:
                    try:
                        line = await resp.content.readline()
                    except ValueError as exc:  # longer than the read buffer allows
                        raise ClientError(
                            f"the gateway at {self.gateway} sent a log line that is too long"
                        ) from exc
                    if not line:
                        return
                    if not line.strip():
                        continue
                    try:
                        entry = json.loads(line)
                    except ValueError as exc:
                        raise ClientError(
                            f"the gateway at {self.gateway} sent a log line that is not JSON: "
                            f"{line[:200]!r}"
                        ) from exc
                    if isinstance(entry, dict):
                        yield entry
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc

    # -- secrets -----------------------------------------------------------------------------

    async def list_secrets(self, namespace: str | None = None) -> list[dict[str, Any]]:
        doc = await self._json("GET", "/system/secrets", params=_ns_query(namespace))
        if not isinstance(doc, list):
            raise ClientError(f"the gateway at {self.gateway} sent a secret list that is not one")
        return [item for item in doc if isinstance(item, dict)]

    async def create_secret(self, name: str, value: bytes, namespace: str | None = None) -> str:
        body = {**_secret_body(name, value), **_ns_body(namespace)}
        doc = await self._json("POST", "/system/secrets", body)
        return self._message(doc, f"secret {name!r} created")

    async def update_secret(self, name: str, value: bytes, namespace: str | None = None) -> str:
        body = {**_secret_body(name, value), **_ns_body(namespace)}
        doc = await self._json("PUT", "/system/secrets", body)
        return self._message(doc, f"secret {name!r} updated")

    async def remove_secret(self, name: str, namespace: str | None = None) -> str:
        doc = await self._json("DELETE", "/system/secrets", {"name": name, **_ns_body(namespace)})
        return self._message(doc, f"secret {name!r} removed")

    # -- the server --------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """``/healthz``: 200 when every function is ready, 503 (not an error here) before."""
        _, doc = await self._call("GET", "/healthz", ok=(503,))
        if not isinstance(doc, dict):
            raise ClientError(f"the gateway at {self.gateway} sent a /healthz that is not JSON")
        return doc

    async def info(self) -> dict[str, Any]:
        doc = await self._json("GET", "/system/info")
        if not isinstance(doc, dict):
            raise ClientError(f"the gateway at {self.gateway} sent a /system/info that is not one")
        return doc


def _ns_query(namespace: str | None) -> dict[str, str]:
    """``?namespace=NS`` for a read (none: the server's default, ``openfaas-fn``)."""
    return {"namespace": namespace} if namespace else {}


def _ns_body(namespace: str | None) -> dict[str, str]:
    """``"namespace": NS`` in a write's body (none: the server's default)."""
    return {"namespace": namespace} if namespace else {}


def _segment(name: str) -> str:
    """A function name as one path segment (a name with '/' must not reach another route)."""
    return quote(name, safe="")


def _secret_body(name: str, value: bytes) -> dict[str, str]:
    """Text goes as ``value``; anything that is not UTF-8 as base64 ``rawValue``."""
    try:
        return {"name": name, "value": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"name": name, "rawValue": base64.b64encode(value).decode("ascii")}
