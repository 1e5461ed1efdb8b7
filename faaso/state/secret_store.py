"""Function secrets: one file per secret under the state directory.

The folder is 0700, so only faaso (root) can reach the files on the host. Each file is 0644
inside it, so that once bind-mounted read-only into a container at
``/var/openfaas/secrets/<name>`` the function's unprivileged user can read it. Values are never
logged and never returned by the API. Writes are atomic: a crash leaves the old value or the new.

Namespaces: the default one's secrets are the files of ``root`` (``function-secrets/``, as
before namespaces existed); another namespace's are in ``<namespaces_root>/<namespace>/``
(``namespace-secrets/dev/``), a folder of their own, so no secret name can reach another
namespace's files. A function mounts only secrets of its own namespace.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from faaso.errors import ConflictError, InvalidRequest, NotFoundError
from faaso.spec.function import NAMESPACE, NAMESPACE_RE, valid_secret_name
from faaso.state.files import atomic_write, fsync_dir, private_dir

MOUNT_DIR = "/var/openfaas/secrets"
MAX_SECRET_BYTES = 512 * 1024


class SecretDigests(Protocol):
    """What a fingerprint reads of the secrets: this store's files, or a cluster's versions
    in Swarm (:class:`faaso.backends.swarm.secrets.SwarmSecrets`)."""

    def digest(self, names: Iterable[str], namespace: str = NAMESPACE) -> str: ...


class SecretStore:
    def __init__(self, root: Path, namespaces_root: Path | None = None) -> None:
        self.root = private_dir(root)
        self.namespaces_root = namespaces_root or root.parent / "namespace-secrets"

    def _dir(self, namespace: str, *, create: bool = False) -> Path:
        if namespace == NAMESPACE:
            return self.root
        if not NAMESPACE_RE.match(namespace):
            raise InvalidRequest(f"invalid namespace {namespace!r}")
        folder = self.namespaces_root / namespace
        if create:
            private_dir(self.namespaces_root)
            private_dir(folder)
        return folder

    def _path(self, name: str, namespace: str = NAMESPACE, *, create: bool = False) -> Path:
        if not valid_secret_name(name):
            raise InvalidRequest(f"invalid secret name {name!r}: use [-a-zA-Z_0-9.], no '..'")
        return self._dir(namespace, create=create) / name

    def names(self, namespace: str = NAMESPACE) -> list[str]:
        folder = self._dir(namespace)
        if not folder.is_dir():
            return []
        return sorted(
            p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
        )

    def drop_namespace(self, namespace: str) -> None:
        """Remove an empty namespace's folder. Raises ConflictError when it holds secrets."""
        if self.names(namespace):
            raise ConflictError(f"namespace {namespace!r} still has secrets")
        folder = self._dir(namespace)
        if namespace != NAMESPACE and folder.is_dir():
            for leftover in folder.iterdir():  # hidden temporary files of an interrupted write
                leftover.unlink()
            folder.rmdir()
            fsync_dir(self.namespaces_root)

    def path(self, name: str, namespace: str = NAMESPACE) -> Path:
        path = self._path(name, namespace)
        if not path.is_file():
            raise NotFoundError(f"secret {name!r} does not exist in namespace {namespace!r}")
        return path

    def value(self, name: str, namespace: str = NAMESPACE) -> bytes:
        """The stored value (to put it back if a change cannot be applied)."""
        return self.path(name, namespace).read_bytes()

    def put(
        self,
        name: str,
        value: bytes,
        *,
        must_exist: bool | None = None,
        namespace: str = NAMESPACE,
    ) -> None:
        """Create or replace. ``must_exist``: True for an update, False for a create."""
        path = self._path(name, namespace, create=True)
        if len(value) > MAX_SECRET_BYTES:
            raise InvalidRequest(f"secret {name!r} is larger than {MAX_SECRET_BYTES} bytes")
        if must_exist is True and not path.is_file():
            raise NotFoundError(f"secret {name!r} does not exist")
        if must_exist is False and path.is_file():
            raise ConflictError(f"secret {name!r} already exists; update it with PUT")
        atomic_write(path, value, mode=0o644)

    def delete(self, name: str, namespace: str = NAMESPACE) -> None:
        path = self.path(name, namespace)
        path.unlink()
        fsync_dir(path.parent)

    def digest(self, names: Iterable[str], namespace: str = NAMESPACE) -> str:
        """A hash of the named secrets' values (missing ones count as missing)."""
        h = hashlib.sha256()
        folder = self._dir(namespace)
        for name in sorted(set(names)):
            h.update(name.encode() + b"\0")
            path = folder / name
            h.update(hashlib.sha256(path.read_bytes()).digest() if path.is_file() else b"-")
        return h.hexdigest()[:16]

    def missing(self, names: Iterable[str], namespace: str = NAMESPACE) -> list[str]:
        """The named secrets that do not exist (or have an invalid name), in order."""
        return [
            n for n in names if not (valid_secret_name(n) and self._path(n, namespace).is_file())
        ]

    def mounts(
        self, names: Iterable[str], namespace: str = NAMESPACE
    ) -> tuple[tuple[str, str], ...]:
        return tuple((str(self.path(n, namespace)), f"{MOUNT_DIR}/{n}") for n in names)
