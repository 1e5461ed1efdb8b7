"""Python wheels for an image, fetched on the host.

Containers here cannot reach PyPI over HTTPS, so pip runs on the host: it downloads wheels for
the image's interpreter (CPython 3.11 on Debian bookworm, glibc 2.36) into a cache, and the build
context carries them so the image installs them with ``pip install --no-index``. The same works
offline once the cache holds them.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from faaso.build.proc import indent_tail, run_streaming
from faaso.errors import WheelError
from faaso.state.paths import cache_dir

TARGET_PYTHON = "3.11"
TARGET_ABI = "cp311"
TARGET_GLIBC_MINOR = 36  # Debian bookworm


def _platform_tags() -> list[str]:
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(
        platform.machine().lower(), platform.machine()
    )
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(TARGET_GLIBC_MINOR, 16, -1)]
    return [*tags, f"manylinux2014_{arch}"]


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
        ]
        for tag in _platform_tags():
            argv += ["--platform", tag]
        argv += ["-d", str(out), "-r", str(req_file)]
        log.info("wheels.download", requirements=requirements.decode(errors="replace").split())

        def progress(line: str) -> None:
            if line.startswith(("Collecting", "Saved", "Successfully")):
                log.info("wheels.progress", line=line)

        code, tail = await run_streaming(argv, progress, keep=15)
        if code != 0:
            raise WheelError(
                "pip could not fetch binary wheels for CPython "
                f"{TARGET_PYTHON} on Linux (a package with no wheel needs building first):\n"
                + indent_tail(tail)
            )
        (out / ".complete").write_text("ok\n")
        if cached.exists():
            shutil.rmtree(cached)
        out.rename(cached)
