"""Runtimes: folders of templates that turn a small function into a complete image.

A runtime folder holds ``runtime.yml`` (description, required files, options with defaults,
wheel sets to fetch), templates (``*.j2`` are rendered with Jinja2, other files are copied as
they are) and a ``template/`` folder that seeds new functions. This module finds runtimes and
reads their description; :mod:`faaso.build.builder` renders them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from faaso.config.yamlutil import load_strict
from faaso.errors import ConfigError

RUNTIME_FILE = "runtime.yml"
STARTER_DIR = "template"
README = "README.md"  # documents the runtime; not part of any image
RUNTIME_KEYS = frozenset(
    {"description", "required_files", "options", "wheels", "npm", "check", "own_dockerfile"}
)
# Checks faaso runs on the host before building, so a broken function fails in a second with
# the file and line instead of deep in a build or a container's start (see faaso.builder).
CHECKS = frozenset({"python", "node", "dockerfile"})


def builtin_runtimes_dir() -> Path:
    """The built-in runtimes: ``faaso/_runtimes/`` in an installed wheel (setup.py copies them
    there), else the repository's top-level ``runtimes/`` beside the package (a checkout, an
    editable install)."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "_runtimes"
    return installed if installed.is_dir() else package.parent / "runtimes"


@dataclass(frozen=True, slots=True)
class Runtime:
    """A runtime folder and what its ``runtime.yml`` says."""

    name: str
    path: Path
    description: str = ""
    required_files: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # requirements file in the build context -> folder of wheels in the build context
    wheels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # package.json in the build context -> folder the host fills with its node_modules
    npm: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    check: str | None = None  # one of CHECKS
    # a function folder holding this file is the whole build context, built with that file
    own_dockerfile: str | None = None

    def template_files(self) -> list[Path]:
        """Every file that goes into the build context, sorted, relative to the runtime folder."""
        out: list[Path] = []
        for item in sorted(self.path.rglob("*")):
            rel = item.relative_to(self.path)
            if rel.parts[0] in (RUNTIME_FILE, STARTER_DIR, README) or "__pycache__" in rel.parts:
                continue
            if item.is_file():
                out.append(rel)
        return out


