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
