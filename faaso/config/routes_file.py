"""The routes file: typed, frozen dataclasses, validated in one place.

``load_config(path)`` is the only way in. Every error it raises is a :class:`ConfigError` naming
the file, the dotted key and the offending value, so the operator can fix it without guessing.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from faaso.config.cors import CorsError, cors_from_annotations, parse_cors
from faaso.config.host import host_cpus, host_memory
from faaso.config.runtimes import RuntimeCatalog, load_function_file
from faaso.config.scaling import ScaleError, parse_scaling
from faaso.config.serving import ServerSettings, parse_server
from faaso.config.swarm import RegistryLogin, SwarmSettings, parse_registry, parse_swarm
from faaso.config.yamlutil import describe_error, load_strict
from faaso.errors import ConfigError
from faaso.spec.asyncjob import check_async_annotations, valid_host_pattern
from faaso.spec.cors import CorsPolicy
from faaso.spec.function import (
    DEFAULT_HEALTH_FAILURES,
    DEFAULT_HEALTH_INTERVAL,
    DEFAULT_HEALTH_PATH,
    DEFAULT_HEALTH_TIMEOUT,
    DEFAULT_STARTUP_TIMEOUT,
    DEFAULT_TIMEOUT,
    ENV_NAME_RE,
    FUNCTION_NAME_RE,
    LABEL_KEY_RE,
    MAX_REPLICAS,
    MIN_MEMORY,
    FunctionSpec,
    Limits,
    parse_memory,
    valid_secret_name,
)
from faaso.spec.routing import RESERVED_PREFIXES, ROUTE_SEGMENT_RE, normalise_route

TOP_KEYS = frozenset(
    {
        "functions",
        "routes",
        "runtimes",
        "async",
        "store",
        "backend",
        "registry",
        "cors",
        "server",
        "swarm",
    }
)
BACKENDS = ("docker", "swarm")
FUNCTION_KEYS = frozenset(
    {
        "source",
        "runtime",
        "image",
        "replicas",
        "env",
        "labels",
        "timeout",
        "startup_timeout",
        "health_path",
        "health_interval",
        "health_timeout",
        "health_failures",
        "limits",
        "secrets",
        "read_only_root",
        "annotations",
        "max_inflight",
        "async_concurrency",
        "scale",
        "cors",
    }
)
ASYNC_KEYS = frozenset(
    {
        "callback_hosts",
        "concurrency",
        "max_running",
        "max_body",
        "retention",
        "callback_attempts",
        "callback_min_wait",
        "callback_max_wait",
    }
)
LIMIT_KEYS = frozenset({"memory", "cpus"})


@dataclass(frozen=True, slots=True)
class AsyncSettings:
    """The routes file's ``async:`` block: asynchronous invocations."""

    callback_hosts: tuple[str, ...] = ()  # host or host:port patterns; empty: any host
    concurrency: int = 4  # jobs of one function run at once, unless the function says
    max_running: int = 64  # jobs run at once over all functions
    max_body: int = 1024 * 1024  # bytes an asynchronous request may carry
    retention: float = 3600.0  # seconds a finished job (and its response) is kept
    callback_attempts: int = 20  # deliveries tried before a callback is given up
    callback_min_wait: float = 1.0  # seconds before the first callback retry (doubling)
    callback_max_wait: float = 300.0  # longest wait between callback retries


@dataclass(frozen=True, slots=True)
class Config:
    """A whole routes file."""

    path: Path
    functions: Mapping[str, FunctionSpec]
    routes: Mapping[str, str]  # normalised path prefix -> function name
    runtime_dirs: tuple[Path, ...] = ()
    async_settings: AsyncSettings = AsyncSettings()
    # The function store (faaso.config.store): a file's absolute path or an http(s) URL;
    # None: the store faaso ships.
    store: str | None = None
    backend: str | None = None  # docker or swarm; None: not said (docker, or --backend)
    registry: str | None = None  # where images are pushed for the Swarm's nodes
    registry_login: RegistryLogin | None = None  # who faaso is there (faaso.config.swarm)
    swarm: SwarmSettings = dataclasses.field(default_factory=SwarmSettings)  # faaso.config.swarm
    # CORS (faaso.config.cors): the top-level block, and the functions' own blocks (None:
    # ``cors: false``, off for that function).
    cors: CorsPolicy | None = None
    function_cors: Mapping[str, CorsPolicy | None] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )
    # read at start only (faaso.config.serving)
    server: ServerSettings = dataclasses.field(default_factory=ServerSettings)


