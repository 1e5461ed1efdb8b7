"""The base image every runtime builds on: Debian bookworm, pulled or bootstrapped locally.

Where a registry is reachable the official image is pulled and tagged. Where none is (as on
air-gapped hosts), the image is built once from the host's own Debian mirror: ``debootstrap``
into a folder, then imported through the engine (``FROM scratch`` + ``ADD rootfs.tar``, which
keeps owners and modes). Both paths report progress. A file lock makes concurrent callers
(two ``faaso`` processes) wait for one bootstrap instead of running two.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
from structlog.typing import FilteringBoundLogger

from faaso.build.engine import image_id, stream_build
from faaso.build.mirror import debian_mirror
from faaso.build.proc import indent_tail, run_streaming
from faaso.errors import BackendError, BootstrapError
from faaso.state.paths import cache_dir

SUITE = "bookworm"
BASE_IMAGE = f"faaso/debian:{SUITE}"
UPSTREAM_IMAGE = f"debian:{SUITE}"
PULL_TIMEOUT = 300.0


@contextlib.asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


async def ensure_base_image(
    docker: aiodocker.Docker, log: FilteringBoundLogger, *, allow_pull: bool = True
) -> str:
    """Make sure :data:`BASE_IMAGE` exists; return its id."""
    found = await image_id(docker, BASE_IMAGE)
    if found:
        return found
    async with _file_lock(cache_dir() / "bootstrap.lock"):
        found = await image_id(docker, BASE_IMAGE)  # another process may have made it
        if found:
            return found
        if allow_pull and await _try_pull(docker, log):
            await docker.images.tag(UPSTREAM_IMAGE, "faaso/debian", tag=SUITE)
        else:
            await _bootstrap(docker, log)
        made = await image_id(docker, BASE_IMAGE)
        if not made:
            raise BootstrapError(f"{BASE_IMAGE} is still missing after it was made")
        return made


async def _try_pull(docker: aiodocker.Docker, log: FilteringBoundLogger) -> bool:
    log.info("base_image.pull", image=UPSTREAM_IMAGE)
    try:
        async with asyncio.timeout(PULL_TIMEOUT):
            async for item in docker.images.pull(UPSTREAM_IMAGE, stream=True):
                if "error" in item:
                    raise BackendError(str(item["error"]))
                status = item.get("status")
                if status and "progress" not in item:
                    log.info("base_image.pull.progress", status=status, layer=item.get("id"))
    except (aiodocker.DockerError, BackendError, TimeoutError, OSError) as exc:
        log.info(
            "base_image.pull.unavailable",
            image=UPSTREAM_IMAGE,
            reason=str(getattr(exc, "message", exc)) or type(exc).__name__,
            next="bootstrapping from the host's Debian mirror",
        )
        return False
    return True


async def _bootstrap(docker: aiodocker.Docker, log: FilteringBoundLogger) -> None:
    if shutil.which("debootstrap") is None:
        raise BootstrapError(
            f"{BASE_IMAGE} is missing, {UPSTREAM_IMAGE} cannot be pulled, and debootstrap is not "
            "installed: run `apt-get install debootstrap` (scripts/serve does it)"
        )
    if os.geteuid() != 0:
        raise BootstrapError("bootstrapping the base image with debootstrap needs root")
    mirror = debian_mirror(SUITE)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bootstrap-", dir=cache_dir()) as tmp:
        root = Path(tmp) / "rootfs"
        log.info("base_image.bootstrap.start", suite=SUITE, mirror=mirror, dir=str(root))
        await _run_logged(
            ["debootstrap", "--variant=minbase", SUITE, str(root), mirror],
            log,
            "base_image.bootstrap.progress",
        )
        _trim_rootfs(root)
        rootfs_tar = Path(tmp) / "rootfs.tar"
        log.info("base_image.bootstrap.pack", file=str(rootfs_tar))
        await _run_logged(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(rootfs_tar), "."],
            log,
            "base_image.bootstrap.tar",
        )
        context = Path(tmp) / "context.tar"
        await asyncio.to_thread(_write_import_context, context, rootfs_tar)
        log.info(
            "base_image.bootstrap.import",
            image=BASE_IMAGE,
            size_mb=round(rootfs_tar.stat().st_size / 2**20),
        )
        with context.open("rb") as fileobj:
            try:
                await stream_build(
                    docker,
                    fileobj,
                    BASE_IMAGE,
                    lambda line: log.info("base_image.bootstrap.import.progress", line=line),
                    labels={"faaso.base": SUITE, "faaso.mirror": mirror},
                )
            except aiodocker.DockerError as exc:
                raise BootstrapError(f"importing the base image failed: {exc.message}") from exc
            except BackendError as exc:
                raise BootstrapError(f"importing the base image failed: {exc}") from exc
    log.info(
        "base_image.bootstrap.done", image=BASE_IMAGE, seconds=round(time.monotonic() - started, 1)
    )


def _trim_rootfs(root: Path) -> None:
    """Drop what a container never needs: downloaded .debs and apt lists."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*"):
        for item in root.glob(pattern):
            if item.is_file():
                item.unlink()
    # Keep images small and builds quiet, as Debian's official image does: no recommends, no
    # docs, and apt's downloaded packages and caches removed after every install.
    (root / "etc/apt/apt.conf.d/docker-clean").write_text(
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";\n'
    )
    (root / "etc/apt/apt.conf.d/docker-no-recommends").write_text(
        'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
    )
    (root / "etc/dpkg/dpkg.cfg.d/docker-no-docs").write_text(
        "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n"
        "path-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n"
        "path-exclude /usr/share/locale/*\n"
    )


def _write_import_context(context: Path, rootfs_tar: Path) -> None:
    dockerfile = (
        b"FROM scratch\n"
        b"ADD rootfs.tar /\n"
        b"ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive\n"
        b'CMD ["bash"]\n'
    )
    with tarfile.open(context, "w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        tar.add(rootfs_tar, arcname="rootfs.tar")


async def _run_logged(argv: list[str], log: FilteringBoundLogger, event: str) -> None:
    """Run a command, logging each line it prints; raise BootstrapError with the tail on failure."""
    code, tail = await run_streaming(argv, lambda line: log.info(event, line=line))
    if code != 0:
        raise BootstrapError(f"{argv[0]} exited with {code}:\n{indent_tail(tail)}")
