"""Turning a function folder into an image.

``plan()`` renders the runtime's templates, overlays the function's files and hashes all of it
(plus the base image id and the runtime options): the hash is the image tag, so an unchanged
function is never rebuilt. ``check_sources()`` catches what can be caught on the host before a
build (a syntax error, a missing ``handle``, a Dockerfile with no ``FROM``), naming the file and
line. ``Builder.ensure()`` builds only when the engine lacks the tag: it checks the sources,
fetches wheels and node packages on the host and streams the engine's progress to the log.

A runtime with ``own_dockerfile`` lets a function bring its own Dockerfile: then the function's
folder is the whole build context, built as it is.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import hashlib
import io
import json
import os
import shlex
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

import aiodocker
import jinja2
import pathspec
from structlog.typing import FilteringBoundLogger

from faaso.build.baseimage import BASE_IMAGE, ensure_base_image
from faaso.build.engine import image_id, stream_build
from faaso.build.npm import dependencies, fetch_node_modules
from faaso.build.wheels import fetch_wheels, target_key
from faaso.config.runtimes import (
    FUNCTION_FILE,
    Runtime,
    RuntimeCatalog,
    function_options,
    load_function_file,
)
from faaso.errors import BackendError, BuildError, ConfigError, NpmError, SourceError, WheelError
from faaso.spec.function import FunctionSpec

FUNCTION_DIR = "function"  # where the function's files sit in the build context
IGNORE_FILE = ".faasoignore"  # gitignore syntax: files kept out of the image and its hash
IGNORED_NAMES = frozenset({".git", "__pycache__", ".faaso", ".venv", "node_modules", ".DS_Store"})
IGNORED_SUFFIXES = (".pyc", ".pyo", ".swp", "~")
BUILD_HASH_VERSION = "faaso-build-2"
LOG_TAIL = 30
PROGRESS_INTERVAL = 5.0  # seconds a build step may be quiet before a build.progress line
NODE_CHECK_TIMEOUT = 30.0
DYNAMIC_NAMES = frozenset({"globals", "vars", "locals", "exec", "setattr", "__dict__"})


@dataclass(frozen=True, slots=True)
class BuildPlan:
    """Everything that goes into one image, and the tag it gets."""

    function: str
    tag: str
    digest: str
    files: Mapping[str, bytes | Path]  # arcname in the context -> content or file on disk
    wheel_sets: Mapping[str, str]  # requirements arcname -> wheel folder arcname
    npm_sets: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    source: Path | None = None
    runtime: Runtime | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    own_dockerfile: bool = False  # the function's folder is the context, with its Dockerfile


def function_files(source: Path) -> dict[str, Path]:
    """The function's files that go into its image, by path relative to ``source``.

    Editor and cache leftovers are skipped, and so is ``function.yml``: faaso reads it (its
    options are hashed on their own), the image does not need it, and editing a test must not
    make a new image. So is what ``.faasoignore`` (gitignore syntax) names, and that file itself:
    they are neither in the build context nor in the hash.
    """
    ignored = ignore_spec(source)
    out: dict[str, Path] = {}
    for item in sorted(source.rglob("*")):
        rel = item.relative_to(source)
        if any(part in IGNORED_NAMES for part in rel.parts) or item.name.endswith(IGNORED_SUFFIXES):
            continue
        if rel.parts in ((FUNCTION_FILE,), (IGNORE_FILE,)):
            continue
        if item.is_file():
            posix = str(PurePosixPath(*rel.parts))
            if ignored is not None and ignored.match_file(posix):
                continue
            out[posix] = item
    return out


def ignore_spec(source: Path) -> pathspec.GitIgnoreSpec | None:
    """The patterns of ``source/.faasoignore``, or None when there is none.

    Raises :class:`SourceError` when it cannot be read or a pattern is not valid.
    """
    path = source / IGNORE_FILE
    if not path.is_file():
        return None
    try:
        return pathspec.GitIgnoreSpec.from_lines(path.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(path, f"cannot be read: {exc}") from exc
    except (ValueError, TypeError) as exc:  # pathspec's error for a malformed pattern
        raise SourceError(path, f"not a valid gitignore pattern: {exc}") from exc


def ignored_by(source: Path) -> Callable[[Path], bool]:
    """A predicate: is this path under ``source`` kept out of the image (by the built-in rules or
    ``.faasoignore``)? For watchers, so that an ignored file's change does not rebuild."""

    def check(path: Path) -> bool:
        try:
            rel = path.relative_to(source)
        except ValueError:
            return False
        if any(part in IGNORED_NAMES for part in rel.parts) or path.name.endswith(IGNORED_SUFFIXES):
            return True
        try:
            spec = ignore_spec(source)
        except SourceError:
            return False  # the build says what is wrong with it
        return (
            spec is not None and bool(rel.parts) and spec.match_file(str(PurePosixPath(*rel.parts)))
        )

    return check