class _Checker:
    """Validation helpers that remember which file they are checking."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, value: object, problem: str) -> ConfigError:
        return ConfigError(self.path, key, value, problem)

    def mapping(self, key: str, value: object) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, value, "must be a mapping")
        for k in value:
            if not isinstance(k, str):
                raise self.fail(f"{key}.{k}", k, "keys must be strings")
        return value

    def known_keys(self, key: str, doc: Mapping[str, Any], allowed: frozenset[str]) -> None:
        for k in doc:
            if k not in allowed:
                where = f"{key}.{k}" if key else k
                raise self.fail(where, k, f"unknown key; expected one of {sorted(allowed)}")

    def string(self, key: str, value: object) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, value, "must be a non-empty string")
        return value

    def number(self, key: str, value: object, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, value, "must be a number")
        number = float(value)
        if not math.isfinite(number) or not low < number <= high:
            raise self.fail(key, value, f"must be greater than {low:g} and at most {high:g}")
        return number

    def str_map(self, key: str, value: object, key_re: re.Pattern[str]) -> Mapping[str, str]:
        out: dict[str, str] = {}
        for k, v in self.mapping(key, value).items():
            if not key_re.match(k):
                raise self.fail(f"{key}.{k}", k, "is not a valid name")
            if isinstance(v, bool):
                v = "true" if v else "false"
            if v is None:
                v = ""
            if not isinstance(v, str | int | float):
                raise self.fail(f"{key}.{k}", v, "must be a string, number or boolean")
            out[k] = str(v)
        return MappingProxyType(out)


def load_config(path: Path | str, extra_runtime_dirs: tuple[Path, ...] = ()) -> Config:
    """Read, parse and validate a routes file. Raises :class:`ConfigError`."""
    path = Path(path).resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, "", str(path), f"cannot read the file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "", str(path), "the file is not UTF-8") from exc
    try:
        doc = load_strict(text)
    except yaml.YAMLError as exc:
        where, problem = describe_error(exc)
        raise ConfigError(path, "", where, f"invalid YAML: {problem}") from exc
    return parse_config(doc, path, extra_runtime_dirs)


def parse_config(doc: object, path: Path, extra_runtime_dirs: tuple[Path, ...] = ()) -> Config:
    """Validate an already parsed YAML document that came from ``path``."""
    check = _Checker(path)
    base = path.parent
    top = check.mapping("", doc)
    if not top:
        raise check.fail(
            "functions",
            None,
            "the file is empty; write 'functions: {}' to serve only what the API deploys",
        )
    check.known_keys("", top, TOP_KEYS)

    runtime_dirs: list[Path] = list(extra_runtime_dirs)
    if "runtimes" in top:
        rdir = (base / check.string("runtimes", top["runtimes"])).resolve()
        if not rdir.is_dir():
            raise check.fail("runtimes", top["runtimes"], f"is not a directory ({rdir})")
        runtime_dirs.insert(0, rdir)
    catalog = RuntimeCatalog(tuple(runtime_dirs))

    # An empty (or absent) map is fine: a server for API deployments only (faas-cli deploy).
    functions_doc = check.mapping("functions", top.get("functions"))
    functions: dict[str, FunctionSpec] = {}
    function_cors: dict[str, CorsPolicy | None] = {}
    for name, fdoc in functions_doc.items():
        functions[name] = _parse_function(check, base, name, fdoc, catalog)
        if isinstance(fdoc, dict) and "cors" in fdoc:
            function_cors[name] = _parse_cors_block(check, f"functions.{name}.cors", fdoc["cors"])

    routes: dict[str, str] = {}
    for prefix, target in check.mapping("routes", top.get("routes")).items():
        key = f"routes.{prefix}"
        norm = _check_route(check, key, prefix)
        if not isinstance(target, str) or target not in functions:
            raise check.fail(
                key,
                target,
                f"must name a function defined under 'functions' ({', '.join(sorted(functions))})",
            )
        if norm in routes:
            raise check.fail(key, prefix, f"is the same route as {norm!r}, defined above")
        routes[norm] = target

    registry, registry_login = parse_registry(path, top.get("registry"))
    return Config(
        path=path,
        functions=MappingProxyType(functions),
        routes=MappingProxyType(routes),
        runtime_dirs=catalog.dirs,
        async_settings=_parse_async(check, top.get("async")),
        store=_store_location(check, base, top.get("store")),
        backend=_parse_backend(check, top.get("backend")),
        registry=registry,
        registry_login=registry_login,
        swarm=parse_swarm(path, top.get("swarm")),
        cors=_parse_cors_block(check, "cors", top["cors"]) if "cors" in top else None,
        function_cors=MappingProxyType(function_cors),
        server=parse_server(check.mapping("server", top.get("server")), path),
    )


def _parse_backend(check: _Checker, value: object) -> str | None:
    if value is None:
        return None
    if value not in BACKENDS:
        raise check.fail("backend", value, f"must be one of {', '.join(BACKENDS)}")
    return str(value)


def _parse_cors_block(check: _Checker, key: str, value: object) -> CorsPolicy | None:
    """A ``cors:`` block; ``false`` (a function's only) turns CORS off."""
    if value is False and key != "cors":
        return None
    try:
        return parse_cors(check.mapping(key, value), key)
    except CorsError as exc:
        raise check.fail(exc.key, exc.value, exc.problem) from None


def _whole(check: _Checker, key: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise check.fail(key, value, f"must be a whole number from {low} to {high}")
    return value


def _parse_async(check: _Checker, value: object) -> AsyncSettings:
    doc = check.mapping("async", value)
    check.known_keys("async", doc, ASYNC_KEYS)
    default = AsyncSettings()
    hosts = doc.get("callback_hosts", [])
    if not isinstance(hosts, list):
        raise check.fail("async.callback_hosts", hosts, "must be a list of host or host:port")
    for host in hosts:
        if not isinstance(host, str) or not valid_host_pattern(host):
            raise check.fail(
                "async.callback_hosts",
                host,
                "is not a host or host:port pattern (e.g. hooks.example.com, 127.0.0.1:9000, "
                "*.example.com)",
            )
    max_body = default.max_body
    if "max_body" in doc:
        try:
            max_body = parse_memory(doc["max_body"])
        except ValueError as exc:
            raise check.fail("async.max_body", doc["max_body"], f"{exc}; write e.g. 1Mi") from exc
        if not 0 < max_body <= 64 * 2**20:
            raise check.fail("async.max_body", doc["max_body"], "must be from 1 byte to 64Mi")
    settings = AsyncSettings(
        callback_hosts=tuple(hosts),
        concurrency=_whole(
            check, "async.concurrency", doc.get("concurrency", default.concurrency), 1, 1000
        ),
        max_running=_whole(
            check, "async.max_running", doc.get("max_running", default.max_running), 1, 10000
        ),
        max_body=max_body,
        retention=check.number(
            "async.retention", doc.get("retention", default.retention), 0.0, 365 * 86400.0
        ),
        callback_attempts=_whole(
            check,
            "async.callback_attempts",
            doc.get("callback_attempts", default.callback_attempts),
            1,
            1000,
        ),
        callback_min_wait=check.number(
            "async.callback_min_wait",
            doc.get("callback_min_wait", default.callback_min_wait),
            0.0,
            3600.0,
        ),
        callback_max_wait=check.number(
            "async.callback_max_wait",
            doc.get("callback_max_wait", default.callback_max_wait),
            0.0,
            86400.0,
        ),
    )
    if settings.callback_max_wait < settings.callback_min_wait:
        raise check.fail(
            "async.callback_max_wait",
            settings.callback_max_wait,
            "must not be shorter than async.callback_min_wait",
        )
    return settings


def _store_location(check: _Checker, base: Path, value: object) -> str | None:
    """``store:``: an http(s) URL as it is, or a file relative to the routes file."""
    if value is None:
        return None
    raw = check.string("store", value)
    if raw.startswith(("http://", "https://")):
        return raw
    if "://" in raw:
        raise check.fail("store", raw, "a store URL must be http:// or https://")
    path = (base / raw).resolve()
    if not path.is_file():
        raise check.fail("store", raw, f"is not a file ({path})")
    return str(path)


def _check_route(check: _Checker, key: str, prefix: str) -> str:
    if not prefix.startswith("/"):
        raise check.fail(key, prefix, "a route must start with '/'")
    norm = normalise_route(prefix)
    if norm != "/":
        for segment in norm[1:].split("/"):
            if not segment or not ROUTE_SEGMENT_RE.match(segment) or segment in (".", ".."):
                raise check.fail(
                    key,
                    prefix,
                    "is not a clean URL path (empty, '.' or '..' "
                    "segment, or a character that needs escaping)",
                )
    for reserved in RESERVED_PREFIXES:
        if norm == reserved or norm.startswith(reserved + "/"):
            raise check.fail(key, prefix, f"{reserved} is reserved for faaso itself")
    return norm


def _parse_function(
    check: _Checker, base: Path, name: str, fdoc: object, catalog: RuntimeCatalog
) -> FunctionSpec:
    key = f"functions.{name}"
    if not FUNCTION_NAME_RE.match(name):
        raise check.fail(
            key,
            name,
            "a function name must be lowercase letters, digits and '-', "
            "start and end with a letter or digit, at most 63 characters",
        )
    doc = check.mapping(key, fdoc)
    check.known_keys(key, doc, FUNCTION_KEYS)

    source: Path | None = None
    runtime: str | None = None
    image: str | None = None
    if "image" in doc:
        if "source" in doc or "runtime" in doc:
            raise check.fail(
                f"{key}.image",
                doc["image"],
                "give either 'image' or 'source' with 'runtime', not both",
            )
        image = check.string(f"{key}.image", doc["image"])
        if any(c.isspace() for c in image):
            raise check.fail(f"{key}.image", image, "an image reference has no white space")
    elif "source" in doc:
        raw_source = check.string(f"{key}.source", doc["source"])
        source = (base / raw_source).resolve()
        if not source.is_dir():
            raise check.fail(f"{key}.source", raw_source, f"is not a directory ({source})")
        if "runtime" in doc:
            runtime = check.string(f"{key}.runtime", doc["runtime"])
        else:  # the function's own function.yml may say; else python
            runtime = load_function_file(source).runtime or "python"
        found = catalog.find(runtime)
        if found is None:
            raise check.fail(
                f"{key}.runtime",
                runtime,
                f"no such runtime; available: {', '.join(catalog.names()) or 'none'}",
            )
        missing = [f for f in found.required_files if not (source / f).is_file()]
        if missing:
            raise check.fail(
                f"{key}.source",
                raw_source,
                f"the {runtime} runtime needs {', '.join(missing)} in {source}",
            )
    else:
        raise check.fail(key, fdoc, "needs either 'image' or 'source' (with 'runtime')")

    labels = _user_labels(check, f"{key}.labels", doc.get("labels"))
    try:
        scaling = parse_scaling(
            labels,
            check.mapping(f"{key}.scale", doc.get("scale")),
            labels_key=f"{key}.labels",
            block_key=f"{key}.scale",
        )
    except ScaleError as exc:
        raise check.fail(exc.key, exc.value, exc.problem) from None
    policy = scaling.policy
    replicas = doc.get("replicas", policy.min)
    if (
        isinstance(replicas, bool)
        or not isinstance(replicas, int)
        or not 0 <= replicas <= MAX_REPLICAS
    ):
        raise check.fail(
            f"{key}.replicas", replicas, f"must be a whole number from 0 to {MAX_REPLICAS}"
        )
    if "replicas" in doc and replicas > 0:
        if "min" not in scaling.given:  # replicas: N alone keeps at least N running
            policy = dataclasses.replace(policy, min=replicas, max=max(policy.max, replicas))
        elif not policy.min <= replicas <= policy.max:
            raise check.fail(
                f"{key}.replicas",
                replicas,
                f"must be 0 or within scale min..max ({policy.min}..{policy.max})",
            )

    health_failures = doc.get("health_failures", DEFAULT_HEALTH_FAILURES)
    if (
        isinstance(health_failures, bool)
        or not isinstance(health_failures, int)
        or not (1 <= health_failures <= 100)
    ):
        raise check.fail(
            f"{key}.health_failures", health_failures, "must be a whole number from 1 to 100"
        )

    health_path = doc.get("health_path", DEFAULT_HEALTH_PATH)
    if not isinstance(health_path, str) or not health_path.startswith("/"):
        raise check.fail(f"{key}.health_path", health_path, "must be a path starting with '/'")

    limits_doc = check.mapping(f"{key}.limits", doc.get("limits"))
    check.known_keys(f"{key}.limits", limits_doc, LIMIT_KEYS)
    memory: int | None = None
    if limits_doc.get("memory") is not None:
        try:
            memory = parse_memory(limits_doc["memory"])
        except ValueError as exc:
            raise check.fail(
                f"{key}.limits.memory", limits_doc["memory"], f"{exc}; write e.g. 128Mi, 256m or 1G"
            ) from exc
        if memory < MIN_MEMORY:
            raise check.fail(f"{key}.limits.memory", limits_doc["memory"], "must be at least 6Mi")
        physical = host_memory()
        if physical is not None and memory > physical:
            raise check.fail(
                f"{key}.limits.memory",
                limits_doc["memory"],
                f"is more than this host's memory ({physical // 2**20}Mi)",
            )
    cpus: float | None = None
    if limits_doc.get("cpus") is not None:
        cpus = check.number(f"{key}.limits.cpus", limits_doc["cpus"], 0.0, 1024.0)
        if cpus > host_cpus():
            raise check.fail(
                f"{key}.limits.cpus",
                limits_doc["cpus"],
                f"is more than this host's {host_cpus()} CPUs",
            )

    secrets = doc.get("secrets", [])
    if not isinstance(secrets, list) or not all(isinstance(x, str) for x in secrets):
        raise check.fail(f"{key}.secrets", secrets, "must be a list of secret names")
    for secret in secrets:
        if not valid_secret_name(secret):
            raise check.fail(f"{key}.secrets", secret, "is not a valid secret name")
    max_inflight = doc.get("max_inflight")
    if max_inflight is not None and (
        isinstance(max_inflight, bool) or not isinstance(max_inflight, int) or max_inflight < 1
    ):
        raise check.fail(f"{key}.max_inflight", max_inflight, "must be a whole number, 1 or more")
    read_only_root = doc.get("read_only_root", False)
    if not isinstance(read_only_root, bool):
        raise check.fail(f"{key}.read_only_root", read_only_root, "must be true or false")
    async_concurrency = doc.get("async_concurrency")
    if async_concurrency is not None:
        async_concurrency = _whole(check, f"{key}.async_concurrency", async_concurrency, 1, 1000)
    annotations = check.str_map(f"{key}.annotations", doc.get("annotations"), LABEL_KEY_RE)
    problem = check_async_annotations(annotations)
    if problem is not None:
        bad = problem.partition(":")[0]
        raise check.fail(f"{key}.annotations.{bad}", annotations.get(bad), problem)
    try:
        cors_from_annotations(annotations)
    except CorsError as exc:
        raise check.fail(f"{key}.annotations.{exc.key}", exc.value, exc.problem) from None

    return FunctionSpec(
        name=name,
        source=source,
        runtime=runtime,
        image=image,
        replicas=replicas,
        env=check.str_map(f"{key}.env", doc.get("env"), ENV_NAME_RE),
        labels=labels,
        scale=policy,
        timeout=check.number(f"{key}.timeout", doc.get("timeout", DEFAULT_TIMEOUT), 0.0, 86400.0),
        startup_timeout=check.number(
            f"{key}.startup_timeout",
            doc.get("startup_timeout", DEFAULT_STARTUP_TIMEOUT),
            0.0,
            3600.0,
        ),
        health_path=health_path,
        health_interval=check.number(
            f"{key}.health_interval",
            doc.get("health_interval", DEFAULT_HEALTH_INTERVAL),
            0.0,
            3600.0,
        ),
        health_timeout=check.number(
            f"{key}.health_timeout", doc.get("health_timeout", DEFAULT_HEALTH_TIMEOUT), 0.0, 600.0
        ),
        health_failures=health_failures,
        limits=Limits(memory=memory, cpus=cpus),
        secrets=tuple(dict.fromkeys(secrets)),
        read_only_root=read_only_root,
        max_inflight=max_inflight,
        async_concurrency=async_concurrency,
        annotations=annotations,
    )


def _user_labels(check: _Checker, key: str, value: object) -> Mapping[str, str]:
    labels = check.str_map(key, value, LABEL_KEY_RE)
    for name in labels:
        if name.startswith("faaso."):
            raise check.fail(f"{key}.{name}", name, "labels starting with 'faaso.' are faaso's own")
    return labels
