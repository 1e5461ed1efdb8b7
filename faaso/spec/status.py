"""What a function is doing: its phase, as the supervisor reports it."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    PENDING = "pending"
    BUILDING = "building"
    STARTING = "starting"
    READY = "ready"
    DEGRADED = "degraded"  # fewer ready instances than replicas, working on it
    CRASH_LOOP = "crash-looping"
    FAILED = "failed"  # cannot run at all (build failed, image missing)
    STOPPED = "stopped"
    PAUSED = "paused"  # scaled to zero, first step: instances frozen, woken in milliseconds
    SCALED_TO_ZERO = "scaled-to-zero"  # no instance at all; a request starts one


# Phases in which a function is where it should be (not reported as not ready).
SETTLED = frozenset({Phase.READY, Phase.PAUSED, Phase.SCALED_TO_ZERO})
