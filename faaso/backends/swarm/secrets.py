"""A cluster's secrets, kept by Swarm: every member sees the same versions.

In a cluster (``swarm: {cluster: NAME}``) a secret is not a file in a member's state directory:
``POST``/``PUT /system/secrets`` through any member makes a Swarm secret *version* at once,
named ``<service-prefix>-<name>-<random 12 hex>`` and labelled with the owner, the secret's
name and namespace, ``faaso.secret-shared=true`` and ``faaso.secret-seq`` (the nanosecond
clock of the member that made it). The *newest* version of a (namespace, name) is the one with
the highest sequence, then the latest ``CreatedAt``, then the highest id: every member picks
the same one from the same listing.

A value cannot be read back from Swarm, and nothing here needs it: a function's service
references the newest version by id, and the fingerprint's part for the secrets is a hash of
those version ids, so every member computes the same fingerprint from the same listing and
nobody fights over the service. No hash of a value is put in a label (a short value could be
guessed from one).

The view is a snapshot, refreshed by :meth:`SwarmSecrets.refresh` (after a change made here,
on the engine's secret events and on the cluster sync's periodic look, see
:mod:`faaso.control.cluster`), so that the fingerprint can be computed synchronously.
"""

from __future__ import annotations

import base64
import hashlib
import secrets as token
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiodocker

from faaso.backends.base import LABEL_MANAGED, LABEL_OWNER, SecretRef
from faaso.errors import BackendError, ConflictError, InvalidRequest, NotFoundError
from faaso.logs import get_logger
from faaso.spec.function import NAMESPACE, NAMESPACE_RE, valid_secret_name

LABEL_SECRET = "faaso.secret"
LABEL_NAMESPACE = "faaso.namespace"
LABEL_SHARED = "faaso.secret-shared"
LABEL_SEQ = "faaso.secret-seq"
# Swarm refuses a secret over 500 KiB (the engine's limit, below faaso's own 512 KiB)
MAX_SWARM_SECRET = 500 * 1024
MAX_NAME_PART = 30  # a longer secret name is replaced by a hash in the object's name (64 max)


@dataclass(frozen=True, slots=True)
class Version:
    id: str
    name: str  # the Swarm object's name
    secret: str
    namespace: str
    seq: int
    created: str

    @property
    def order(self) -> tuple[int, str, str]:
        return (self.seq, self.created, self.id)


def version_of(found: Mapping[str, Any]) -> Version | None:
    """A shared version from a secret's inspect/list JSON; None for any other secret."""
    spec = found.get("Spec") or {}
    labels = spec.get("Labels") or {}
    if labels.get(LABEL_SHARED) != "true":
        return None
    try:
        seq = int(labels.get(LABEL_SEQ) or 0)
    except ValueError:
        seq = 0
    return Version(
        id=str(found.get("ID", "")),
        name=str(spec.get("Name", "")),
        secret=str(labels.get(LABEL_SECRET, "")),
        namespace=str(labels.get(LABEL_NAMESPACE) or NAMESPACE),
        seq=seq,
        created=str(found.get("CreatedAt") or ""),
    )


def newest(versions: Iterable[Version]) -> dict[tuple[str, str], Version]:
    """The newest version of each (namespace, name)."""
    out: dict[tuple[str, str], Version] = {}
    for version in versions:
        key = (version.namespace, version.secret)
        if key not in out or version.order > out[key].order:
            out[key] = version
    return out


def _check(name: str, namespace: str) -> None:
    if not valid_secret_name(name):
        raise InvalidRequest(f"invalid secret name {name!r}: use [-a-zA-Z_0-9.], no '..'")
    if namespace != NAMESPACE and not NAMESPACE_RE.match(namespace):
        raise InvalidRequest(f"invalid namespace {namespace!r}")


