"""--log-format json is all JSON: standard-library records (aiohttp, asyncio) too."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import asyncio, logging
from faaso import logs
from faaso.logs import get_logger
logs.configure("info", json=True)
get_logger("faaso.test").info("own.line", n=1)
logging.getLogger("aiohttp.server").error("Error handling request")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("asyncio").exception("Task exception was never retrieved")
logging.getLogger("aiohttp.access").debug("below the level: not shown")
"""


def test_standard_library_logging_is_rendered_as_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    lines = proc.stderr.splitlines()
    docs = [json.loads(line) for line in lines]  # every line is JSON
    assert [(d["logger"], d["event"], d["level"]) for d in docs] == [
        ("faaso.test", "own.line", "info"),
        ("aiohttp.server", "Error handling request", "error"),
        ("asyncio", "Task exception was never retrieved", "error"),
    ]
    assert "ZeroDivisionError" in docs[2]["exception"]
    assert all(d["timestamp"].endswith("Z") for d in docs)
