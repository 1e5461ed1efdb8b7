"""YAML for faaso's own files: safe, and strict about duplicate keys (PyYAML keeps the last)."""

from __future__ import annotations

from typing import Any

import yaml


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate mapping keys instead of keeping the last one."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_strict(text: str) -> Any:
    """Parse YAML safely; a duplicate key raises ``yaml.YAMLError`` naming it and its line."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def describe_error(exc: yaml.YAMLError) -> tuple[str, str]:
    """Where a YAML error is (``line L, column C``) and what it is, for a config error."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown place"
    return where, getattr(exc, "problem", None) or str(exc)
