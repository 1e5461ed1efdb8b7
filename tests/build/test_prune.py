"""``faaso prune`` and the prune after a rollout, against the real engine.

Images are made by faaso's own Builder from a toy runtime whose build stage only runs ``echo``
in the base image (no apt), so that each test makes several versions in seconds. Images that
are not faaso's (another tag, no label, a dangling image without faaso's stage label) are made
beside them and must survive. Everything a test made is removed at the end.
"""

from __future__ import annotations

import io
import json
import secrets
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiodocker
import pytest

from faaso.build.builder import Builder
from faaso.build.prune import prune
from faaso.config.runtimes import RuntimeCatalog
from faaso.logs import get_logger
from faaso.spec.function import FunctionSpec
from tests.helpers import ROOT, start_serve, stop_serve, wait_ready

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("require_docker")]

TOY_DOCKERFILE = """\
FROM {{ base_image }} AS build
COPY function/ /src/
RUN cat /src/version.txt > /built
LABEL faaso.build-stage={{ function | dockerfile_string }}
FROM {{ base_image }}
COPY --from=build /built /built
"""


def toy_catalog(tmp_path: Path) -> RuntimeCatalog:
    runtime = tmp_path / "runtimes" / "toy"
    runtime.mkdir(parents=True)
    (runtime / "runtime.yml").write_text("description: toy\nrequired_files: [version.txt]\n")
    (runtime / "Dockerfile.j2").write_text(TOY_DOCKERFILE)
    return RuntimeCatalog((runtime.parent,))


def docker(*argv: str) -> str:
    return subprocess.run(
        ["docker", *argv], capture_output=True, text=True, check=True, timeout=120
    ).stdout


def image_ids(*filters: str) -> set[str]:
    argv = ["images", "-q", "--no-trunc"]
    for f in filters:
        argv += ["--filter", f]
    return set(docker(*argv).split())


def exists(ref: str) -> bool:
    done = subprocess.run(["docker", "image", "inspect", ref], capture_output=True, timeout=60)
    return done.returncode == 0


@pytest.fixture
async def engine() -> AsyncIterator[aiodocker.Docker]:
    client = aiodocker.Docker()
    yield client
    await client.close()


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    """Image refs and container ids a test made: removed afterwards, whatever happened."""
    made: list[str] = []
    yield made
    for ref in reversed(made):
        subprocess.run(["docker", "rm", "-f", ref], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)


async def build_versions(
    engine: aiodocker.Docker, catalog: RuntimeCatalog, folder: Path, name: str, count: int
) -> list[str]:
    """Build ``count`` versions of a toy function, oldest first; return their tags."""
    builder = Builder(engine, catalog, get_logger("test"))
    folder.mkdir()
    tags = []
    for n in range(count):
        (folder / "version.txt").write_text(f"{name} {n}\n")
        tags.append(await builder.ensure(FunctionSpec(name=name, source=folder, runtime="toy")))
    return tags


