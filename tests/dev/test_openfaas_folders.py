"""An OpenFaaS-style python function folder, built and run in a real container.

The folder is a package (``from .helpers import ...``), its requirement has only a source
distribution (docopt: built into a wheel on the host, installed offline in the image) and a
``.faasoignore`` keeps a data folder out of the image.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("require_docker")]

BUILD_TIMEOUT = 600


def faaso(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "faaso", *args, "--log-format", "json"],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        cwd=ROOT,
    )


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_openfaas_python_folder_with_an_sdist_and_an_ignore_file(tmp_path: Path) -> None:
    folder = tmp_path / "of-style"
    (folder / "data").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "handler.py": """
            from .helpers import version


            def handle(event, context):
                return {"docopt": version(), "module": __name__}
            """,
        "helpers.py": """
            import docopt


            def version():
                return docopt.__version__
            """,
        "requirements.txt": "docopt==0.6.2\n",
        ".faasoignore": "data/\n*.log\n",
        "data/big.bin": "x" * 10000,
        "debug.log": "noise\n",
        "function.yml": """
            tests:
              - request: {path: /}
                expect: {status: 200, json: {docopt: 0.6.2, module: function.handler}}
            """,
    }
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip())
    done = faaso("test", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    tag = faaso("build", str(folder)).stdout.strip()
    try:
        listing = subprocess.run(
            ["docker", "run", "--rm", "--entrypoint", "ls", tag, "-A", "/app/function"],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.split()
        assert sorted(listing) == ["__init__.py", "handler.py", "helpers.py", "requirements.txt"]
        # an ignored file's change leaves the image as it is
        (folder / "data" / "big.bin").write_text("changed")
        assert faaso("build", str(folder)).stdout.strip() == tag
    finally:
        subprocess.run(["docker", "rmi", tag], capture_output=True)
