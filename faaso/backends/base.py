"""The interface between faaso and whatever runs containers.

The supervisor and the proxy never speak Docker: the supervisor drives a :class:`Backend`
(plain Docker today, Docker Swarm services later) and the proxy only sees :class:`Endpoint`
objects in a pool. Every endpoint is on 127.0.0.1; an instance may also answer on a Unix
socket on the host (:attr:`Endpoint.unix`), a shorter way in than a published port.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from faaso.spec.endpoint import Endpoint
from faaso.spec.function import Limits

# Labels faaso puts on what it owns.
LABEL_FUNCTION = "faaso.function"
LABEL_OWNER = "faaso.owner"
LABEL_FINGERPRINT = "faaso.fingerprint"
LABEL_MANAGED = "faaso.managed"
FUNCTION_PORT = 8080


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """What to run for one instance of a function."""

    function: str
    image: str
    fingerprint: str  # changes whenever anything below changes
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    limits: Limits = field(default_factory=Limits)
    # (host file, path in the instance), mounted read-only
    mounts: tuple[tuple[str, str], ...] = ()
    read_only_root: bool = False


@dataclass(frozen=True, slots=True)
class Instance:
    """A running (or at least created) instance of a function."""

    id: str
    name: str
    function: str
    fingerprint: str
    endpoint: Endpoint | None
    running: bool = True
    paused: bool = False
    exit_code: int | None = None
    created: str | None = None  # RFC 3339, as the engine reports it


@dataclass(frozen=True, slots=True)
class BackendEvent:
    """Something happened to an instance: ``died`` (exit or OOM kill) or ``unhealthy``."""

    kind: str
    instance_id: str
    function: str
    exit_code: int | None = None


class Backend(Protocol):
    """Runs function instances. Implementations raise :class:`faaso.errors.BackendError`."""

    async def start(self, spec: InstanceSpec) -> Instance:
        """Create and start one instance; return it with its 127.0.0.1 endpoint."""

    async def stop(self, instance_id: str, timeout: float = 10.0) -> None:
        """Stop (SIGTERM, then SIGKILL after ``timeout``) and remove an instance. Idempotent."""

    async def pause(self, instance_id: str) -> None:
        """Freeze an instance: its memory is kept, it gets no CPU, it answers nothing."""

    async def unpause(self, instance_id: str) -> None:
        """Thaw a paused instance; it answers again at once."""

    async def cpu_seconds(self, instance_id: str) -> float | None:
        """CPU time the instance has used so far (seconds), or None when it is gone."""

    async def list_instances(self) -> list[Instance]:
        """Every instance this faaso owns, running or not."""

    async def inspect(self, instance_id: str) -> Instance | None:
        """One instance as it is now, or None when it no longer exists."""

    def events(self) -> AsyncIterator[BackendEvent]:
        """Events about this faaso's instances, as they happen.

        Ends or raises :class:`faaso.errors.BackendError` when the engine goes away; the caller
        reconnects by calling it again.
        """

    async def logs_tail(self, instance_id: str, lines: int = 20) -> list[str]:
        """The last lines an instance printed (stdout and stderr)."""

    def logs(
        self, instance_id: str, *, follow: bool, since: float | None, tail: int | None
    ) -> AsyncIterator[tuple[str, str]]:
        """(RFC 3339 timestamp, text) for each line an instance printed, oldest first;
        with ``follow``, new lines as they come, until the instance stops."""

    async def close(self) -> None:
        """Release the connection to the engine (instances keep running)."""
