"""CORS policies, validated in one place: the routes file's top-level ``cors:`` block, a
function's own ``cors:`` block, and the ``faaso.cors.*`` annotations of an API deployment.

Every error is a :class:`CorsError` naming the key and the value; the routes file turns it into
a :class:`~faaso.errors.ConfigError` (with the file), a deployment into an
:class:`~faaso.errors.InvalidRequest` (a 400).

Which policy a function gets (:func:`cors_table`): its own ``cors:`` block in the routes file
(``cors: false`` turns CORS off for it), else its ``faaso.cors.*`` annotations, else the
top-level block, else none (requests and their answers pass through untouched).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from faaso.spec.cors import ANY, DEFAULT_METHODS, CorsPolicy
from faaso.spec.function import FunctionSpec

CORS_KEYS = frozenset(
    {
        "allow_origins",
        "allow_methods",
        "allow_headers",
        "expose_headers",
        "max_age",
        "allow_credentials",
    }
)
ANNOTATION_PREFIX = "faaso.cors."
MAX_AGE_LIMIT = 86400  # a day: browsers cap it lower anyway (Firefox 24 h, Chromium 2 h)

_ORIGIN = re.compile(r"^https?://[a-z0-9.-]+(?::[0-9]{1,5})?$|^null$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True, slots=True)
class CorsError(Exception):
    key: str
    value: object
    problem: str

    def __str__(self) -> str:
        return f"{self.key} = {self.value!r}: {self.problem}"


def _strings(key: str, value: object) -> list[str]:
    """A list of strings, or one string (YAML) / a comma-separated one (annotations)."""
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise CorsError(key, value, "must be a list of strings")
    if not items or any(not item for item in items):
        raise CorsError(key, value, "must not be empty or hold empty entries")
    return items


def parse_cors(doc: Mapping[str, object], key: str) -> CorsPolicy:
    """A ``cors:`` block (``key`` is where it is: ``cors``, ``functions.f.cors``)."""
    for k in doc:
        if k not in CORS_KEYS:
            raise CorsError(f"{key}.{k}", k, f"unknown key; expected one of {sorted(CORS_KEYS)}")
    if "allow_origins" not in doc:
        raise CorsError(
            f"{key}.allow_origins", None, "is required: the origins allowed, or ['*'] for any"
        )
    origins: list[str] = []
    for origin in _strings(f"{key}.allow_origins", doc["allow_origins"]):
        if origin != ANY and not _ORIGIN.match(origin.lower()):
            raise CorsError(
                f"{key}.allow_origins",
                origin,
                "is not an origin: scheme://host[:port] with no path, e.g. "
                "https://app.example.com, or '*' for any",
            )
        origins.append(origin.lower().rstrip("/"))
    methods = list(DEFAULT_METHODS)
    if "allow_methods" in doc:
        methods = _strings(f"{key}.allow_methods", doc["allow_methods"])
        for method in methods:
            if method != ANY and not _TOKEN.match(method):
                raise CorsError(f"{key}.allow_methods", method, "is not an HTTP method")
        methods = [m.upper() for m in methods]
    headers: list[str] = []
    if "allow_headers" in doc:
        headers = _strings(f"{key}.allow_headers", doc["allow_headers"])
        for header in headers:
            if header != ANY and not _TOKEN.match(header):
                raise CorsError(f"{key}.allow_headers", header, "is not a header name")
        headers = [h.lower() for h in headers]
    exposed: list[str] = []
    if "expose_headers" in doc:
        exposed = _strings(f"{key}.expose_headers", doc["expose_headers"])
        for header in exposed:
            if header != ANY and not _TOKEN.match(header):
                raise CorsError(f"{key}.expose_headers", header, "is not a header name")
    max_age: int | None = None
    if doc.get("max_age") is not None:
        raw = doc["max_age"]
        if isinstance(raw, str) and raw.strip().isdigit():
            raw = int(raw)
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_AGE_LIMIT:
            raise CorsError(
                f"{key}.max_age", doc["max_age"], f"must be whole seconds from 0 to {MAX_AGE_LIMIT}"
            )
        max_age = raw
    credentials = doc.get("allow_credentials", False)
    if isinstance(credentials, str) and credentials.lower() in ("true", "false"):
        credentials = credentials.lower() == "true"
    if not isinstance(credentials, bool):
        raise CorsError(f"{key}.allow_credentials", credentials, "must be true or false")
    if credentials and ANY in origins:
        raise CorsError(
            f"{key}.allow_origins",
            doc["allow_origins"],
            "'*' cannot be used with allow_credentials: true (browsers refuse it); "
            "list the origins",
        )
    return CorsPolicy(
        allow_origins=tuple(dict.fromkeys(origins)),
        allow_methods=tuple(dict.fromkeys(methods)),
        allow_headers=tuple(dict.fromkeys(headers)),
        expose_headers=tuple(dict.fromkeys(exposed)),
        max_age=max_age,
        allow_credentials=credentials,
    )


def cors_from_annotations(annotations: Mapping[str, str]) -> CorsPolicy | None:
    """The policy the ``faaso.cors.*`` annotations describe (lists comma-separated), or None
    when there are none. Raises :class:`CorsError` naming the annotation."""
    given = {
        k[len(ANNOTATION_PREFIX) :]: v
        for k, v in annotations.items()
        if k.startswith(ANNOTATION_PREFIX)
    }
    if not given:
        return None
    try:
        return parse_cors(given, "annotations")
    except CorsError as exc:
        key = exc.key.replace("annotations.", ANNOTATION_PREFIX, 1)
        raise CorsError(key, exc.value, exc.problem) from None


def cors_table(
    top: CorsPolicy | None,
    own: Mapping[str, CorsPolicy | None],
    functions: Mapping[str, FunctionSpec],
) -> Mapping[str, CorsPolicy]:
    """Each function's policy (functions without one are left out; empty: CORS is off).
    ``own``: the routes file's per-function blocks (None: ``cors: false``)."""
    table: dict[str, CorsPolicy] = {}
    for name, spec in functions.items():
        if name in own:
            policy = own[name]
        else:
            try:
                policy = cors_from_annotations(spec.annotations)
            except CorsError:  # validated when deployed; a stored older one is ignored
                policy = None
            if policy is None:
                policy = top
        if policy is not None:
            table[name] = policy
    return MappingProxyType(table)
