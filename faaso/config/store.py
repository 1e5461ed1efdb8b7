"""The function store: OpenFaaS's store format (v0.2), parsed and validated in one place.

A store is a JSON (or YAML) document::

    {"version": "0.2.0",
     "functions": [
       {"title": "Sum", "name": "sum", "description": "Adds numbers",
        "images": {"x86_64": "some/sum:1", "arm64": "some/sum:1-arm64"},
        "fprocess": "", "environment": {}, "labels": {}, "annotations": {},
        "readOnlyRootFilesystem": false}]}

Fields of an entry, as OpenFaaS writes them: ``title``, ``name``, ``description``, ``images`` (per
architecture: ``x86_64``, ``arm64``, ``armhf``), ``fprocess``, ``environment``, ``labels``,
``annotations``, ``readOnlyRootFilesystem``; ``icon``, ``author``, ``repo_url`` and ``network``
are accepted and shown or ignored.

faaso's extension: an entry may give ``source`` (a function folder, relative to the store file)
and optionally ``runtime`` instead of ``images``; faaso then builds the image from that folder
when the entry is deployed, as it builds the functions of the routes file. Only a store read
from a file may do that (a store fetched from a URL names images).

The routes file names the store with its top-level ``store:`` key (a path relative to the routes
file, or an ``http(s)://`` URL). Without it faaso uses the store it ships: ``conf/store.json`` of
its source tree, which offers the example functions under ``conf/functions``.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiohttp
import yaml

from faaso.config.runtimes import load_function_file
from faaso.config.yamlutil import describe_error, load_strict
from faaso.errors import ConfigError
from faaso.spec.function import ENV_NAME_RE, FUNCTION_NAME_RE, LABEL_KEY_RE

STORE_VERSION = "0.2.0"
# The store faaso ships: the example functions of its source tree.
DEFAULT_STORE = Path(__file__).resolve().parents[2] / "conf" / "store.json"
MAX_STORE_BYTES = 1024 * 1024
FETCH_TIMEOUT = 10.0
ENTRY_KEYS = frozenset(
    {
        "title",
        "name",
        "description",
        "images",
        "image",  # store v0.1's single image, still found in older stores
        "fprocess",
        "environment",
        "labels",
        "annotations",
        "readOnlyRootFilesystem",
        "icon",
        "author",
        "repo_url",
        "network",
        "source",
        "runtime",
    }
)
ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
ARCHITECTURES |= {"armv7l": "armhf", "armv6l": "armhf"}


def machine_architecture() -> str:
    """This machine's architecture, as the store's ``images`` keys name it."""
    machine = platform.machine().lower()
    return ARCHITECTURES.get(machine, machine)


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


@dataclass(frozen=True, slots=True)
class StoreEntry:
    name: str
    title: str
    description: str
    images: Mapping[str, str]
    fprocess: str
    environment: Mapping[str, str]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    read_only_root: bool
    icon: str = ""
    author: str = ""
    repo_url: str = ""
    source: Path | None = None  # faaso's extension: built from this folder
    runtime: str | None = None

    def image_for(self, architecture: str) -> str | None:
        return self.images.get(architecture)

    def as_json(self) -> dict[str, Any]:
        """The entry in the store's own field names (``source`` as given, when set)."""
        doc: dict[str, Any] = {
            "title": self.title,
            "name": self.name,
            "description": self.description,
            "images": dict(self.images),
            "fprocess": self.fprocess,
            "environment": dict(self.environment),
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "readOnlyRootFilesystem": self.read_only_root,
        }
        for key, value in (("icon", self.icon), ("author", self.author)):
            if value:
                doc[key] = value
        if self.repo_url:
            doc["repo_url"] = self.repo_url
        if self.source is not None:
            doc["source"] = str(self.source)
            doc["runtime"] = self.runtime
        return doc


@dataclass(frozen=True, slots=True)
class Store:
    location: str  # the file's path or the URL it came from
    functions: tuple[StoreEntry, ...]

    def get(self, name: str) -> StoreEntry | None:
        return next((e for e in self.functions if e.name == name), None)


def _fail(location: str, key: str, value: object, problem: str) -> ConfigError:
    return ConfigError(location, key, value, problem)


def _text(location: str, key: str, value: object, *, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise _fail(location, key, value, "must be a non-empty string" if required else "a string")
    return value


def _str_map(location: str, key: str, value: object, key_re: Any) -> Mapping[str, str]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, dict):
        raise _fail(location, key, value, "must be a mapping")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not key_re.match(k):
            raise _fail(location, f"{key}.{k}", k, "is not a valid name")
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise _fail(location, f"{key}.{k}", v, "must be a string or a number")
        out[k] = str(v)
    return MappingProxyType(out)


def parse_store(doc: object, location: str, base: Path | None) -> Store:
    """Validate a parsed store document. ``base`` is the store file's folder (None for a URL)."""
    if not isinstance(doc, dict):
        raise _fail(location, "", type(doc).__name__, "a store is a mapping with 'functions'")
    version = doc.get("version", STORE_VERSION)
    if not isinstance(version, str) or not version.startswith("0.2"):
        raise _fail(location, "version", version, f"faaso reads store version {STORE_VERSION}")
    functions = doc.get("functions")
    if not isinstance(functions, list):
        raise _fail(location, "functions", functions, "must be a list of functions")
    entries: list[StoreEntry] = []
    seen: set[str] = set()
    for index, item in enumerate(functions):
        entry = _parse_entry(location, f"functions[{index}]", item, base)
        if entry.name in seen:
            raise _fail(location, f"functions[{index}].name", entry.name, "is listed twice")
        seen.add(entry.name)
        entries.append(entry)
    return Store(location, tuple(entries))


