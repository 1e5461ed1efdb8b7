"""What the control plane calls, after it changed what runs, for work that is not its own.

The supervisor only says *when* (``after_rollout`` with the functions a reload added or rolled
over, once their new instances are healthy and the old ones are gone); *what* happens is wired
in by the composition root (``faaso.server.app``: pruning old images). A hook runs in the
background: a failure is logged and changes nothing about the rollout, which has succeeded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from structlog.typing import FilteringBoundLogger

RolloutHook = Callable[[Sequence[str]], Awaitable[None]]


async def run_rollout_hook(
    hook: RolloutHook, functions: Sequence[str], log: FilteringBoundLogger
) -> None:
    """Call ``hook`` for ``functions``; log, never raise, what goes wrong."""
    try:
        await hook(functions)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a hook's failure must not touch the supervisor
        log.warning(
            "rollout.hook_failed",
            functions=list(functions),
            error=str(exc) or type(exc).__name__,
        )
