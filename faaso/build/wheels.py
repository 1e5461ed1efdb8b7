"""Python wheels for an image, fetched on the host.

Containers here cannot reach the package index, so pip runs on the host: it downloads wheels for
the image's interpreter (CPython 3.11 on Debian bookworm, glibc 2.36) into a cache, and the build
context carries them so the image installs them with ``pip install --no-index``. The same works
offline once the cache holds them.

A requirement with no such wheel (only a source distribution, like ``docopt``) is built into a
wheel on the host with ``pip wheel`` and offered to the next download: a pure-Python one always
fits; a platform one fits only when the host is CPython 3.11 on a glibc no newer than the
image's. The same build tells a misspelled name (the index has no versions at all) from a
version that does not exist.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from faaso.build.proc import indent_tail, run_streaming
from faaso.errors import WheelError
from faaso.state.paths import cache_dir

TARGET_PYTHON = "3.11"
TARGET_ABI = "cp311"
TARGET_GLIBC_MINOR = 36  # Debian bookworm
MAX_SOURCE_BUILDS = 20  # requirements built from source for one requirements file, at most
NO_MATCH = re.compile(r"No matching distribution found for (.+)$")
FROM_VERSIONS = re.compile(r"\(from versions: ([^)]*)\)")


def _platform_tags(host_platform: bool = False) -> list[str]:
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(
        platform.machine().lower(), platform.machine()
    )
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(TARGET_GLIBC_MINOR, 16, -1)]
    # A wheel built on a host that matches the image is tagged linux_<arch> (see
    # _host_builds_for_target); the index never has such wheels, only our own build folder.
    return [*tags, f"manylinux2014_{arch}", *([f"linux_{arch}"] if host_platform else [])]


def target_key() -> str:
    """What the wheels are for; part of every image hash that includes wheels."""
    return f"{TARGET_ABI}-{'+'.join(_platform_tags()[:1])}"


async def fetch_wheels(requirements: bytes, dest: Path, log: FilteringBoundLogger) -> int:
    """Put the wheels ``requirements`` needs (with dependencies) into ``dest``; return how many."""
    dest.mkdir(parents=True, exist_ok=True)
    if not requirements.strip():
        return 0
    key = hashlib.sha256(target_key().encode() + b"\0" + requirements).hexdigest()[:24]
    cached = cache_dir() / "wheels" / key
    if not (cached / ".complete").exists():
        await _download(requirements, cached, log)
    count = 0
    for wheel in sorted(cached.glob("*.whl")):
        target = dest / wheel.name
        try:
            os.link(wheel, target)
        except OSError:
            shutil.copy2(wheel, target)
        count += 1
    return count


async def _download(requirements: bytes, cached: Path, log: FilteringBoundLogger) -> None:
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent, prefix=".tmp-") as tmp:
        req_file = Path(tmp) / "requirements.txt"
        req_file.write_bytes(requirements)
        out = Path(tmp) / "wheels"
        built = Path(tmp) / "built"  # wheels built here from source distributions
        built.mkdir()
        log.info("wheels.download", requirements=requirements.decode(errors="replace").split())
        tried: set[str] = set()
        host_platform = False  # a wheel built here is for this host's platform, not manylinux
        while True:
            code, tail = await run_streaming(
                _download_argv(req_file, out, built, host_platform), _progress(log), keep=30
            )
            if code == 0:
                break
            missing = _missing(tail)
            if missing is None or missing in tried or len(tried) >= MAX_SOURCE_BUILDS:
                raise WheelError(
                    "pip could not fetch binary wheels for CPython "
                    f"{TARGET_PYTHON} on Linux:\n" + indent_tail(tail)
                )
            tried.add(missing)
            # No wheel for the image's interpreter: build one on the host from the source
            # distribution (which also tells whether there is such a package at all).
            wheel = await _build_from_source(missing, built, log)
            if not wheel.name.endswith("-any.whl"):
                if not _host_builds_for_target():
                    raise WheelError(
                        f"{missing} has no wheel for CPython {TARGET_PYTHON} on Linux, and the "
                        f"wheel built from its source on this host ({wheel.name}) is for this "
                        f"host's interpreter, not the image's (CPython {TARGET_PYTHON}, glibc "
                        f"2.{TARGET_GLIBC_MINOR}): pin a version that has a wheel, or build it "
                        "in the image with a Dockerfile of the function's own"
                    )
                host_platform = True
        (out / ".complete").write_text("ok\n")
        if cached.exists():
            shutil.rmtree(cached)
        out.rename(cached)


def _download_argv(req_file: Path, out: Path, built: Path, host_platform: bool) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--python-version",
        TARGET_PYTHON,
        "--implementation",
        "cp",
        "--abi",
        TARGET_ABI,
        "--abi",
        "abi3",
        "--abi",
        "none",
        "--find-links",
        str(built),
    ]
    for tag in _platform_tags(host_platform):
        argv += ["--platform", tag]
    return [*argv, "-d", str(out), "-r", str(req_file)]


def _progress(log: FilteringBoundLogger) -> Callable[[str], None]:
    def progress(line: str) -> None:
        if line.startswith(("Collecting", "Saved", "Successfully", "Building", "Created")):
            log.info("wheels.progress", line=line)

    return progress


def _missing(tail: list[str]) -> str | None:
    """The requirement pip found no distribution for (``docopt==0.6.2``), from its output."""
    for line in reversed(tail):
        found = NO_MATCH.search(line)
        if found:
            return found.group(1).strip()
    return None


async def _build_from_source(requirement: str, built: Path, log: FilteringBoundLogger) -> Path:
    """Build ``requirement`` (no dependencies: the next download resolves those) into a wheel
    in ``built``; return it. Raises WheelError saying there is no such package, no such version,
    or why the build failed."""
    log.info("wheels.build_from_source", requirement=requirement)
    before = set(built.glob("*.whl"))
    argv = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--disable-pip-version-check",
        "--no-deps",
        "--wheel-dir",
        str(built),
        requirement,
    ]
    code, tail = await run_streaming(argv, _progress(log), keep=30)
    if code == 0:
        made = sorted(set(built.glob("*.whl")) - before)
        if made:
            return made[0]
        raise WheelError(f"pip built no wheel for {requirement}:\n" + indent_tail(tail))
    versions = next((m.group(1) for m in map(FROM_VERSIONS.search, tail) if m), None)
    name = re.split(r"[\s<>=!~;\[(@]", requirement, maxsplit=1)[0]
    if versions is not None and versions.strip() == "none":
        raise WheelError(
            f"there is no package named {name!r} on the package index "
            "(check its spelling in requirements.txt)"
        )
    if versions is not None:
        raise WheelError(f"no version of {name} matches {requirement!r}; it has: {versions}")
    raise WheelError(
        f"{requirement} has no wheel for CPython {TARGET_PYTHON} on Linux, and building one from "
        "its source on this host failed:\n" + indent_tail(tail)
    )


def _host_builds_for_target() -> bool:
    """True when a wheel built on this host runs in the image: the same interpreter version on
    Linux with a glibc no newer than the image's."""
    if sys.implementation.name != "cpython" or sys.platform != "linux":
        return False
    if f"{sys.version_info[0]}.{sys.version_info[1]}" != TARGET_PYTHON:
        return False
    libc, version = platform.libc_ver()
    if libc != "glibc":
        return False
    parts = version.split(".")
    return (
        len(parts) >= 2
        and parts[0] == "2"
        and parts[1].isdigit()
        and (int(parts[1]) <= TARGET_GLIBC_MINOR)
    )
