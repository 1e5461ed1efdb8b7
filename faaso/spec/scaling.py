"""How a function scales: OpenFaaS's scaling labels, and the autoscaler's knobs, as one type.

A :class:`ScalePolicy` is part of every :class:`~faaso.spec.function.FunctionSpec`. It is read
from the function's labels (``com.openfaas.scale.*``, OpenFaaS's names and defaults) or, in the
routes file, from a ``scale:`` block; both are validated in one place,
:func:`faaso.config.scaling.parse_scaling`.

The autoscaler's shape is Knative's: a decision every ``tick`` seconds from the load averaged
over a ``stable_window`` (60 s), or over a ``panic_window`` (6 s) when that short window's load is
at least twice what the ready replicas are meant to carry; no scale-down while panicking, none
before ``scale_down_delay`` has passed at the lower count, and never more than a factor of
``max_scale_down_rate`` per tick.

``spare`` keeps one more container of the function's current image created, healthy and paused
while the function runs: a container that dies is replaced by thawing it (tens of milliseconds)
instead of starting a new one; the next spare is made once the function serves again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# OpenFaaS's label names
LABEL_PREFIX = "com.openfaas.scale."
LABEL_MIN = "com.openfaas.scale.min"
LABEL_MAX = "com.openfaas.scale.max"
LABEL_TARGET = "com.openfaas.scale.target"
LABEL_TYPE = "com.openfaas.scale.type"
LABEL_PROPORTION = "com.openfaas.scale.target-proportion"
LABEL_ZERO = "com.openfaas.scale.zero"
LABEL_ZERO_DURATION = "com.openfaas.scale.zero-duration"
LABEL_FACTOR = "com.openfaas.scale.factor"

# OpenFaaS's defaults
DEFAULT_MIN = 1
DEFAULT_MAX = 20
DEFAULT_TARGET = 50.0
DEFAULT_PROPORTION = 0.9
DEFAULT_ZERO_DURATION = 15 * 60.0
DEFAULT_FACTOR = 20.0  # percent of max added per firing alert (OpenFaaS CE)

# faaso's own knobs (Knative's defaults), overridable per function in the scale: block
DEFAULT_TICK = 2.0
DEFAULT_STABLE_WINDOW = 60.0
DEFAULT_PANIC_WINDOW = 6.0
DEFAULT_PANIC_THRESHOLD = 2.0  # panic when the short window's load is this many times the target
DEFAULT_SCALE_DOWN_DELAY = 30.0
DEFAULT_MAX_SCALE_DOWN_RATE = 2.0  # at most halve the replicas per tick
# Paused instances are removed (memory given back) after this much more idle time.
DEFAULT_REMOVE_AFTER = 5 * 60.0
# Keep one paused spare container ready while the function runs (heal by a thaw): off, because
# the frozen spare holds its memory (up to the function's memory limit) for as long as it runs.
DEFAULT_SPARE = False


class ScaleType(StrEnum):
    RPS = "rps"  # requests per second, per replica
    CAPACITY = "capacity"  # requests in flight, per replica
    CPU = "cpu"  # CPU use in percent of one core, per replica


@dataclass(frozen=True, slots=True)
class ScalePolicy:
    min: int = DEFAULT_MIN
    max: int = DEFAULT_MAX
    target: float = DEFAULT_TARGET
    type: ScaleType = ScaleType.RPS
    target_proportion: float = DEFAULT_PROPORTION
    zero: bool = False
    zero_duration: float = DEFAULT_ZERO_DURATION
    factor: float = DEFAULT_FACTOR
    tick: float = DEFAULT_TICK
    stable_window: float = DEFAULT_STABLE_WINDOW
    panic_window: float = DEFAULT_PANIC_WINDOW
    panic_threshold: float = DEFAULT_PANIC_THRESHOLD
    scale_down_delay: float = DEFAULT_SCALE_DOWN_DELAY
    max_scale_down_rate: float = DEFAULT_MAX_SCALE_DOWN_RATE
    remove_after: float = DEFAULT_REMOVE_AFTER
    spare: bool = DEFAULT_SPARE

    @property
    def autoscaling(self) -> bool:
        """``min == max`` turns the load-driven autoscaler off (scale to zero may still apply)."""
        return self.min != self.max

    @property
    def per_replica(self) -> float:
        """The load one replica is meant to carry."""
        return self.target * self.target_proportion

    def clamp(self, replicas: int) -> int:
        return max(self.min, min(self.max, replicas))