def _parse_entry(location: str, key: str, item: object, base: Path | None) -> StoreEntry:
    if not isinstance(item, dict):
        raise _fail(location, key, item, "must be a mapping")
    unknown = sorted(str(k) for k in item if k not in ENTRY_KEYS)
    if unknown:
        raise _fail(location, f"{key}.{unknown[0]}", unknown[0], "unknown field of a store entry")
    name = _text(location, f"{key}.name", item.get("name"), required=True)
    if not FUNCTION_NAME_RE.match(name):
        raise _fail(
            location, f"{key}.name", name, "is not a function name (lowercase letters, digits, -)"
        )
    images: dict[str, str] = {}
    raw_images = item.get("images")
    if raw_images is not None:
        if not isinstance(raw_images, dict):
            raise _fail(location, f"{key}.images", raw_images, "must map architectures to images")
        for arch, image in raw_images.items():
            if not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image):
                raise _fail(location, f"{key}.images.{arch}", image, "is not an image reference")
            images[str(arch)] = image
    if isinstance(item.get("image"), str) and item["image"].strip():
        images.setdefault(machine_architecture(), item["image"])
    source: Path | None = None
    runtime: str | None = None
    if item.get("source") is not None:
        raw_source = _text(location, f"{key}.source", item["source"], required=True)
        if base is None:
            raise _fail(
                location, f"{key}.source", raw_source, "a store fetched from a URL must name images"
            )
        if images:
            raise _fail(location, f"{key}.source", raw_source, "give either images or source")
        source = (base / raw_source).resolve()
        if not source.is_dir():
            raise _fail(location, f"{key}.source", raw_source, f"is not a directory ({source})")
        runtime = _text(location, f"{key}.runtime", item.get("runtime")) or None
        if runtime is None:
            runtime = load_function_file(source).runtime or "python"
    elif not images:
        raise _fail(location, key, name, "needs 'images' (per architecture) or a 'source' folder")
    read_only = item.get("readOnlyRootFilesystem", False)
    if not isinstance(read_only, bool):
        raise _fail(location, f"{key}.readOnlyRootFilesystem", read_only, "must be true or false")
    return StoreEntry(
        name=name,
        title=_text(location, f"{key}.title", item.get("title")) or name,
        description=_text(location, f"{key}.description", item.get("description")),
        images=MappingProxyType(images),
        fprocess=_text(location, f"{key}.fprocess", item.get("fprocess")),
        environment=_str_map(location, f"{key}.environment", item.get("environment"), ENV_NAME_RE),
        labels=_str_map(location, f"{key}.labels", item.get("labels"), LABEL_KEY_RE),
        annotations=_str_map(location, f"{key}.annotations", item.get("annotations"), LABEL_KEY_RE),
        read_only_root=read_only,
        icon=_text(location, f"{key}.icon", item.get("icon")),
        author=_text(location, f"{key}.author", item.get("author")),
        repo_url=_text(location, f"{key}.repo_url", item.get("repo_url")),
        source=source,
        runtime=runtime,
    )


def _parse_text(text: str, location: str, base: Path | None) -> Store:
    try:
        doc = load_strict(text)
    except yaml.YAMLError as exc:
        where, problem = describe_error(exc)
        raise _fail(location, "", where, f"invalid JSON/YAML: {problem}") from exc
    return parse_store(doc, location, base)


def read_store_file(path: Path) -> Store:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _fail(str(path), "", str(path), f"cannot read the store: {exc.strerror}") from exc
    if len(raw) > MAX_STORE_BYTES:
        raise _fail(str(path), "", len(raw), f"a store is at most {MAX_STORE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(str(path), "", str(path), "the store is not UTF-8") from exc
    return _parse_text(text, str(path), path.parent)


async def fetch_store(url: str) -> Store:
    """A store served over HTTP(S). Raises ConfigError naming the URL."""
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url) as response,
        ):
            if response.status != 200:
                raise _fail(url, "", response.status, "the store URL did not answer 200")
            raw = await response.content.read(MAX_STORE_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _fail(url, "", url, f"cannot fetch the store: {exc or type(exc).__name__}") from exc
    if len(raw) > MAX_STORE_BYTES:
        raise _fail(url, "", len(raw), f"a store is at most {MAX_STORE_BYTES} bytes")
    return _parse_text(raw.decode("utf-8", errors="replace"), url, None)


async def load_store(location: str | None) -> Store:
    """The store a routes file names (``Config.store``), or the one faaso ships."""
    if location is None:
        if not DEFAULT_STORE.is_file():
            return Store(str(DEFAULT_STORE), ())
        return read_store_file(DEFAULT_STORE)
    if is_url(location):
        return await fetch_store(location)
    return read_store_file(Path(location))