async def test_prune_keeps_the_newest_and_those_in_use_and_only_faasos(
    engine: aiodocker.Docker, tmp_path: Path, cleanup: list[str]
) -> None:
    name = f"prune-{secrets.token_hex(3)}"
    other = f"{name}-other"
    catalog = toy_catalog(tmp_path)
    stages_before = image_ids("dangling=true")
    tags = await build_versions(engine, catalog, tmp_path / name, name, 4)
    cleanup.extend(tags)
    other_tags = await build_versions(engine, catalog, tmp_path / other, other, 2)
    cleanup.extend(other_tags)
    stages = image_ids("dangling=true", f"label=faaso.build-stage={name}")
    cleanup.extend(stages)
    assert len(stages) == 4 and len(set(tags)) == 4
    # Not faaso's: a tag of someone else's on the second oldest, an unlabelled faaso/ tag and
    # a dangling image without faaso's label.
    cleanup.append(f"someone/else:{name}")
    docker("tag", tags[1], f"someone/else:{name}")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "Dockerfile").write_text(
        f"FROM faaso/debian:bookworm AS a\nRUN echo {name} > /a\n"
        "FROM faaso/debian:bookworm\nCOPY --from=a /a /a\n"
    )
    cleanup.append(f"faaso/{name}:mine")
    await _classic_build(engine, foreign, f"faaso/{name}:mine")
    foreign_dangling = image_ids("dangling=true") - stages_before - stages
    cleanup.extend(foreign_dangling)
    assert foreign_dangling, "the foreign multi-stage build left no dangling stage"
    # The oldest is in use by a container (created, never started).
    container = docker("create", "--label", "faaso.test=prune", tags[0], "true").strip()
    cleanup.insert(0, container)

    dry = await prune(engine, get_logger("test"), keep=2, functions=[name], dry_run=True)
    assert dry.tags == [tags[1]] and all(exists(t) for t in tags)

    result = await prune(engine, get_logger("test"), keep=2, functions=[name])
    assert result.errors == []
    assert result.tags == [tags[1]]  # beyond the 2 newest and not in use
    assert sorted(result.kept) == sorted([tags[3], tags[2], tags[0]])
    assert [exists(t) for t in tags] == [True, False, True, True]
    assert exists(f"someone/else:{name}")  # the image stays under the other tag
    assert exists(f"faaso/{name}:mine")
    # the two oldest build stages are gone, the two newest stay
    assert len(image_ids("dangling=true", f"label=faaso.build-stage={name}")) == 2
    assert set(result.images) <= stages and len(result.images) == 2
    assert foreign_dangling <= image_ids("dangling=true")
    # another function was not asked for: untouched
    assert all(exists(t) for t in other_tags)
    assert len(image_ids("dangling=true", f"label=faaso.build-stage={other}")) == 2

    # The command: all functions, JSON out.
    done = subprocess.run(
        [sys.executable, "-m", "faaso", "prune", name, other, "--keep", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert sorted(report["tags"]) == sorted([tags[2], other_tags[0]])
    assert [exists(t) for t in tags] == [True, False, False, True]  # tags[0] still in use
    assert len(image_ids("dangling=true", f"label=faaso.build-stage={name}")) == 1
    bad = subprocess.run(
        [sys.executable, "-m", "faaso", "prune", "--keep", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "must be a whole number >= 1" in bad.stderr


async def _classic_build(engine: aiodocker.Docker, folder: Path, tag: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(folder / "Dockerfile", arcname="Dockerfile")
    buf.seek(0)
    async for item in engine.images.build(fileobj=buf, encoding="identity", tag=tag, stream=True):
        assert "error" not in item, item


@pytest.mark.timeout(900)
def test_serve_prunes_after_a_successful_rollout(tmp_path: Path) -> None:
    name = f"prune-serve-{secrets.token_hex(3)}"
    shutil.copytree(ROOT / "conf" / "functions" / "sum", tmp_path / name)
    config = tmp_path / "routes.yml"
    config.write_text(
        f"functions:\n  {name}:\n    source: {name}\n    runtime: python\nroutes:\n  /s: {name}\n"
    )
    handler = tmp_path / name / "handler.py"
    served = start_serve(config, tmp_path / "state", tmp_path / "serve.log", "--keep-images", "1")
    made: set[str] = set()
    try:
        wait_ready(served, 900)
        for n in range(2):
            handler.write_text(handler.read_text() + f"\n# edit {n}\n")
            end = time.monotonic() + 300
            while served.log_text().count('"prune.done"') < n + 1:
                assert time.monotonic() < end, served.log_text()[-4000:]
                assert served.proc.poll() is None, served.log_text()[-4000:]
                time.sleep(0.2)  # poll with a deadline
            made |= set(
                docker("images", "--format", "{{.Repository}}:{{.Tag}}", f"faaso/{name}").split()
            )
        # keep 1: only the image now serving is left
        left = docker("images", "--format", "{{.Repository}}:{{.Tag}}", f"faaso/{name}").split()
        assert len(left) == 1, left
        assert served.request("GET", "/s?a=2&b=3")[2] == b"5"
        done = [
            json.loads(line) for line in served.log_text().splitlines() if '"prune.done"' in line
        ]
        assert done[-1]["tags"] and done[-1]["functions"] == [name]
    finally:
        stop_serve(served)
        for ref in made:
            subprocess.run(["docker", "rmi", ref], capture_output=True)
        for image in image_ids("dangling=true", f"label=faaso.build-stage={name}"):
            subprocess.run(["docker", "rmi", image], capture_output=True)
