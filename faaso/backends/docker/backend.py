"""The plain-Docker backend: one container per instance, 8080 published on 127.0.0.1.

With a ``socket_root`` (faaso's ``<state>/sockets``), every instance also gets a directory of
its own there (``<socket_root>/<8 hex digits>``, mode 0777: the container's user has an unknown
uid), bind-mounted read-write at ``/run/faaso`` in the container, and the environment variable
``FAASO_SOCKET=/run/faaso/function.sock``. A runtime that honours it listens there too, and the
instance's :class:`~faaso.backends.base.Endpoint` carries the host side of that path as ``unix``.
The directory goes when the instance is removed. Neither the mount nor the variable is part of
the instance's fingerprint (the controller computes it from the function's spec alone), so
instances started with or without a socket directory are adopted alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker

from faaso.backends.base import (
    FUNCTION_PORT,
    LABEL_FINGERPRINT,
    LABEL_FUNCTION,
    LABEL_MANAGED,
    LABEL_OWNER,
    BackendEvent,
    Instance,
    InstanceSpec,
)
from faaso.backends.engine_events import engine_events
from faaso.errors import BackendError, UnrunnableError
from faaso.logs import get_logger
from faaso.spec.endpoint import Endpoint
from faaso.state.files import private_dir

PUBLISH_HOST = "127.0.0.1"
SOCKET_MOUNT = "/run/faaso"  # the instance's socket directory, inside the container
SOCKET_NAME = "function.sock"
SOCKET_ENV = "FAASO_SOCKET"
# sun_path holds 108 bytes, the terminating NUL included: a longer host path cannot be connected to
MAX_SOCKET_PATH = 107


def _split_timestamp(line: str) -> tuple[str, str]:
    stamp, _, text = line.partition(" ")
    return stamp, text.rstrip("\r")


def _message(exc: aiodocker.DockerError) -> str:
    return str(exc.message).strip()


class DockerBackend:
    """Runs instances as containers named ``faaso-<function>-<suffix>``."""

    def __init__(
        self, docker: aiodocker.Docker, owner: str, socket_root: Path | None = None
    ) -> None:
        self._docker = docker
        self.owner = owner
        self._log = get_logger("faaso.backend")
        self._socket_root: Path | None = None
        if socket_root is not None:
            root = socket_root.resolve()
            longest = root / ("0" * 8) / SOCKET_NAME
            if len(os.fsencode(longest)) > MAX_SOCKET_PATH:
                self._log.warning(
                    "backend.sockets_disabled",
                    socket_root=str(root),
                    reason=f"socket paths there would be longer than {MAX_SOCKET_PATH} bytes; "
                    "instances are reached over TCP only",
                )
            else:
                self._socket_root = root
        # instance id -> its socket directory (started here, or seen in a listing or inspect)
        self._socket_dirs: dict[str, Path] = {}
        self._creating: set[Path] = set()  # made for a container that does not exist yet

    # -- socket directories ------------------------------------------------------------------

    def _new_socket_dir(self) -> Path | None:
        """A fresh 0777 directory for one instance's socket, or None (TCP only)."""
        if self._socket_root is None:
            return None
        try:
            private_dir(self._socket_root)
            for _ in range(8):
                path = self._socket_root / secrets.token_hex(4)
                try:
                    path.mkdir(mode=0o777)
                except FileExistsError:
                    continue
                os.chmod(path, 0o777)  # mkdir's mode is filtered by the umask
                self._creating.add(path)
                return path
        except OSError as exc:
            self._log.warning("backend.socket_dir_failed", error=str(exc))
            return None
        return None

    def _owned_socket_dir(self, source: object) -> Path | None:
        """``source`` as one of our socket directories, or None if it is anything else."""
        if self._socket_root is None or not isinstance(source, str) or not source:
            return None
        path = Path(source)
        return path if path.parent == self._socket_root else None

    @staticmethod
    def _remove_socket_dir(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def _prune_socket_dirs(self, listed: list[dict[str, Any]]) -> None:
        """Remove socket directories no container of ours uses (left by a faaso that died)."""
        if self._socket_root is None:
            return
        self._socket_dirs = {i: d for i, d in self._socket_dirs.items() if d.exists()}
        keep = set(self._socket_dirs.values()) | self._creating
        for info in listed:
            for mount in info.get("Mounts") or []:
                owned = self._owned_socket_dir(mount.get("Source"))
                if owned is not None:
                    keep.add(owned)
        try:
            entries = list(self._socket_root.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry not in keep and entry.is_dir() and not entry.is_symlink():
                self._remove_socket_dir(entry)

    # -- the Backend protocol ----------------------------------------------------------------

    async def start(self, spec: InstanceSpec) -> Instance:
        name = f"faaso-{spec.function}-{secrets.token_hex(3)}"
        labels = {
            **spec.labels,
            LABEL_MANAGED: "true",
            LABEL_FUNCTION: spec.function,
            LABEL_OWNER: self.owner,
            LABEL_FINGERPRINT: spec.fingerprint,
        }
        host_config: dict[str, Any] = {
            "PortBindings": {f"{FUNCTION_PORT}/tcp": [{"HostIp": PUBLISH_HOST, "HostPort": ""}]},
            "RestartPolicy": {"Name": "no"},  # faaso itself restarts what dies
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "2"}},
        }
        if spec.limits.memory:
            host_config["Memory"] = spec.limits.memory
        if spec.limits.cpus:
            host_config["NanoCpus"] = int(spec.limits.cpus * 1e9)
        mounts: list[dict[str, Any]] = [
            {"Type": "bind", "Source": src, "Target": dst, "ReadOnly": True}
            for src, dst in spec.mounts
        ]
        env = dict(spec.env)
        socket_dir = self._new_socket_dir()
        if socket_dir is not None:
            # Read-write, and outside the root filesystem: works with read_only_root too.
            mounts.append(
                {
                    "Type": "bind",
                    "Source": str(socket_dir),
                    "Target": SOCKET_MOUNT,
                    "ReadOnly": False,
                }
            )
            env[SOCKET_ENV] = f"{SOCKET_MOUNT}/{SOCKET_NAME}"
        if mounts:
            host_config["Mounts"] = mounts
        if spec.read_only_root:
            host_config["ReadonlyRootfs"] = True
            host_config["Tmpfs"] = {"/tmp": "rw,size=64m"}
        config: dict[str, Any] = {
            "Image": spec.image,
            "Env": [f"{k}={v}" for k, v in sorted(env.items())],
            "Labels": labels,
            "ExposedPorts": {f"{FUNCTION_PORT}/tcp": {}},
            "HostConfig": host_config,
        }
        try:
            container = await self._docker.containers.create(config, name=name)
        except aiodocker.DockerError as exc:
            if socket_dir is not None:
                self._remove_socket_dir(socket_dir)
            # 400: the engine refused the settings themselves (more CPUs than the host has, a
            # bind source that does not exist): the same request fails the same way again.
            error = UnrunnableError if exc.status == 400 else BackendError
            raise error(f"cannot create a container of {spec.image}: {_message(exc)}") from exc
        finally:
            if socket_dir is not None:
                self._creating.discard(socket_dir)
        if socket_dir is not None:
            self._socket_dirs[container.id] = socket_dir
        try:
            await container.start()
            info = await container.show()
        except aiodocker.DockerError as exc:
            await self.stop(container.id, timeout=0)
            error = UnrunnableError if exc.status == 400 else BackendError
            raise error(f"cannot start container {name}: {_message(exc)}") from exc
        instance = self._instance(info)
        if instance.endpoint is None:
            await self.stop(container.id, timeout=0)
            raise BackendError(f"container {name} started without a published port")
        return instance

    async def stop(self, instance_id: str, timeout: float = 10.0) -> None:
        container = self._docker.containers.container(instance_id)
        socket_dir = self._socket_dirs.pop(instance_id, None)
        if socket_dir is None and self._socket_root is not None:
            with contextlib.suppress(aiodocker.DockerError):
                socket_dir = self._socket_dir_of(await container.show())
        try:
            if timeout > 0:
                await container.stop(t=max(1, round(timeout)))
            await container.delete(force=True, v=True)
        except aiodocker.DockerError as exc:
            if not (exc.status == 404 or (exc.status == 409 and "in progress" in _message(exc))):
                if socket_dir is not None:  # still there: so is its container
                    self._socket_dirs[instance_id] = socket_dir
                raise BackendError(
                    f"cannot remove container {instance_id[:12]}: {_message(exc)}"
                ) from exc
            # gone already, or being removed by someone else
        if socket_dir is not None:
            self._remove_socket_dir(socket_dir)

    async def pause(self, instance_id: str) -> None:
        try:
            await self._docker.containers.container(instance_id).pause()
        except aiodocker.DockerError as exc:
            raise BackendError(f"cannot pause {instance_id[:12]}: {_message(exc)}") from exc

    async def unpause(self, instance_id: str) -> None:
        try:
            await self._docker.containers.container(instance_id).unpause()
        except aiodocker.DockerError as exc:
            raise BackendError(f"cannot unpause {instance_id[:12]}: {_message(exc)}") from exc

    async def cpu_seconds(self, instance_id: str) -> float | None:
        # one-shot: the engine's stats without waiting a second for a "previous" sample; the
        # autoscaler makes the rate from two of its own readings.
        try:
            stats = await self._docker._query_json(
                f"containers/{instance_id}/stats",
                params={"stream": "false", "one-shot": "true"},
            )
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return None
            raise BackendError(
                f"cannot read the stats of {instance_id[:12]}: {_message(exc)}"
            ) from exc
        usage = ((stats or {}).get("cpu_stats") or {}).get("cpu_usage") or {}
        total = usage.get("total_usage")
        return float(total) / 1e9 if isinstance(total, int | float) else None

    async def list_instances(self) -> list[Instance]:
        try:
            found = await self._docker.containers.list(
                all=True, filters={"label": [f"{LABEL_OWNER}={self.owner}"]}
            )
            infos = await asyncio.gather(*(c.show() for c in found), return_exceptions=True)
        except aiodocker.DockerError as exc:
            raise BackendError(f"cannot list containers: {_message(exc)}") from exc
        shown = [i for i in infos if isinstance(i, dict)]
        instances = [self._instance(i) for i in shown]
        if len(shown) == len(found):  # a complete picture: what no container uses is stale
            self._prune_socket_dirs(shown)
        return instances

    async def inspect(self, instance_id: str) -> Instance | None:
        try:
            info = await self._docker.containers.container(instance_id).show()
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return None
            raise BackendError(f"cannot inspect {instance_id[:12]}: {_message(exc)}") from exc
        return self._instance(info)

    async def events(self) -> AsyncIterator[BackendEvent]:
        filters = {
            "type": ["container"],
            "label": [f"{LABEL_OWNER}={self.owner}"],
            "event": ["die", "oom", "health_status"],
        }
        # aclosing: when this generator is closed, the stream's task stops now, not at GC.
        async with contextlib.aclosing(engine_events(self._docker, filters)) as stream:
            async for item in stream:
                event = self._event(item)
                if event is not None:
                    yield event

    @staticmethod
    def _event(item: dict[str, Any]) -> BackendEvent | None:
        actor = item.get("Actor") or {}
        attrs = actor.get("Attributes") or {}
        instance_id = str(actor.get("ID") or item.get("id") or "")
        function = str(attrs.get(LABEL_FUNCTION, ""))
        status = str(item.get("status") or item.get("Action") or "")
        if not instance_id or not function:
            return None
        if status == "die":
            code = attrs.get("exitCode")
            return BackendEvent(
                "died",
                instance_id,
                function,
                int(code) if code is not None and str(code).isdigit() else None,
            )
        if status == "oom":
            return BackendEvent("oom", instance_id, function)
        if status.startswith("health_status") and "unhealthy" in status:
            return BackendEvent("unhealthy", instance_id, function)
        return None

    async def logs_tail(self, instance_id: str, lines: int = 20) -> list[str]:
        container = self._docker.containers.container(instance_id)
        try:
            chunks = await container.log(stdout=True, stderr=True, tail=lines)
        except aiodocker.DockerError:
            return []
        return "".join(chunks).splitlines()[-lines:]

    async def logs(
        self, instance_id: str, *, follow: bool, since: float | None, tail: int | None
    ) -> AsyncIterator[tuple[str, str]]:
        container = self._docker.containers.container(instance_id)
        params: dict[str, Any] = {"timestamps": True}
        if since is not None:
            params["since"] = f"{since:.9f}"
        if tail is not None:
            params["tail"] = str(tail)
        try:
            if follow:
                chunks: AsyncIterator[str] = container.log(
                    stdout=True, stderr=True, follow=True, **params
                )
                pending = ""
                async for chunk in chunks:
                    pending += chunk
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        yield _split_timestamp(line)
                if pending:
                    yield _split_timestamp(pending)
            else:
                listed = await container.log(stdout=True, stderr=True, **params)
                for line in "".join(listed).splitlines():
                    yield _split_timestamp(line)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return
            raise BackendError(
                f"cannot read the logs of {instance_id[:12]}: {_message(exc)}"
            ) from exc

    async def close(self) -> None:
        await self._docker.close()

    def _socket_dir_of(self, info: dict[str, Any]) -> Path | None:
        """The socket directory mounted into a container (as the engine reports it), if ours."""
        for mount in info.get("Mounts") or []:
            if mount.get("Destination") == SOCKET_MOUNT:
                return self._owned_socket_dir(mount.get("Source"))
        return None

    def _instance(self, info: dict[str, Any]) -> Instance:
        labels = info.get("Config", {}).get("Labels") or {}
        ports = (info.get("NetworkSettings") or {}).get("Ports") or {}
        socket_dir = self._socket_dir_of(info)
        unix: str | None = None
        if socket_dir is not None:
            self._socket_dirs[str(info["Id"])] = socket_dir
            if socket_dir.is_dir():
                unix = str(socket_dir / SOCKET_NAME)
        endpoint: Endpoint | None = None
        for binding in ports.get(f"{FUNCTION_PORT}/tcp") or []:
            if binding.get("HostIp") in (PUBLISH_HOST, "0.0.0.0") and binding.get("HostPort"):
                endpoint = Endpoint(PUBLISH_HOST, int(binding["HostPort"]), unix)
                break
        state = info.get("State") or {}
        running = bool(state.get("Running"))
        paused = bool(state.get("Paused"))
        exit_code = state.get("ExitCode")
        return Instance(
            id=str(info["Id"]),
            name=str(info.get("Name", "")).lstrip("/"),
            function=str(labels.get(LABEL_FUNCTION, "")),
            fingerprint=str(labels.get(LABEL_FINGERPRINT, "")),
            endpoint=endpoint,
            running=running,
            paused=paused,
            exit_code=None if running or exit_code is None else int(exit_code),
            created=str(info["Created"]) if info.get("Created") else None,
        )