def dockerfile_string(value: object) -> str:
    """A Jinja filter: ``value`` as a double-quoted Dockerfile string (for ENV and LABEL)."""
    text = " ".join(str(value).splitlines())
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def resolve_runtime(spec: FunctionSpec, catalog: RuntimeCatalog) -> Runtime:
    """The runtime ``spec`` builds with. Raises BuildError/ConfigError naming what is wrong."""
    if spec.source is None or spec.runtime is None:
        raise BuildError(spec.name, "it has no source and runtime to build from")
    runtime = catalog.find(spec.runtime)
    if runtime is None:
        raise BuildError(
            spec.name,
            f"runtime {spec.runtime!r} not found in {', '.join(map(str, catalog.dirs))}; "
            f"available: {', '.join(catalog.names()) or 'none'}",
        )
    declared = load_function_file(spec.source)
    if declared.runtime is not None and declared.runtime != runtime.name:
        raise ConfigError(
            declared.path,
            "runtime",
            declared.runtime,
            f"the function is built with the {runtime.name} runtime here; "
            "make the two agree (or drop one of them)",
        )
    own = runtime.own_dockerfile is not None and (spec.source / runtime.own_dockerfile).is_file()
    if not own:
        for name in runtime.required_files:
            if not (spec.source / name).is_file():
                raise SourceError(
                    spec.source / name, f"missing: the {runtime.name} runtime needs this file"
                )
    return runtime


def plan(spec: FunctionSpec, catalog: RuntimeCatalog, base_image_id: str) -> BuildPlan:
    """Render and hash a function's build context. Raises ConfigError/BuildError/SourceError,
    builds nothing."""
    runtime = resolve_runtime(spec, catalog)
    assert spec.source is not None
    options = function_options(spec.source, runtime)
    own_files = function_files(spec.source)
    files: dict[str, bytes | Path] = {}
    own = runtime.own_dockerfile is not None and runtime.own_dockerfile in own_files
    if own:
        assert runtime.own_dockerfile is not None
        files.update(own_files)
        if runtime.own_dockerfile != "Dockerfile":
            files["Dockerfile"] = own_files[runtime.own_dockerfile]
        wheel_sets: dict[str, str] = {}
        npm_sets: dict[str, str] = {}
    else:
        files.update(_render(spec, runtime, options, sorted(own_files)))
        # the function's own files overlay the runtime's
        files.update({f"{FUNCTION_DIR}/{rel}": path for rel, path in own_files.items()})
        wheel_sets = dict(runtime.wheels)
        npm_sets = dict(runtime.npm)

    digest = hashlib.sha256()
    digest.update(f"{BUILD_HASH_VERSION}\0{base_image_id}\0{runtime.name}\0{own}\0".encode())
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    digest.update(json.dumps(sorted(wheel_sets.items())).encode() + target_key().encode())
    digest.update(json.dumps(sorted(npm_sets.items())).encode())
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
        wheel_sets=MappingProxyType(wheel_sets),
        npm_sets=MappingProxyType(npm_sets),
        source=spec.source,
        runtime=runtime,
        options=MappingProxyType(options),
        own_dockerfile=own,
    )


def _render(
    spec: FunctionSpec, runtime: Runtime, options: dict[str, Any], rel_names: list[str]
) -> dict[str, bytes | Path]:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(runtime.path)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["dockerfile_string"] = dockerfile_string
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
    return files


# --------------------------------------------------------------------------- host-side checks


async def check_sources(build_plan: BuildPlan) -> None:
    """What can be checked on the host before building. Raises :class:`SourceError` (or
    ConfigError for function.yml) naming the file and, where there is one, the line."""
    runtime, source = build_plan.runtime, build_plan.source
    if runtime is None or source is None or runtime.check is None:
        return
    for package_json in build_plan.npm_sets:  # node reads it too: first
        data = _content(build_plan.files.get(package_json))
        if data is not None:
            try:
                dependencies(data, "package.json")
            except NpmError as exc:
                raise SourceError(source / "package.json", str(exc).split(": ", 1)[-1]) from exc
    if runtime.check == "python":
        await asyncio.to_thread(_check_python, source)
    elif runtime.check == "node":
        await _check_node(source)
    elif runtime.check == "dockerfile":
        _check_dockerfile(source, runtime, build_plan.options, build_plan.own_dockerfile)


