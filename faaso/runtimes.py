"""Runtimes: folders of templates that turn a small function into a complete image.

A runtime folder holds ``runtime.yml`` (description, required files, options with defaults,
wheel sets to fetch), templates (``*.j2`` are rendered with Jinja2, other files are copied as
they are) and a ``template/`` folder that seeds new functions. This module finds runtimes and
reads their description; :mod:`faaso.builder` renders them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from faaso.errors import ConfigError

RUNTIME_FILE = "runtime.yml"
STARTER_DIR = "template"
RUNTIME_KEYS = frozenset({"description", "required_files", "options", "wheels"})


def builtin_runtimes_dir() -> Path:
    """The ``runtimes/`` folder shipped beside the ``faaso`` package."""
    return Path(__file__).resolve().parent.parent / "runtimes"


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

    def template_files(self) -> list[Path]:
        """Every file that goes into the build context, sorted, relative to the runtime folder."""
        out: list[Path] = []
        for item in sorted(self.path.rglob("*")):
            rel = item.relative_to(self.path)
            if rel.parts[0] in (RUNTIME_FILE, STARTER_DIR) or "__pycache__" in rel.parts:
                continue
            if item.is_file():
                out.append(rel)
        return out


def load_runtime(path: Path) -> Runtime:
    """Read ``path/runtime.yml``. Raises :class:`ConfigError` naming the file and key."""
    spec_file = path / RUNTIME_FILE
    try:
        doc = yaml.safe_load(spec_file.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(spec_file, "", str(spec_file), f"cannot read: {exc.strerror}") from exc
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
    return Runtime(
        name=path.name,
        path=path,
        description=str(doc.get("description", "")),
        required_files=tuple(required),
        options=MappingProxyType(dict(options)),
        wheels=MappingProxyType(dict(wheels)),
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
FUNCTION_KEYS = frozenset({"options", "tests", "description"})


def function_options(source: Path, runtime: Runtime) -> dict[str, Any]:
    """The runtime's option defaults overlaid with the function's ``function.yml`` options.

    Raises :class:`ConfigError` naming ``function.yml`` for a bad file or an unknown option.
    """
    merged = dict(runtime.options)
    spec_file = source / FUNCTION_FILE
    if not spec_file.is_file():
        return merged
    try:
        doc = yaml.safe_load(spec_file.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(spec_file, "", str(spec_file), f"cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(spec_file, "", str(spec_file), f"invalid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(spec_file, "", doc, "must be a mapping")
    for key in doc:
        if key not in FUNCTION_KEYS:
            raise ConfigError(
                spec_file, str(key), key, f"unknown key; expected one of {sorted(FUNCTION_KEYS)}"
            )
    options = doc.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(spec_file, "options", options, "must be a mapping")
    for key, value in options.items():
        if key not in runtime.options:
            raise ConfigError(
                spec_file,
                f"options.{key}",
                key,
                f"the {runtime.name} runtime has no such option; it takes "
                f"{sorted(runtime.options) or 'none'}",
            )
        default = runtime.options[key]
        if default is not None and not isinstance(value, type(default)):
            raise ConfigError(
                spec_file,
                f"options.{key}",
                value,
                f"must be a {type(default).__name__} like the default {default!r}",
            )
        merged[key] = value
    return merged
