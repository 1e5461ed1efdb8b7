"""Node packages for an image, fetched on the host.

Containers here cannot reach the npm registry, so npm runs on the host: it installs a
function's ``dependencies`` (not ``devDependencies``) into a cache keyed by ``package.json`` and
``package-lock.json``, and the build context carries the resulting ``node_modules``. Install
scripts never run (they would run on the host, for the host's node): a package that needs one to
build a native addon is refused with its name rather than failing inside the container.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from faaso.build.proc import indent_tail, run_streaming
from faaso.errors import NpmError
from faaso.state.paths import cache_dir

CACHE_VERSION = "npm-1"


def dependencies(package_json: bytes, where: str) -> dict[str, str]:
    """The ``dependencies`` of a package.json. Raises :class:`NpmError` naming ``where``."""
    try:
        doc = json.loads(package_json or b"{}")
    except ValueError as exc:
        raise NpmError(f"{where}: not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise NpmError(f"{where}: must be a JSON object")
    deps = doc.get("dependencies") or {}
    if not isinstance(deps, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in deps.items()
    ):
        raise NpmError(f"{where}: 'dependencies' must map package names to versions")
    return deps


def _link_tree(src: Path, dest: Path) -> None:
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dest, symlinks=True, copy_function=link, dirs_exist_ok=True)


def _native_packages(modules: Path) -> list[str]:
    found: set[str] = set()
    for gyp in modules.rglob("binding.gyp"):
        rel = gyp.relative_to(modules).parts
        name = "/".join(rel[:2]) if rel[0].startswith("@") else rel[0]
        found.add(name)
    return sorted(found)


async def fetch_node_modules(
    package_json: bytes, lock: bytes | None, dest: Path, log: FilteringBoundLogger
) -> int:
    """Fill ``dest`` with the node_modules ``package_json`` needs; return how many packages."""
    dest.mkdir(parents=True, exist_ok=True)
    if not dependencies(package_json, "package.json"):
        return 0
    key = hashlib.sha256(
        CACHE_VERSION.encode() + b"\0" + package_json + b"\0" + (lock or b"")
    ).hexdigest()[:24]
    cached = cache_dir() / "npm" / key
    if not (cached / ".complete").exists():
        await _install(package_json, lock, cached, log)
    modules = cached / "node_modules"
    await asyncio.to_thread(_link_tree, modules, dest)
    count = 0
    for item in modules.iterdir():
        if item.name.startswith("@"):
            count += sum(1 for _ in item.iterdir())  # a scope: @scope/name folders
        elif not item.name.startswith("."):
            count += 1
    return count


async def _install(
    package_json: bytes, lock: bytes | None, cached: Path, log: FilteringBoundLogger
) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise NpmError(
            "this function has package.json dependencies and npm is not installed on this host "
            "(faaso fetches them on the host, then installs them in the image)"
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent, prefix=".tmp-") as tmp:
        work = Path(tmp) / "pkg"
        work.mkdir()
        (work / "package.json").write_bytes(package_json)
        if lock is not None:
            (work / "package-lock.json").write_bytes(lock)
        argv = [
            npm,
            "ci" if lock is not None else "install",
            "--omit=dev",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--no-update-notifier",
            "--cache",
            str(cache_dir() / "npm-cache"),
        ]
        log.info("npm.install", dependencies=sorted(dependencies(package_json, "package.json")))
        code, tail = await run_streaming(
            argv, lambda line: log.debug("npm.output", line=line), cwd=work, keep=15
        )
        if code != 0:
            raise NpmError(
                "npm could not install the dependencies of package.json:\n" + indent_tail(tail)
            )
        modules = work / "node_modules"
        modules.mkdir(exist_ok=True)
        native = _native_packages(modules)
        if native:
            raise NpmError(
                f"package.json needs {', '.join(native)}, which build native code with an install "
                "script; faaso's node runtime installs plain JavaScript packages only"
            )
        (work / ".complete").write_text("ok\n")
        if cached.exists():
            shutil.rmtree(cached)
        work.rename(cached)
