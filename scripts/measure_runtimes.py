#!/usr/bin/env python3
"""Measure each shipped runtime on this machine, with the real engine: build times, image size,
cold start.

For each runtime's example function (python: conf/functions/sum, node: conf/functions/greet,
dockerfile: conf/functions/shout, and a function with its own Dockerfile made here), on a copy
in a temporary folder named ``measure-<runtime>``:

- first build: ``--no-cache``, every layer rebuilt from the base image (apt downloads from the
  Debian mirror included; wheels and npm packages come from the host's caches once fetched);
- rebuild: after a one-line change to the handler (a function file for the command example):
  what a developer waits for in the edit loop;
- no-op build: ``faaso build`` run again on the unchanged folder, the whole command (process
  start included);
- image size: as ``docker images`` reports it;
- cold start: from creating a container to the first 200 on /_/health, the median of ``--runs``.

Loopback only. Prints a table; removes the containers and the images it made.

Usage: .venv/bin/python scripts/measure_runtimes.py [--runs 5] [--only python,node]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from faaso.build import engine as docker_client  # noqa: E402
from faaso.build.builder import Builder  # noqa: E402
from faaso.config.runtimes import RuntimeCatalog  # noqa: E402
from faaso.dev.loop import LocalContainer, load_function_dir  # noqa: E402
from faaso.logs import configure, get_logger  # noqa: E402

OWN_DOCKERFILE = """\
FROM faaso/debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends busybox \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
COPY www /www
EXPOSE 8080
CMD ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
"""


@dataclass
class Example:
    runtime: str  # as shown
    make: str  # how to make the folder: an example to copy, or "own-dockerfile"
    changed: str  # the file that gets a one-line change
    comment: str  # the line added


EXAMPLES = [
    Example("python", "sum", "handler.py", "# a one-line change\n"),
    Example("node", "greet", "handler.js", "// a one-line change\n"),
    Example("dockerfile", "shout", "README.md", "A one-line change.\n"),
    Example("dockerfile (own)", "own-dockerfile", "www/index.html", "<p>a change</p>\n"),
]


@dataclass
class Figures:
    runtime: str
    example: str
    first_build: float
    rebuild: float
    noop_build: float
    size_mb: float
    cold_start: float


def make_folder(example: Example, tmp: Path) -> Path:
    name = "measure-" + example.runtime.split()[0] + ("-own" if "own" in example.runtime else "")
    folder = tmp / name
    if example.make == "own-dockerfile":
        (folder / "www" / "_").mkdir(parents=True)
        (folder / "Dockerfile").write_text(OWN_DOCKERFILE)
        (folder / "function.yml").write_text("runtime: dockerfile\n")
        (folder / "www" / "index.html").write_text("<p>hello</p>\n")
        (folder / "www" / "_" / "health").write_text("ok\n")
    else:
        shutil.copytree(ROOT / "conf" / "functions" / example.make, folder)
    return folder


def cli_build_seconds(folder: Path) -> float:
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "faaso", "build", str(folder), "--log-level", "error"],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return time.monotonic() - started


async def cold_start(docker: object, image: str, function: str, runs: int) -> float:
    seconds: list[float] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(runs):
            started = time.monotonic()
            container = await LocalContainer.start(docker, image, function)  # type: ignore[arg-type]
            try:
                await container.wait_healthy(session)
                seconds.append(time.monotonic() - started)
            finally:
                await container.remove()
    return statistics.median(seconds)


async def measure(example: Example, tmp: Path, runs: int) -> Figures:
    folder = make_folder(example, tmp)
    catalog = RuntimeCatalog()
    fdir = load_function_dir(folder, catalog)
    docker = await docker_client.connect()
    made: list[str] = []
    try:
        builder = Builder(docker, catalog, get_logger("measure"))
        started = time.monotonic()
        tag = await builder.ensure(fdir.spec, nocache=True)
        first = time.monotonic() - started
        made.append(tag)

        changed = folder / example.changed
        changed.write_text(changed.read_text() + example.comment)
        started = time.monotonic()
        tag = await builder.ensure(fdir.spec)
        rebuild = time.monotonic() - started
        made.append(tag)

        noop = statistics.median(cli_build_seconds(folder) for _ in range(3))
        info = await docker.images.inspect(tag)
        size = info["Size"] / 1e6
        cold = await cold_start(docker, tag, fdir.name, runs)
    finally:
        for ref in made:
            try:
                await docker.images.delete(ref)
            except Exception as exc:  # an image still in use elsewhere stays
                print(f"(left {ref}: {exc})", file=sys.stderr)
        await docker.close()
    return Figures(example.runtime, example.make, first, rebuild, noop, size, cold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="cold starts per runtime (5)")
    parser.add_argument("--only", default="", help="comma-separated runtimes, e.g. python,node")
    args = parser.parse_args()
    configure("warning", json=False)
    wanted = {x.strip() for x in args.only.split(",") if x.strip()}
    rows: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="faaso-measure-") as tmp:
        for example in EXAMPLES:
            if wanted and example.runtime.split()[0] not in wanted:
                continue
            print(f"measuring {example.runtime} ({example.make})...", file=sys.stderr, flush=True)
            rows.append(asyncio.run(measure(example, Path(tmp), args.runs)))
    header = (
        f"{'runtime':<17} {'example':<15} {'image MB':>9} {'cold start s':>13} "
        f"{'first build s':>14} {'rebuild s':>10} {'no-op build s':>14}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.runtime:<17} {r.example:<15} {r.size_mb:>9.1f} {r.cold_start:>13.3f} "
            f"{r.first_build:>14.1f} {r.rebuild:>10.2f} {r.noop_build:>14.2f}"
        )
    print(
        textwrap.dedent(
            f"""
            first build: --no-cache, all layers from the base image (apt from the mirror);
            rebuild: after a one-line change to {", ".join(e.changed for e in EXAMPLES)};
            no-op build: the whole `faaso build` command, median of 3;
            cold start: container create to the first 200 on /_/health, median of {args.runs};
            {os.cpu_count()} CPUs."""
        ).strip()
    )


if __name__ == "__main__":
    main()
