"""Function secrets: one file per secret under the state directory.

The folder is 0700, so only faaso (root) can reach the files on the host. Each file is 0644
inside it, so that once bind-mounted read-only into a container at
``/var/openfaas/secrets/<name>`` the function's unprivileged user can read it. Values are never
logged and never returned by the API. Writes are atomic: a crash leaves the old value or the new.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from faaso.errors import ConflictError, InvalidRequest, NotFoundError
from faaso.spec.function import valid_secret_name
from faaso.state.files import atomic_write, fsync_dir, private_dir

MOUNT_DIR = "/var/openfaas/secrets"
MAX_SECRET_BYTES = 512 * 1024


class SecretStore:
    def __init__(self, root: Path) -> None:
        self.root = private_dir(root)

    def _path(self, name: str) -> Path:
        if not valid_secret_name(name):
            raise InvalidRequest(f"invalid secret name {name!r}: use [-a-zA-Z_0-9.], no '..'")
        return self.root / name

    def names(self) -> list[str]:
        return sorted(
            p.name for p in self.root.iterdir() if p.is_file() and not p.name.startswith(".")
        )

    def path(self, name: str) -> Path:
        path = self._path(name)
        if not path.is_file():
            raise NotFoundError(f"secret {name!r} does not exist")
        return path

    def value(self, name: str) -> bytes:
        """The stored value (to put it back if a change cannot be applied)."""
        return self.path(name).read_bytes()

    def put(self, name: str, value: bytes, *, must_exist: bool | None = None) -> None:
        """Create or replace. ``must_exist``: True for an update, False for a create."""
        path = self._path(name)
        if len(value) > MAX_SECRET_BYTES:
            raise InvalidRequest(f"secret {name!r} is larger than {MAX_SECRET_BYTES} bytes")
        if must_exist is True and not path.is_file():
            raise NotFoundError(f"secret {name!r} does not exist")
        if must_exist is False and path.is_file():
            raise ConflictError(f"secret {name!r} already exists; update it with PUT")
        atomic_write(path, value, mode=0o644)

    def delete(self, name: str) -> None:
        path = self.path(name)
        path.unlink()
        fsync_dir(self.root)

    def digest(self, names: Iterable[str]) -> str:
        """A hash of the named secrets' values (missing ones count as missing)."""
        h = hashlib.sha256()
        for name in sorted(set(names)):
            h.update(name.encode() + b"\0")
            path = self.root / name
            h.update(hashlib.sha256(path.read_bytes()).digest() if path.is_file() else b"-")
        return h.hexdigest()[:16]

    def missing(self, names: Iterable[str]) -> list[str]:
        """The named secrets that do not exist (or have an invalid name), in order."""
        return [n for n in names if not (valid_secret_name(n) and (self.root / n).is_file())]

    def mounts(self, names: Iterable[str]) -> tuple[tuple[str, str], ...]:
        return tuple((str(self.path(n)), f"{MOUNT_DIR}/{n}") for n in names)
