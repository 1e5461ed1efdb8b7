"""Fuzz the management API from the OpenFaaS spec (a copy of ../shared/openfaas-spec.openapi.yml
beside this file, so it runs on a fresh clone) with schemathesis, authenticated, against a real
`faaso serve`: no answer may be a 5xx."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from faaso.api.auth import password_path
from tests.helpers import ROOT, start_serve, stop_serve, wait_ready

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("require_docker"),
    pytest.mark.timeout(900),
]

SPEC = Path(__file__).resolve().parent / "openfaas-spec.openapi.yml"


def test_management_api_has_no_5xx(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "conf" / "functions" / "sum", tmp_path / "calc")
    config = tmp_path / "routes.yml"
    config.write_text("functions:\n  calc: {source: calc}\nroutes:\n  /calc: calc\n")
    # --no-pull: fuzzed image names must never make the engine contact a registry
    served = start_serve(config, tmp_path / "state", tmp_path / "faaso.log", "--no-pull")
    try:
        wait_ready(served, 600)
        password = password_path(served.state_dir).read_text().strip()
        schemathesis = Path(sys.executable).parent / "schemathesis"
        result = subprocess.run(
            [
                str(schemathesis),
                "run",
                str(SPEC),
                "--url",
                f"http://127.0.0.1:{served.port}",
                "--include-path-regex",
                "^/system",
                "--checks",
                "not_a_server_error",
                "--auth",
                f"admin:{password}",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "10",
                "--request-timeout",
                "2",
                "--seed",
                "20261125",
                "--workers",
                "2",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        report = result.stdout + result.stderr
        summary = re.search(
            r"(\d+) generated, (\d+) passed(?:, (\d+) failed)?(?:, (\d+) errored)?", report
        )
        assert summary is not None, report[-6000:]
        generated, passed, failed = (int(summary.group(i) or 0) for i in (1, 2, 3))
        assert failed == 0, report[-6000:]  # not_a_server_error: no 5xx anywhere
        assert "Server error" not in report
        assert passed > 500, report[-3000:]
        if result.returncode != 0:
            # The only acceptable errors: `follow=true` log streams, which stream until the
            # client gives up, read as timeouts by schemathesis. They are not 5xx answers.
            sections = re.findall(
                r"_{5,} (\w+ \S+) _{5,}\n(.*?)(?=\n_{5,}|\n={5,}|\Z)", report, flags=re.S
            )
            assert sections, report[-6000:]
            for operation, text in sections:
                assert operation == "GET /system/logs" and "timed out" in text, report[-6000:]
        del generated
        # the server is still up and healthy after the fuzzing
        status, _, _ = served.request("GET", "/healthz")
        assert status == 200
    finally:
        assert stop_serve(served) == 0
