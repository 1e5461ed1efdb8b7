"""The routes file's Swarm settings: the ``swarm:`` block and the registry's credentials.

Validated here, in one place, into frozen dataclasses; every error is a :class:`ConfigError`
naming the file, the key and the value.

``swarm: {cluster: NAME}`` makes the owner id the cluster's instead of the state directory's:
every faaso with the same cluster name (and the Swarm backend) owns the same services and
secrets, so several faaso processes serve the same functions (docs/swarm.md). ``autoscaler``
says whether this member's autoscaler writes replica counts (off by default in a cluster: one
member should say ``true``).

``registry:`` is an address (``host[:port][/path]``) or a mapping with the address and a
username, whose password comes from a file (``password_file``, relative to the routes file) or
an environment variable (``password_env``), never from the routes file itself. The password is
read when it is needed (:meth:`RegistryLogin.password`) and kept in no dataclass, so no log
line or repr can show it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faaso.errors import ConfigError

# host[:port][/path]: where images are pushed for an orchestrator's nodes to pull
REGISTRY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,5})?(/[a-z0-9][a-z0-9._/-]*)?$")
CLUSTER_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
SWARM_KEYS = frozenset({"cluster", "autoscaler"})
REGISTRY_KEYS = frozenset({"address", "username", "password_file", "password_env"})
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class SwarmSettings:
    """The ``swarm:`` block (read at start: a reload does not change it)."""

    cluster: str | None = None  # the shared owner of a cluster of faaso processes
    autoscaler: bool | None = None  # None: on alone, off in a cluster


@dataclass(frozen=True, slots=True)
class RegistryLogin:
    """Who faaso is at the registry; the password stays where it is kept until it is used."""

    config: Path  # the routes file (for errors)
    username: str
    password_file: Path | None = None
    password_env: str | None = None

    def password(self) -> str:
        """The password, read now. Raises :class:`ConfigError` naming where it was looked for."""
        if self.password_file is not None:
            try:
                text = self.password_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    self.config,
                    "registry.password_file",
                    str(self.password_file),
                    f"cannot read the registry password: {exc}",
                ) from exc
            value = text.rstrip("\r\n")
            where, what = "registry.password_file", str(self.password_file)
        else:
            assert self.password_env is not None
            value = os.environ.get(self.password_env, "")
            where, what = "registry.password_env", self.password_env
        if not value:
            raise ConfigError(self.config, where, what, "the registry password is empty or unset")
        return value


def _fail(path: Path, key: str, value: object, problem: str) -> ConfigError:
    return ConfigError(path, key, value, problem)


def parse_swarm(path: Path, value: object) -> SwarmSettings:
    if value is None:
        return SwarmSettings()
    if not isinstance(value, dict):
        raise _fail(path, "swarm", value, "must be a mapping (cluster, autoscaler)")
    for key in value:
        if key not in SWARM_KEYS:
            expected = f"unknown key; expected one of {sorted(SWARM_KEYS)}"
            raise _fail(path, f"swarm.{key}", key, expected)
    cluster = value.get("cluster")
    if cluster is not None and (not isinstance(cluster, str) or not CLUSTER_RE.match(cluster)):
        raise _fail(
            path,
            "swarm.cluster",
            cluster,
            "must be a name of lowercase letters, digits and '-', at most 40 characters",
        )
    autoscaler = value.get("autoscaler")
    if autoscaler is not None and not isinstance(autoscaler, bool):
        raise _fail(path, "swarm.autoscaler", autoscaler, "must be true or false")
    return SwarmSettings(cluster=cluster, autoscaler=autoscaler)


def _address(path: Path, key: str, value: object) -> str:
    if not isinstance(value, str) or not REGISTRY_RE.match(value.rstrip("/")):
        raise _fail(path, key, value, "must be a registry as host[:port][/path]")
    return value.rstrip("/")


def parse_registry(path: Path, value: object) -> tuple[str | None, RegistryLogin | None]:
    """The registry's address and, when given, the login for it."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        return _address(path, "registry", value), None
    doc: dict[str, Any] = value
    if "password" in doc:  # the value is not echoed in the error
        raise _fail(
            path, "registry.password", "(hidden)", "give password_file or password_env instead"
        )
    for key in doc:
        if key not in REGISTRY_KEYS:
            expected = f"unknown key; expected one of {sorted(REGISTRY_KEYS)}"
            raise _fail(path, f"registry.{key}", key, expected)
    address = _address(path, "registry.address", doc.get("address"))
    username = doc.get("username")
    has_file, has_env = "password_file" in doc, "password_env" in doc
    if username is None:
        if has_file or has_env:
            raise _fail(path, "registry.username", None, "a password needs a username")
        return address, None
    if not isinstance(username, str) or not username.strip() or ":" in username:
        raise _fail(path, "registry.username", username, "must be a non-empty name without ':'")
    if has_file == has_env:
        raise _fail(
            path,
            "registry",
            sorted(doc),
            "with a username, give exactly one of password_file and password_env "
            "(the password itself never goes in the routes file)",
        )
    if has_file:
        raw = doc["password_file"]
        if not isinstance(raw, str) or not raw.strip():
            raise _fail(path, "registry.password_file", raw, "must be a file name")
        login = RegistryLogin(path, username, password_file=(path.parent / raw).resolve())
    else:
        raw = doc["password_env"]
        if not isinstance(raw, str) or not ENV_RE.match(raw):
            raise _fail(path, "registry.password_env", raw, "must name an environment variable")
        login = RegistryLogin(path, username, password_env=raw)
    login.password()  # readable now, or the file is refused with where it was looked for
    return address, login
