"""Build progress against the real engine: a step's output at info level, and a line every few
seconds while a step prints nothing, so that a long build shows it is alive."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import aiodocker
import pytest
import structlog

from faaso.build.builder import Builder
from faaso.config.runtimes import RuntimeCatalog
from faaso.logs import get_logger
from faaso.spec.function import FunctionSpec

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("require_docker"),
    pytest.mark.timeout(300),
]

QUIET_DOCKERFILE = """\
FROM {{ base_image }}
COPY function/ /src/
RUN cat /src/token.txt && echo printed-by-the-step
RUN sleep 2
"""
# The step's sleep is the work of a quiet build step (2 s of no output), not a wait: the builder
# must show it is alive meanwhile.


async def test_a_quiet_step_says_it_is_alive_and_output_is_info(tmp_path: Path) -> None:
    runtime = tmp_path / "runtimes" / "quiet"
    runtime.mkdir(parents=True)
    (runtime / "runtime.yml").write_text("description: quiet\nrequired_files: [token.txt]\n")
    (runtime / "Dockerfile.j2").write_text(QUIET_DOCKERFILE)
    folder = tmp_path / "fn"
    folder.mkdir()
    (folder / "token.txt").write_text(secrets.token_hex(8) + "\n")  # never built before
    name = f"quiet-{secrets.token_hex(3)}"
    async with aiodocker.Docker() as docker:
        # Made inside capture_logs: a logger bound before it would keep the processors of an
        # earlier configure() (cache_logger_on_first_use) and escape the capture.
        with structlog.testing.capture_logs() as events:
            builder = Builder(docker, RuntimeCatalog((runtime.parent,)), get_logger("test"))
            builder.progress_interval = 0.5
            tag = await builder.ensure(FunctionSpec(name=name, source=folder, runtime="quiet"))
    subprocess.run(["docker", "rmi", tag], capture_output=True)
    output = [e for e in events if e["event"] == "build.output"]
    assert any(e["line"] == "printed-by-the-step" and e["log_level"] == "info" for e in output), [
        (e["line"], e["log_level"]) for e in output
    ]
    beats = [e for e in events if e["event"] == "build.progress"]
    assert beats, [e["event"] for e in events]
    assert all(e["log_level"] == "info" for e in beats)
    assert any("RUN sleep 2" in (e["step"] or "") for e in beats)
