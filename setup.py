"""Ships the top-level ``runtimes/`` folder inside the wheel, as ``faaso/_runtimes/``.

Everything else is in pyproject.toml. The runtimes stay at the top of the repository (they are
what a user reads and copies to make their own); setuptools' package data only takes files that
live under a package, so this build step copies them in. An editable install needs no copy:
:func:`faaso.config.runtimes.builtin_runtimes_dir` finds the folder beside the package.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


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


setup(cmdclass={"build_py": BuildWithRuntimes})
