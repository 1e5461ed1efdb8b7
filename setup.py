"""Ships the top-level ``runtimes/`` folder inside the wheel, as ``faaso/_runtimes/``, and
bakes the build id into it (``faaso/_build_id.txt``: ``/system/info``'s ``version.sha``).

Everything else is in pyproject.toml. The runtimes stay at the top of the repository (they are
what a user reads and copies to make their own); setuptools' package data only takes files that
live under a package, so this build step copies them in. An editable install needs no copy:
:func:`faaso.config.runtimes.builtin_runtimes_dir` finds the folder beside the package.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from faaso.buildinfo import BUILD_ID_FILE, git_sha, source_sha  # noqa: E402  (stdlib only)


class BuildWithRuntimes(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "faaso" / "_runtimes"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(
            HERE / "runtimes",
            target,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules"),
        )
        # The checkout's commit, else a hash of the sources: never empty.
        build_id = git_sha(HERE) or source_sha(HERE / "faaso")
        (Path(self.build_lib) / "faaso" / BUILD_ID_FILE).write_text(build_id + "\n")


setup(cmdclass={"build_py": BuildWithRuntimes})
