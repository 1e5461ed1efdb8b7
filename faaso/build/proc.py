"""Running a host command whose output is progress: each line goes to a callback as it comes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path


async def run_streaming(
    argv: Sequence[str],
    on_line: Callable[[str], None],
    *,
    cwd: Path | None = None,
    keep: int = 20,
) -> tuple[int, list[str]]:
    """Run ``argv`` (stdout and stderr together), calling ``on_line`` for every non-empty line.

    Returns the exit code and the last ``keep`` lines, for an error message.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    tail: list[str] = []
    try:
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                tail = [*tail[-(keep - 1) :], line]
                on_line(line)
        return await proc.wait(), tail
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise


def indent_tail(tail: list[str]) -> str:
    return "\n".join("  | " + line for line in tail)
