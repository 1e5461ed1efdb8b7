"""The build id (/system/info's version.sha) is never empty, wherever faaso runs from."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from faaso.buildinfo import BUILD_ID_FILE, PACKAGE_DIR, build_sha, find_sha
from tests.helpers import ROOT


def test_a_checkout_reports_its_commit() -> None:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert PACKAGE_DIR.parent == ROOT
    assert build_sha() == head


def test_a_copy_without_git_reports_a_source_hash_and_a_baked_id_wins(tmp_path: Path) -> None:
    copy = tmp_path / "site" / "faaso"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "_build*"))
    sha = find_sha(copy)
    assert sha.startswith("src-") and len(sha) == 16
    assert find_sha(copy) == sha  # the same sources, the same id
    (copy / "extra.py").write_text("X = 1\n")
    assert find_sha(copy) != sha
    (copy / BUILD_ID_FILE).write_text("0123abc\n")
    assert find_sha(copy) == "0123abc"
    (copy / BUILD_ID_FILE).write_text("\n")  # an empty file is no id
    assert find_sha(copy).startswith("src-")
