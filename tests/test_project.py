"""What scripts/test checks is the project's code, not function folders beside the config."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers import ROOT


def test_ruff_lints_the_project_not_function_folders() -> None:
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ruff"), "check", "--show-files", "."],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    files = [Path(line.strip()) for line in done.stdout.splitlines() if line.strip()]
    assert any(f == ROOT / "faaso" / "cli" / "main.py" for f in files), done.stdout[-2000:]
    assert any(f == ROOT / "runtimes" / "python" / "server.py" for f in files)
    assert not [f for f in files if (ROOT / "conf") in f.parents]
