"""What a function is doing, as the supervisor reports it: its phase and a FunctionStatus."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
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


@dataclass(frozen=True, slots=True)
class FunctionStatus:
    """One function's state: read by /healthz, the metrics and the ``faaso status`` command.

    ``available`` counts the instances in the proxy's pool; ``image`` is None while the image is
    being built (or could not be); ``last_logs`` are the last lines of the last instance that
    died.
    """

    function: str
    phase: Phase
    replicas: int
    available: int = 0
    image: str | None = None
    error: str | None = None
    rollout_error: str | None = None  # why the last rollout failed (it was rolled back)
    restarts: int = 0
    last_exit_code: int | None = None
    last_logs: tuple[str, ...] = ()
    # Scaling: instances frozen (paused), the autoscaler's last decision and its view.
    paused: int = 0
    scaled_because: str | None = None
    scaled_at: float | None = None
    autoscaler: Mapping[str, object] | None = None

    @property
    def ready(self) -> bool:
        """Where it should be: ready, or at zero on purpose (paused, scaled to zero)."""
        return self.phase in SETTLED

    def to_json(self) -> dict[str, object]:
        """The shape /healthz shows under ``not_ready``."""
        return {
            "function": self.function,
            "phase": str(self.phase),
            "replicas": self.replicas,
            "available": self.available,
            "image": self.image,
            "error": self.error,
            "rollout_error": self.rollout_error,
            "restarts": self.restarts,
            "last_exit_code": self.last_exit_code,
            "last_logs": list(self.last_logs),
            "paused": self.paused,
            "scaled_because": self.scaled_because,
            "scaled_at": self.scaled_at,
            "autoscaler": dict(self.autoscaler) if self.autoscaler is not None else None,
        }