def _source_files(source: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return [source / rel for rel in function_files(source) if rel.endswith(suffixes)]


def _check_python(source: Path) -> None:
    trees: dict[Path, ast.Module] = {}
    for path in _source_files(source, (".py",)):
        try:
            text = path.read_bytes()
            tree = compile(text, str(path), "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        except SyntaxError as exc:
            shown = (exc.text or "").rstrip("\n")
            caret = ""
            if shown and exc.offset:
                caret = "\n    " + " " * (exc.offset - 1 - (len(shown) - len(shown.lstrip()))) + "^"
            detail = f"\n    {shown.strip()}{caret}" if shown else ""
            raise SourceError(path, f"SyntaxError: {exc.msg}{detail}", exc.lineno) from exc
        except ValueError as exc:  # null bytes
            raise SourceError(path, f"cannot be compiled: {exc}") from exc
        if path == source / "handler.py" and not _binds_handle(tree):
            raise SourceError(
                path, "defines no handle(event, context): faaso calls handle for every request"
            )
        assert isinstance(tree, ast.Module)
        trees[path] = tree
    for path, tree in trees.items():
        _check_relative_imports(source, path, tree, trees)


def _check_relative_imports(
    source: Path, path: Path, tree: ast.Module, trees: Mapping[Path, ast.Module]
) -> None:
    """The relative imports (``from .helpers import x``) that would fail at start-up: the folder
    is the package ``function`` in the image, so each must name a module of the folder, and a
    name that module (when its top level is plain enough to tell) defines."""
    package = list(path.relative_to(source).parent.parts)
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        shown = "." * node.level + (node.module or "")
        if node.level - 1 > len(package):
            raise SourceError(
                path,
                f"ImportError: from {shown} import ... goes above the function's folder, "
                "which is the top package",
                node.lineno,
            )
        base = source.joinpath(*package[: len(package) - (node.level - 1)])
        target = base.joinpath(*node.module.split(".")) if node.module else base
        module_file = _module_file(target)
        if node.module and module_file is None and not target.is_dir():
            raise SourceError(
                path,
                f"ImportError: from {shown} import ...: the function's folder has no "
                f"{target.relative_to(source)}.py (nor a package of that name)",
                node.lineno,
            )
        module_tree = trees.get(module_file) if module_file is not None else None
        names = _top_level_names(module_tree) if module_tree is not None else None
        for alias in node.names:
            if alias.name == "*" or names is None or alias.name in names:
                continue
            if target.is_dir() and (
                _module_file(target / alias.name) or (target / alias.name).is_dir()
            ):
                continue  # a submodule: from . import helpers
            where = module_file.relative_to(source) if module_file is not None else target
            raise SourceError(
                path,
                f"ImportError: cannot import name {alias.name!r} from {shown} ({where})",
                node.lineno,
            )


def _module_file(target: Path) -> Path | None:
    """The file a module path names: ``target.py`` or ``target/__init__.py``."""
    for candidate in (target.with_name(target.name + ".py"), target / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _top_level_names(tree: ast.Module) -> set[str] | None:
    """The names a module's top level binds, or None when that cannot be told from the source
    (a star import, a module ``__getattr__``, names made at run time)."""
    names: set[str] = set()
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == "__getattr__":
                return None
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.While):
            for field_name in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field_name, []):
                    if isinstance(child, ast.ExceptHandler):
                        pending.extend(child.body)
                    else:
                        pending.append(child)
            if isinstance(node, ast.For):
                names.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Match | ast.TryStar):
            return None  # rare at a module's top level: leave it to the runtime
        elif isinstance(node, ast.Expr):
            for sub in ast.walk(node.value):
                if isinstance(sub, ast.Name) and sub.id in DYNAMIC_NAMES:
                    return None  # globals().update(...) and the like: names we cannot see
                if isinstance(sub, ast.NamedExpr):
                    names.add(sub.target.id)
    return names


def _binds_handle(tree: ast.AST) -> bool:
    """True when a module's top level may define ``handle`` (a def, an assignment, an import)."""
    assert isinstance(tree, ast.Module)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == "handle":
                return True
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*" or (alias.asname or alias.name) == "handle":
                    return True
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(
                isinstance(n, ast.Name) and n.id == "handle" for t in targets for n in ast.walk(t)
            ):
                return True
        elif isinstance(node, ast.If | ast.Try | ast.With):
            return True  # defined conditionally: leave it to the runtime to say
    return False


