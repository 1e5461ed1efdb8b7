"""Images for an orchestrator: every node must be able to pull what a service runs.

:class:`RegistryImages` wraps the builder. A function faaso builds is tagged
``<registry>/<tag>`` and pushed to the registry named in the config (once per tag); the service
then names that reference, which any node can pull. Without a registry the local tag is used:
enough for a one-node Swarm, where the image is already on the only node (faaso logs a warning
once). A prebuilt ``image`` is passed to the orchestrator as written: its nodes pull it, and a
reference that no node can pull shows up as the tasks' error ("No such image").

With a login (``registry: {address, username, password_file | password_env}``) the push carries
``X-Registry-Auth``, and :meth:`RegistryImages.pull_auth` gives the same credentials for the
services whose image is in that registry (so the nodes can pull). The password is read from
its file or variable for each use and never logged.
"""

from __future__ import annotations

import base64
from typing import Protocol

import aiodocker
from structlog.typing import FilteringBoundLogger

from faaso.config.swarm import RegistryLogin
from faaso.errors import BackendError
from faaso.spec.function import FunctionSpec


class ImageSource(Protocol):
    """What builds (or finds) an image for a function: the :class:`Builder`."""

    async def ensure(self, spec: FunctionSpec) -> str: ...


class RegistryImages:
    def __init__(
        self,
        builder: ImageSource,
        docker: aiodocker.Docker,
        registry: str | None,
        log: FilteringBoundLogger,
        login: RegistryLogin | None = None,
    ) -> None:
        self._builder = builder
        self._login = login
        self._docker = docker
        self.registry = registry.rstrip("/") if registry else None
        self._log = log
        self._pushed: set[str] = set()
        self._warned = False

    async def ensure(self, spec: FunctionSpec) -> str:
        if spec.image is not None:
            return spec.image
        tag = await self._builder.ensure(spec)
        if self.registry is None:
            if not self._warned:
                self._warned = True
                self._log.warning(
                    "images.no_registry",
                    note="images stay on this node: set 'registry:' in the routes file for a "
                    "Swarm of more than one node",
                )
            return tag
        target = f"{self.registry}/{tag}"
        if target not in self._pushed:
            await self.push(tag, target)
            self._pushed.add(target)
        return target

    def credentials(self) -> str | None:
        """base64 ``user:password`` of the login, read now; None without one. Raises
        ConfigError when the password file or variable cannot be read."""
        if self._login is None:
            return None
        raw = f"{self._login.username}:{self._login.password()}"
        return base64.b64encode(raw.encode()).decode()

    def pull_auth(self, spec: FunctionSpec, image: str) -> str | None:
        """Credentials for a service running ``image``: the login's when the image is in the
        configured registry (what faaso pushed, or an ``image:`` that names it)."""
        if self.registry is None or not image.startswith(self.registry + "/"):
            return None
        return self.credentials()

    async def push(self, tag: str, target: str) -> None:
        repo, _, version = target.rpartition(":")
        auth = self.credentials()
        try:
            await self._docker.images.tag(tag, repo, tag=version)
            result = await self._docker.images.push(repo, tag=version, auth=auth)
        except aiodocker.DockerError as exc:
            raise BackendError(f"cannot push {target}: {str(exc.message).strip()}") from exc
        for item in result if isinstance(result, list) else [result]:
            if isinstance(item, dict) and item.get("error"):
                raise BackendError(f"cannot push {target}: {item['error']}")
        self._log.info("images.pushed", image=target, with_login=auth is not None)