class SwarmSecrets:
    """The cluster's secret versions in Swarm, for one owner (the cluster's)."""

    def __init__(self, docker: aiodocker.Docker, owner: str, prefix: str) -> None:
        self._docker = docker
        self.owner = owner
        self.prefix = prefix
        self._log = get_logger("faaso.secrets")
        self._versions: list[Version] = []
        self._newest: dict[tuple[str, str], Version] = {}
        self._hidden: set[str] = set()  # versions withdrawn here, until Swarm drops them

    # -- the snapshot ------------------------------------------------------------------------

    async def listing(self) -> list[Version]:
        """Every shared version of this owner, as Swarm has them. Raises BackendError."""
        filters = {"label": [f"{LABEL_OWNER}={self.owner}", f"{LABEL_SHARED}=true"]}
        try:
            found = await self._docker.secrets.list(filters=filters)
        except aiodocker.DockerError as exc:
            raise BackendError(f"cannot list Swarm secrets: {str(exc.message).strip()}") from exc
        return [v for v in (version_of(f) for f in found) if v is not None]

    async def refresh(self) -> bool:
        """Read the versions again; whether the newest of any secret changed. Raises
        BackendError."""
        versions = await self.listing()
        ids = {v.id for v in versions}
        self._hidden &= ids
        before = self._newest
        self._versions = versions
        self._newest = newest(v for v in versions if v.id not in self._hidden)
        return self._newest != before

    def names(self, namespace: str = NAMESPACE) -> list[str]:
        return sorted(name for ns, name in self._newest if ns == namespace)

    def newest_version(self, name: str, namespace: str = NAMESPACE) -> Version:
        """The newest version. Raises NotFoundError,
        InvalidRequest."""
        _check(name, namespace)
        found = self._newest.get((namespace, name))
        if found is None:
            raise NotFoundError(f"secret {name!r} does not exist in namespace {namespace!r}")
        return found

    def digest(self, names: Iterable[str], namespace: str = NAMESPACE) -> str:
        """A hash of the named secrets' newest versions (missing ones count as missing): the
        same on every member that has the same listing."""
        h = hashlib.sha256()
        for name in sorted(set(names)):
            h.update(name.encode() + b"\0")
            found = self._newest.get((namespace, name))
            h.update(found.id.encode() if found is not None else b"-")
        return h.hexdigest()[:16]

    def missing(self, names: Iterable[str], namespace: str = NAMESPACE) -> list[str]:
        return [n for n in names if (namespace, n) not in self._newest]

    def ref(self, name: str, namespace: str, target: str) -> SecretRef:
        """The newest version as a service's secret. Raises NotFoundError."""
        found = self.newest_version(name, namespace)
        return SecretRef(
            name=name,
            version=found.id,
            source="",
            target=target,
            object_id=found.id,
            object_name=found.name,
        )

    # -- changes -----------------------------------------------------------------------------

    async def put(
        self, name: str, value: bytes, *, must_exist: bool, namespace: str = NAMESPACE
    ) -> Version:
        """A new version (create: ``must_exist`` False; update: True). Raises InvalidRequest,
        NotFoundError, ConflictError, BackendError."""
        _check(name, namespace)
        if len(value) > MAX_SWARM_SECRET:
            raise InvalidRequest(
                f"secret {name!r} is larger than {MAX_SWARM_SECRET} bytes (Swarm's limit)"
            )
        await self.refresh()  # what the other members made meanwhile
        exists = (namespace, name) in self._newest
        if must_exist and not exists:
            raise NotFoundError(f"secret {name!r} does not exist in namespace {namespace!r}")
        if not must_exist and exists:
            raise ConflictError(f"secret {name!r} already exists; update it with PUT")
        part = name if len(name) <= MAX_NAME_PART else hashlib.sha256(name.encode()).hexdigest()[:8]
        if namespace != NAMESPACE:
            part = f"{part}.{hashlib.sha256(namespace.encode()).hexdigest()[:6]}"
        object_name = f"{self.prefix}-{part}-{token.token_hex(6)}"
        labels = {
            LABEL_OWNER: self.owner,
            LABEL_MANAGED: "true",
            LABEL_SHARED: "true",
            LABEL_SECRET: name,
            LABEL_NAMESPACE: namespace,
            LABEL_SEQ: str(time.time_ns()),
        }
        try:
            created = await self._docker.secrets.create(
                object_name, base64.b64encode(value).decode(), b64=True, labels=labels
            )
        except aiodocker.DockerError as exc:
            raise BackendError(
                f"cannot create Swarm secret {name!r}: {str(exc.message).strip()}"
            ) from exc
        await self.refresh()
        self._log.info(
            "secret.version_created", secret=name, namespace=namespace, version=object_name
        )
        for version in self._versions:
            if version.id == str(created.get("ID", "")):
                return version
        raise BackendError(f"the Swarm secret made for {name!r} is not listed ({object_name})")

    def withdraw(self, version: Version) -> None:
        """Stop using a version here at once (a rotation that failed: the one before is the
        newest again here); :meth:`remove_version` then removes it for every member."""
        self._hidden.add(version.id)
        self._newest = newest(v for v in self._versions if v.id not in self._hidden)

    async def remove_version(self, version: Version) -> None:
        """Remove one version (refused by Swarm while a service uses it: logged)."""
        try:
            await self._docker.secrets.delete(version.id)
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                self._log.warning(
                    "secret.version_not_removed",
                    secret=version.secret,
                    version=version.name,
                    error=str(exc.message).strip(),
                )
        await self.refresh()

    async def delete(self, name: str, namespace: str = NAMESPACE) -> None:
        """Remove every version of a secret. Raises NotFoundError, ConflictError (a service
        still uses a version), BackendError."""
        self.newest_version(name, namespace)
        for version in await self.listing():
            if (version.namespace, version.secret) != (namespace, name):
                continue
            try:
                await self._docker.secrets.delete(version.id)
            except aiodocker.DockerError as exc:
                if exc.status == 404:
                    continue
                if "in use" in str(exc.message):
                    raise ConflictError(
                        f"secret {name!r} is still used by a service: {str(exc.message).strip()}"
                    ) from exc
                raise BackendError(
                    f"cannot remove Swarm secret {name!r}: {str(exc.message).strip()}"
                ) from exc
        await self.refresh()
        self._log.info("secret.removed", secret=name, namespace=namespace)