def load_runtime(path: Path) -> Runtime:
    """Read ``path/runtime.yml``. Raises :class:`ConfigError` naming the file and key."""
    spec_file = path / RUNTIME_FILE
    try:
        doc = load_strict(spec_file.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(spec_file, "", str(spec_file), f"cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(spec_file, "", str(spec_file), f"invalid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(spec_file, "", doc, "must be a mapping")
    for key in doc:
        if key not in RUNTIME_KEYS:
            raise ConfigError(
                spec_file, str(key), key, f"unknown key; expected {sorted(RUNTIME_KEYS)}"
            )
    required = doc.get("required_files", [])
    if not isinstance(required, list) or not all(isinstance(x, str) for x in required):
        raise ConfigError(spec_file, "required_files", required, "must be a list of file names")
    options = doc.get("options", {}) or {}
    if not isinstance(options, dict):
        raise ConfigError(spec_file, "options", options, "must be a mapping")
    wheels = doc.get("wheels", {}) or {}
    if not isinstance(wheels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in wheels.items()
    ):
        raise ConfigError(spec_file, "wheels", wheels, "must map requirement files to folders")
    npm = doc.get("npm", {}) or {}
    if not isinstance(npm, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in npm.items()
    ):
        raise ConfigError(spec_file, "npm", npm, "must map package.json files to folders")
    check = doc.get("check")
    if check is not None and check not in CHECKS:
        raise ConfigError(spec_file, "check", check, f"must be one of {sorted(CHECKS)}")
    own_dockerfile = doc.get("own_dockerfile")
    if own_dockerfile is not None and (
        not isinstance(own_dockerfile, str) or not own_dockerfile or "/" in own_dockerfile
    ):
        raise ConfigError(
            spec_file, "own_dockerfile", own_dockerfile, "must be a file name like Dockerfile"
        )
    return Runtime(
        name=path.name,
        path=path,
        description=str(doc.get("description", "")),
        required_files=tuple(required),
        options=MappingProxyType(dict(options)),
        wheels=MappingProxyType(dict(wheels)),
        npm=MappingProxyType(dict(npm)),
        check=check,
        own_dockerfile=own_dockerfile,
    )


class RuntimeCatalog:
    """Runtimes found in a list of folders; earlier folders win over later ones."""

    def __init__(self, extra_dirs: tuple[Path, ...] = ()) -> None:
        dirs = [*extra_dirs, builtin_runtimes_dir()]
        unique: list[Path] = []
        for d in dirs:
            resolved = d.resolve()
            if resolved not in unique:
                unique.append(resolved)
        self.dirs: tuple[Path, ...] = tuple(unique)

    def find(self, name: str) -> Runtime | None:
        if not name or "/" in name or name.startswith("."):
            return None
        for d in self.dirs:
            candidate = d / name
            if (candidate / RUNTIME_FILE).is_file():
                return load_runtime(candidate)
        return None

    def names(self) -> list[str]:
        found: set[str] = set()
        for d in self.dirs:
            if d.is_dir():
                found.update(p.parent.name for p in d.glob(f"*/{RUNTIME_FILE}"))
        return sorted(found)


FUNCTION_FILE = "function.yml"
FUNCTION_KEYS = frozenset({"options", "tests", "description", "runtime"})
REQUEST_KEYS = frozenset({"method", "path", "body", "headers"})
EXPECT_KEYS = frozenset({"status", "body", "json", "headers"})
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class TestCase:
    """One entry of ``tests:`` in function.yml: a request and what its response must be."""

    __test__ = False  # not a pytest class

    index: int
    method: str = "GET"
    path: str = "/"
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    status: int | None = None
    expect_body: str | None = None
    has_json: bool = False
    expect_json: Any = None
    expect_headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def describe(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True, slots=True)
class FunctionFile:
    """A function folder's ``function.yml``, validated (an absent file is an empty one)."""

    path: Path
    exists: bool = False
    runtime: str | None = None
    description: str = ""
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    tests: tuple[TestCase, ...] = ()


def _str_map(spec_file: Path, key: str, value: object) -> Mapping[str, str]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, dict):
        raise ConfigError(spec_file, key, value, "must be a mapping of header names to values")
    out: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not name or any(c in name for c in " :\r\n"):
            raise ConfigError(spec_file, f"{key}.{name}", name, "is not a header name")
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise ConfigError(spec_file, f"{key}.{name}", item, "must be a string or a number")
        out[name] = str(item)
    return MappingProxyType(out)


def _parse_test(spec_file: Path, index: int, doc: object) -> TestCase:
    where = f"tests[{index}]"
    if not isinstance(doc, dict):
        raise ConfigError(spec_file, where, doc, "must be a mapping with 'request' and 'expect'")
    for key in doc:
        if key not in ("request", "expect"):
            raise ConfigError(
                spec_file, f"{where}.{key}", key, "unknown key; expected 'request' and 'expect'"
            )
    request = doc.get("request") or {}
    expect = doc.get("expect")
    if not isinstance(request, dict):
        raise ConfigError(spec_file, f"{where}.request", request, "must be a mapping")
    if not isinstance(expect, dict) or not expect:
        raise ConfigError(
            spec_file,
            f"{where}.expect",
            expect,
            f"must be a mapping with at least one of {sorted(EXPECT_KEYS)}",
        )
    parts = (("request", REQUEST_KEYS, request), ("expect", EXPECT_KEYS, expect))
    for part, keys, mapping in parts:
        for key in mapping:
            if key not in keys:
                raise ConfigError(
                    spec_file,
                    f"{where}.{part}.{key}",
                    key,
                    f"unknown key; expected one of {sorted(keys)}",
                )
    method = request.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
        raise ConfigError(
            spec_file, f"{where}.request.method", method, f"must be one of {sorted(HTTP_METHODS)}"
        )
    path = request.get("path", "/")
    if not isinstance(path, str) or not path.startswith("/") or any(c.isspace() for c in path):
        raise ConfigError(
            spec_file, f"{where}.request.path", path, "must start with '/' and hold no spaces"
        )
    body = request.get("body")
    if body is not None and not isinstance(body, str):
        raise ConfigError(
            spec_file, f"{where}.request.body", body, "must be a string (quote JSON bodies)"
        )
    status = expect.get("status")
    if status is not None and (
        isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599
    ):
        raise ConfigError(spec_file, f"{where}.expect.status", status, "must be an HTTP status")
    expect_body = expect.get("body")
    if expect_body is not None and not isinstance(expect_body, str):
        raise ConfigError(
            spec_file,
            f"{where}.expect.body",
            expect_body,
            "must be a string (the exact body; use 'json' to compare parsed JSON)",
        )
    return TestCase(
        index=index,
        method=method.upper(),
        path=path,
        body=None if body is None else body.encode(),
        headers=_str_map(spec_file, f"{where}.request.headers", request.get("headers")),
        status=status,
        expect_body=expect_body,
        has_json="json" in expect,
        expect_json=expect.get("json"),
        expect_headers=_str_map(spec_file, f"{where}.expect.headers", expect.get("headers")),
    )


def load_function_file(source: Path) -> FunctionFile:
    """Read and validate ``source/function.yml``. Raises :class:`ConfigError` naming the file,
    the key and the value; an absent file is an empty one."""
    spec_file = source / FUNCTION_FILE
    if not spec_file.is_file():
        return FunctionFile(path=spec_file)
    try:
        doc = load_strict(spec_file.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(spec_file, "", str(spec_file), f"cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else str(spec_file)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(spec_file, "", where, f"invalid YAML: {problem}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(spec_file, "", doc, "must be a mapping")
    for key in doc:
        if key not in FUNCTION_KEYS:
            raise ConfigError(
                spec_file, str(key), key, f"unknown key; expected one of {sorted(FUNCTION_KEYS)}"
            )
    runtime = doc.get("runtime")
    if runtime is not None and (not isinstance(runtime, str) or not runtime.strip()):
        raise ConfigError(spec_file, "runtime", runtime, "must be a runtime name")
    description = doc.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(spec_file, "description", description, "must be a string")
    options = doc.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(spec_file, "options", options, "must be a mapping")
    tests_doc = doc.get("tests") or []
    if not isinstance(tests_doc, list):
        raise ConfigError(spec_file, "tests", tests_doc, "must be a list of request/expect pairs")
    tests = tuple(_parse_test(spec_file, i, t) for i, t in enumerate(tests_doc))
    return FunctionFile(
        path=spec_file,
        exists=True,
        runtime=runtime,
        description=description,
        options=MappingProxyType(dict(options)),
        tests=tests,
    )


def function_options(source: Path, runtime: Runtime) -> dict[str, Any]:
    """The runtime's option defaults overlaid with the function's ``function.yml`` options.

    Raises :class:`ConfigError` naming ``function.yml`` for a bad file or an unknown option.
    """
    ffile = load_function_file(source)
    spec_file = ffile.path
    merged = dict(runtime.options)
    for key, value in ffile.options.items():
        if key not in runtime.options:
            raise ConfigError(
                spec_file,
                f"options.{key}",
                key,
                f"the {runtime.name} runtime has no such option; it takes "
                f"{sorted(runtime.options) or 'none'}",
            )
        default = runtime.options[key]
        numbers = (int, float)
        if isinstance(default, numbers) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, numbers) or not value > 0:
                raise ConfigError(
                    spec_file, f"options.{key}", value, f"must be a positive number like {default}"
                )
        elif default is not None and not isinstance(value, type(default)):
            raise ConfigError(
                spec_file,
                f"options.{key}",
                value,
                f"must be a {type(default).__name__} like the default {default!r}",
            )
        if isinstance(default, list) and not all(isinstance(x, str) for x in value):
            raise ConfigError(spec_file, f"options.{key}", value, "must be a list of strings")
        merged[key] = value
    return merged
