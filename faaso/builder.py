"""Turning a function folder into an image.

``plan()`` renders the runtime's templates, overlays the function's files and hashes all of it
(plus the base image id and the runtime options): the hash is the image tag, so an unchanged
function is never rebuilt. ``Builder.ensure()`` builds only when the engine lacks that tag,
fetching wheels on the host and streaming the engine's progress to the log.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tarfile
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import aiodocker
import jinja2
from structlog.typing import FilteringBoundLogger

from faaso.baseimage import BASE_IMAGE, ensure_base_image
from faaso.config import FunctionSpec
from faaso.docker_client import image_id, stream_build
from faaso.errors import BackendError, BuildError, ConfigError
from faaso.runtimes import RuntimeCatalog, function_options
from faaso.wheels import WheelError, fetch_wheels, target_key

FUNCTION_DIR = "function"  # where the function's files sit in the build context
IGNORED_NAMES = frozenset({".git", "__pycache__", ".faaso", ".venv", "node_modules", ".DS_Store"})
IGNORED_SUFFIXES = (".pyc", ".pyo", ".swp")
BUILD_HASH_VERSION = "faaso-build-1"
LOG_TAIL = 30


@dataclass(frozen=True, slots=True)
class BuildPlan:
    """Everything that goes into one image, and the tag it gets."""

    function: str
    tag: str
    digest: str
    files: Mapping[str, bytes | Path]  # arcname in the context -> content or file on disk
    wheel_sets: Mapping[str, str]  # requirements arcname -> wheel folder arcname


def _function_files(source: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for item in sorted(source.rglob("*")):
        rel = item.relative_to(source)
        if any(part in IGNORED_NAMES for part in rel.parts) or item.name.endswith(IGNORED_SUFFIXES):
            continue
        if item.is_file():
            out[str(PurePosixPath(FUNCTION_DIR, *rel.parts))] = item
    return out


def plan(spec: FunctionSpec, catalog: RuntimeCatalog, base_image_id: str) -> BuildPlan:
    """Render and hash a function's build context. Raises ConfigError/BuildError, builds nothing."""
    if spec.source is None or spec.runtime is None:
        raise BuildError(spec.name, "it has no source and runtime to build from")
    runtime = catalog.find(spec.runtime)
    if runtime is None:
        raise BuildError(
            spec.name, f"runtime {spec.runtime!r} not found in {', '.join(map(str, catalog.dirs))}"
        )
    options = function_options(spec.source, runtime)
    function_files = _function_files(spec.source)
    rel_names = sorted(name[len(FUNCTION_DIR) + 1 :] for name in function_files)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(runtime.path)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    context = {
        "function": spec.name,
        "options": options,
        "base_image": BASE_IMAGE,
        "files": rel_names,
        "runtime": runtime.name,
    }
    files: dict[str, bytes | Path] = {}
    for rel in runtime.template_files():
        arcname = str(PurePosixPath(*rel.parts))
        if arcname.endswith(".j2"):
            try:
                rendered = env.get_template(arcname).render(context)
            except jinja2.TemplateError as exc:
                raise ConfigError(
                    runtime.path / rel,
                    getattr(exc, "name", "") or "",
                    arcname,
                    f"template error: {exc}",
                ) from exc
            files[arcname[:-3]] = rendered.encode()
        else:
            files[arcname] = runtime.path / rel
    files.update(function_files)  # the function's own files overlay the runtime's

    wheel_sets = {req: folder for req, folder in runtime.wheels.items()}
    digest = hashlib.sha256()
    digest.update(f"{BUILD_HASH_VERSION}\0{base_image_id}\0{runtime.name}\0".encode())
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    digest.update(json.dumps(sorted(wheel_sets.items())).encode() + target_key().encode())
    for arcname in sorted(files):
        content = files[arcname]
        data = content if isinstance(content, bytes) else content.read_bytes()
        mode = b"x" if isinstance(content, Path) and content.stat().st_mode & 0o111 else b"-"
        digest.update(arcname.encode() + b"\0" + mode + hashlib.sha256(data).digest())
    hexdigest = digest.hexdigest()
    return BuildPlan(
        function=spec.name,
        tag=f"faaso/{spec.name}:{hexdigest[:16]}",
        digest=hexdigest,
        files=files,
        wheel_sets=wheel_sets,
    )


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


