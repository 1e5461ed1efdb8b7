"""A built wheel, installed (not editable) in a fresh virtualenv, has the built-in runtimes and
builds with them. Offline: the wheel is built without isolation with this venv's setuptools,
installed with --no-deps; the new venv sees this venv's dependencies through a .pth file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import faaso
from tests.helpers import ROOT

SOURCES = ("faaso", "runtimes", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md")


def run(*argv: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a fresh virtualenv with the wheel installed."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:  # a clean copy: the build writes build/ and *.egg-info beside it
        item = ROOT / name
        if item.is_dir():
            shutil.copytree(item, src / name, ignore=ignore)
        else:
            shutil.copy2(item, src / name)
    wheels = tmp / "wheels"
    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check")
    run(
        *pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels, ".", cwd=src
    )
    (wheel,) = wheels.glob("faaso-*.whl")
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    target = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    # The dependencies (aiohttp, aiodocker ...) come from this venv, appended after the new
    # venv's own site-packages; this venv's editable faaso is not on that path.
    (target / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run(
        *pip,
        "--python",
        venv / "bin" / "python",
        "install",
        "--no-deps",
        "--no-index",
        wheel,
        cwd=tmp,
    )
    return venv / "bin"


def test_the_wheel_has_its_version_py_typed_and_the_runtimes(installed: Path) -> None:
    code = "import faaso, pathlib; print(faaso.__version__, pathlib.Path(faaso.__file__).parent)"
    done = run(installed / "python", "-c", code, cwd=installed)
    version, package = done.stdout.split()
    assert version == faaso.__version__
    assert str(installed.parent) in package, "the installed wheel, not this checkout"
    assert (Path(package) / "py.typed").is_file()
    listed = run(installed / "faaso", "runtimes", cwd=installed).stdout
    names = {line.split()[0]: line for line in listed.splitlines() if line.strip()}
    assert {"python", "node", "dockerfile"} <= set(names)
    code = "from faaso.config.runtimes import builtin_runtimes_dir; print(builtin_runtimes_dir())"
    shipped = run(installed / "python", "-c", code, cwd=installed).stdout.strip()
    assert shipped == str(Path(package) / "_runtimes")
    # the build id baked in at build time: /system/info's version.sha, never empty
    baked = (Path(package) / "_build_id.txt").read_text().strip()
    assert baked
    code = "from faaso.buildinfo import build_sha; print(build_sha())"
    assert run(installed / "python", "-c", code, cwd=installed).stdout.strip() == baked


@pytest.mark.docker
@pytest.mark.usefixtures("require_docker")
def test_the_installed_faaso_builds_with_its_runtimes(installed: Path, tmp_path: Path) -> None:
    folder = tmp_path / "wheel-check"
    faaso_bin = installed / "faaso"
    run(faaso_bin, "new", "wheel-check", "--runtime", "python", "--dir", tmp_path, cwd=tmp_path)
    handler = folder / "handler.py"
    handler.write_text(handler.read_text() + f"\n# {tmp_path.name}: a content hash of its own\n")
    built = run(installed / "faaso", "build", folder, cwd=tmp_path, timeout=600)
    tag = built.stdout.strip().splitlines()[-1]
    assert tag.startswith("faaso/wheel-check:")
    subprocess.run(["docker", "rmi", tag], capture_output=True, check=False)