async def _check_node(source: Path) -> None:
    node = shutil.which("node")
    if node is None:  # the image's node checks every script in its build too
        return
    for path in _source_files(source, (".js", ".cjs", ".mjs")):
        proc = await asyncio.create_subprocess_exec(
            node,
            "--check",
            str(path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(NODE_CHECK_TIMEOUT):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            continue
        if proc.returncode == 0:
            continue
        lines = out.decode(errors="replace").splitlines()
        # "<file>:<line>", the source line, a caret line, "", "SyntaxError: ..."
        line_no: int | None = None
        if lines and lines[0].startswith(str(path) + ":"):
            tail = lines[0].rsplit(":", 1)[-1]
            line_no = int(tail) if tail.isdigit() else None
        message = next((ln for ln in lines if "Error" in ln and ":" in ln), "syntax error")
        shown = [ln for ln in lines[1:3] if ln.strip()]
        detail = "".join(f"\n    {ln}" for ln in shown)
        raise SourceError(path, f"{message.strip()}{detail}", line_no)


def _check_dockerfile(
    source: Path, runtime: Runtime, options: Mapping[str, Any], own: bool
) -> None:
    spec_file = source / FUNCTION_FILE
    command = str(options.get("command") or "").strip()
    if own:
        assert runtime.own_dockerfile is not None
        dockerfile = source / runtime.own_dockerfile
        if command:
            raise ConfigError(
                spec_file,
                "options.command",
                command,
                f"is for functions without a {runtime.own_dockerfile}; this one has "
                f"{dockerfile}, whose image runs what it likes",
            )
        try:
            text = dockerfile.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SourceError(dockerfile, f"cannot be read: {exc}") from exc
        for number, line in enumerate(text.splitlines(), 1):
            word = line.strip().split(maxsplit=1)[0].upper() if line.strip() else ""
            if not word or word.startswith("#") or word == "ARG":
                continue
            if word != "FROM":
                raise SourceError(
                    dockerfile, f"the first instruction must be FROM, not {word}", number
                )
            return
        raise SourceError(dockerfile, "has no FROM instruction")
    if not command:
        raise ConfigError(
            spec_file,
            "options.command",
            command,
            f"the {runtime.name} runtime needs either a {runtime.own_dockerfile} in "
            f"{source} or a command to run for each request",
        )
    if "\n" in str(options.get("command")).strip() or "\r" in command:
        raise ConfigError(spec_file, "options.command", command, "must be a single line")
    try:
        program = shlex.split(command)[0]
    except (ValueError, IndexError) as exc:
        raise ConfigError(
            spec_file, "options.command", command, f"cannot be parsed: {exc}"
        ) from exc
    if program.startswith("./"):
        target = source / program[2:]
        if not target.is_file():
            raise SourceError(target, f"missing: options.command runs {program}")
        if not os.access(target, os.X_OK):
            raise SourceError(target, f"is not executable (chmod +x {program[2:]})")


# --------------------------------------------------------------------------- building


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
        *,
        allow_pull: bool = True,
    ) -> None:
        self._allow_pull = allow_pull
        self._docker = docker
        self._catalog = catalog
        self._log = log
        self._slots = asyncio.Semaphore(concurrency)
        self._base_lock = asyncio.Lock()
        self._base_id: str | None = None
        self.progress_interval = PROGRESS_INTERVAL

    async def base_image_id(self) -> str:
        async with self._base_lock:
            if self._base_id is None:
                self._base_id = await ensure_base_image(
                    self._docker, self._log, allow_pull=self._allow_pull
                )
            return self._base_id

    async def plan(self, spec: FunctionSpec) -> BuildPlan:
        """The build plan of ``spec`` (its tag says whether it is built already)."""
        base_id = await self.base_image_id()
        return await asyncio.to_thread(plan, spec, self._catalog, base_id)

    async def ensure(self, spec: FunctionSpec, *, nocache: bool = False) -> str:
        """Return the image to run for ``spec``, building (or pulling) it first if needed.

        A built function gets its content-hash tag; a prebuilt ``image`` is resolved to its id,
        so that a new image behind the same tag counts as a change.
        """
        if spec.image is not None:
            return await self._ensure_prebuilt(spec.image)
        build_plan = await self.plan(spec)
        log = self._log.bind(function=spec.name, image=build_plan.tag)
        if not nocache and await image_id(self._docker, build_plan.tag):
            log.debug("build.cached")
            return build_plan.tag
        await check_sources(build_plan)
        async with self._slots:
            if not nocache and await image_id(self._docker, build_plan.tag):
                return build_plan.tag
            await self._build(build_plan, log, nocache)
        return build_plan.tag

    async def _ensure_prebuilt(self, image: str) -> str:
        found = await image_id(self._docker, image)
        if found:
            return found
        if not self._allow_pull:
            raise BackendError(f"image {image} is not on this host, and pulling is turned off")
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
        log.info("build.start", nocache=nocache)
        tail: list[str] = []
        step = ""
        last_output = time.monotonic()

        def on_line(line: str) -> None:
            nonlocal tail, step, last_output
            last_output = time.monotonic()
            tail = [*tail[-(LOG_TAIL - 1) :], line]
            if line.startswith("Step "):
                step = line
                log.info("build.step", step=line)
            else:  # a long step (apt, a compile) shows that it is alive
                log.info("build.output", line=line)

        async def heartbeat() -> None:
            # A step that prints nothing for a while still says it is running.
            while True:
                await asyncio.sleep(self.progress_interval)
                quiet = time.monotonic() - last_output
                if quiet >= self.progress_interval:
                    log.info(
                        "build.progress",
                        step=step or None,
                        seconds=round(time.monotonic() - started, 1),
                        quiet_s=round(quiet, 1),
                    )

        beat = asyncio.create_task(heartbeat())
        try:
            await self._build_streamed(build_plan, log, nocache, on_line, tail_of=lambda: tail)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        log.info("build.done", seconds=round(time.monotonic() - started, 1))

    async def _build_streamed(
        self,
        build_plan: BuildPlan,
        log: FilteringBoundLogger,
        nocache: bool,
        on_line: Callable[[str], None],
        tail_of: Callable[[], list[str]],
    ) -> None:
        with tempfile.TemporaryDirectory(prefix="faaso-build-") as tmp:
            try:
                extra = await self._fetch_wheels(build_plan, Path(tmp), log)
                extra.update(await self._fetch_node_modules(build_plan, Path(tmp), log))
            except (WheelError, NpmError) as exc:
                raise BuildError(build_plan.function, str(exc)) from exc
            with tempfile.TemporaryFile() as context:
                await asyncio.to_thread(self._write_context, build_plan, extra, context)
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
                    raise BuildError(build_plan.function, message.strip(), tail_of()) from exc

    async def _fetch_wheels(
        self, build_plan: BuildPlan, tmp: Path, log: FilteringBoundLogger
    ) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for req_name, folder in build_plan.wheel_sets.items():
            dest = tmp / "wheels" / str(len(out))
            requirements = _content(build_plan.files.get(req_name))
            count = await fetch_wheels(requirements or b"", dest, log)
            if count:
                log.info("build.wheels", requirements=req_name, wheels=count)
            out[folder] = dest
        return out

    async def _fetch_node_modules(
        self, build_plan: BuildPlan, tmp: Path, log: FilteringBoundLogger
    ) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for package_name, folder in build_plan.npm_sets.items():
            dest = tmp / "npm" / str(len(out))
            package_json = _content(build_plan.files.get(package_name))
            lock_name = str(PurePosixPath(package_name).with_name("package-lock.json"))
            lock = _content(build_plan.files.get(lock_name))
            count = 0
            if package_json is not None:
                count = await fetch_node_modules(package_json, lock, dest, log)
            else:
                dest.mkdir(parents=True)
            if count:
                log.info("build.node_modules", package=package_name, packages=count)
            out[folder] = dest
        return out

    @staticmethod
    def _write_context(build_plan: BuildPlan, extra: dict[str, Path], fileobj: Any) -> None:
        with tarfile.open(fileobj=fileobj, mode="w") as tar:
            for arcname in sorted(build_plan.files):
                content = build_plan.files[arcname]
                if isinstance(content, bytes):
                    _add_bytes(tar, arcname, content)
                else:
                    tar.add(content, arcname=arcname, recursive=False)
            for folder, src in sorted(extra.items()):
                _add_dir(tar, folder)
                for item in sorted(src.rglob("*")):
                    rel = item.relative_to(src)
                    tar.add(item, arcname=f"{folder}/{PurePosixPath(*rel.parts)}", recursive=False)


def _content(content: bytes | Path | None) -> bytes | None:
    if content is None or isinstance(content, bytes):
        return content
    return content.read_bytes()