class Builder:
    """Builds function images, at most ``concurrency`` at a time."""

    def __init__(
        self,
        docker: aiodocker.Docker,
        catalog: RuntimeCatalog,
        log: FilteringBoundLogger,
        concurrency: int = 2,
    ) -> None:
        self._docker = docker
        self._catalog = catalog
        self._log = log
        self._slots = asyncio.Semaphore(concurrency)
        self._base_lock = asyncio.Lock()
        self._base_id: str | None = None

    async def base_image_id(self) -> str:
        async with self._base_lock:
            if self._base_id is None:
                self._base_id = await ensure_base_image(self._docker, self._log)
            return self._base_id

    async def ensure(self, spec: FunctionSpec, *, nocache: bool = False) -> str:
        """Return the image to run for ``spec``, building (or pulling) it first if needed.

        A built function gets its content-hash tag; a prebuilt ``image`` is resolved to its id,
        so that a new image behind the same tag counts as a change.
        """
        if spec.image is not None:
            return await self._ensure_prebuilt(spec.image)
        base_id = await self.base_image_id()
        build_plan = await asyncio.to_thread(plan, spec, self._catalog, base_id)
        log = self._log.bind(function=spec.name, image=build_plan.tag)
        if not nocache and await image_id(self._docker, build_plan.tag):
            log.debug("build.cached")
            return build_plan.tag
        async with self._slots:
            if not nocache and await image_id(self._docker, build_plan.tag):
                return build_plan.tag
            await self._build(build_plan, log, nocache)
        return build_plan.tag

    async def _ensure_prebuilt(self, image: str) -> str:
        found = await image_id(self._docker, image)
        if found:
            return found
        log = self._log.bind(image=image)
        log.info("image.pull")
        try:
            async for item in self._docker.images.pull(image, stream=True):
                status = item.get("status")
                if status and "progress" not in item:
                    log.info("image.pull.progress", status=status, layer=item.get("id"))
        except aiodocker.DockerError as exc:
            raise BackendError(
                f"image {image} is not on this host and cannot be pulled: "
                f"{str(exc.message).strip()}"
            ) from exc
        found = await image_id(self._docker, image)
        if not found:
            raise BackendError(f"image {image} is still missing after a pull")
        return found

    async def _build(self, build_plan: BuildPlan, log: FilteringBoundLogger, nocache: bool) -> None:
        started = time.monotonic()
        log.info("build.start")
        tail: list[str] = []

        def on_line(line: str) -> None:
            nonlocal tail
            tail = [*tail[-(LOG_TAIL - 1) :], line]
            if line.startswith("Step "):
                log.info("build.step", step=line)
            else:
                log.debug("build.output", line=line)

        with tempfile.TemporaryDirectory(prefix="faaso-build-") as tmp:
            try:
                wheel_dirs = await self._fetch_wheels(build_plan, Path(tmp), log)
            except WheelError as exc:
                raise BuildError(build_plan.function, str(exc)) from exc
            with tempfile.TemporaryFile() as context:
                await asyncio.to_thread(self._write_context, build_plan, wheel_dirs, context)
                context.seek(0)
                try:
                    await stream_build(
                        self._docker,
                        context,
                        build_plan.tag,
                        on_line,
                        nocache=nocache,
                        labels={
                            "faaso.function": build_plan.function,
                            "faaso.build-hash": build_plan.digest,
                        },
                    )
                except (aiodocker.DockerError, BackendError) as exc:
                    message = getattr(exc, "message", None) or str(exc)
                    raise BuildError(build_plan.function, message.strip(), tail) from exc
        log.info("build.done", seconds=round(time.monotonic() - started, 1))

    async def _fetch_wheels(
        self, build_plan: BuildPlan, tmp: Path, log: FilteringBoundLogger
    ) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for req_name, folder in build_plan.wheel_sets.items():
            dest = tmp / "wheels" / str(len(out))
            content = build_plan.files.get(req_name)
            requirements = b""
            if content is not None:
                requirements = content if isinstance(content, bytes) else content.read_bytes()
            count = await fetch_wheels(requirements, dest, log)
            if count:
                log.info("build.wheels", requirements=req_name, wheels=count)
            out[folder] = dest
        return out

    @staticmethod
    def _write_context(build_plan: BuildPlan, wheel_dirs: dict[str, Path], fileobj: Any) -> None:
        with tarfile.open(fileobj=fileobj, mode="w") as tar:
            for arcname in sorted(build_plan.files):
                content = build_plan.files[arcname]
                if isinstance(content, bytes):
                    _add_bytes(tar, arcname, content)
                else:
                    tar.add(content, arcname=arcname, recursive=False)
            for folder, src in sorted(wheel_dirs.items()):
                _add_dir(tar, folder)
                for wheel in sorted(src.glob("*.whl")):
                    tar.add(wheel, arcname=f"{folder}/{wheel.name}", recursive=False)
