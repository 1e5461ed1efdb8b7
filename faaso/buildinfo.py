"""Which build of faaso this is: ``/system/info``'s ``version.sha``, never empty.

In order: the build id baked into the package when its wheel was built (``_build_id.txt``,
written by ``setup.py``'s build step: the git commit of the checkout it was built from, else a
hash of the sources); the git commit when faaso runs from a checkout (an editable install);
else a hash of the package's own source files (``src-`` and 12 hex digits).
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
BUILD_ID_FILE = "_build_id.txt"


def source_sha(package_dir: Path = PACKAGE_DIR) -> str:
    """A hash of the package's Python files (their paths and contents)."""
    h = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        h.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
    return "src-" + h.hexdigest()[:12]


def git_sha(checkout: Path) -> str | None:
    """The commit checked out in ``checkout`` (a folder with ``.git``), or None."""
    if not (checkout / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and sha else None


def find_sha(package_dir: Path) -> str:
    baked = package_dir / BUILD_ID_FILE
    if baked.is_file():
        text = baked.read_text(encoding="utf-8").strip()
        if text:
            return text
    return git_sha(package_dir.parent) or source_sha(package_dir)


@functools.cache
def build_sha() -> str:
    """This faaso's build id (computed once per process)."""
    return find_sha(PACKAGE_DIR)
