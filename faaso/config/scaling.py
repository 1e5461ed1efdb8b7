"""The scaling contract, validated in one place for the routes file and the API alike.

A function's :class:`~faaso.spec.scaling.ScalePolicy` comes from OpenFaaS's labels
(``com.openfaas.scale.min`` ...) and, in the routes file, from a ``scale:`` block
(``min``, ``max``, ``target``, ``type``, ``zero``, ``zero_duration`` ... and faaso's own
autoscaler knobs). The same setting given both ways is an error. Every error is a
:class:`ScaleError` naming the key (as the user wrote it) and the value; the routes file turns it
into a ``ConfigError``, the API into a 400.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from faaso.spec.function import MAX_REPLICAS
from faaso.spec.scaling import (
    LABEL_FACTOR,
    LABEL_MAX,
    LABEL_MIN,
    LABEL_PREFIX,
    LABEL_PROPORTION,
    LABEL_TARGET,
    LABEL_TYPE,
    LABEL_ZERO,
    LABEL_ZERO_DURATION,
    ScalePolicy,
    ScaleType,
)

# block key -> OpenFaaS label (None: faaso's own knob, block only)
BLOCK_KEYS: dict[str, str | None] = {
    "min": LABEL_MIN,
    "max": LABEL_MAX,
    "target": LABEL_TARGET,
    "type": LABEL_TYPE,
    "target_proportion": LABEL_PROPORTION,
    "zero": LABEL_ZERO,
    "zero_duration": LABEL_ZERO_DURATION,
    "factor": LABEL_FACTOR,
    "tick": None,
    "stable_window": None,
    "panic_window": None,
    "panic_threshold": None,
    "scale_down_delay": None,
    "max_scale_down_rate": None,
    "remove_after": None,
    "spare": None,
}
LABEL_KEYS = {label: key for key, label in BLOCK_KEYS.items() if label is not None}
DURATION_KEYS = frozenset(
    {"zero_duration", "tick", "stable_window", "panic_window", "scale_down_delay", "remove_after"}
)
# Go's time.ParseDuration, which OpenFaaS uses for zero-duration: "15m", "1h30m", "90s", "500ms"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class ScaleError(Exception):
    key: str
    value: object
    problem: str

    def __str__(self) -> str:
        return f"{self.key} = {self.value!r}: {self.problem}"


@dataclass(frozen=True, slots=True)
class Scaling:
    policy: ScalePolicy
    given: frozenset[str]  # the block keys that were set (by label or block)


def parse_duration(value: object) -> float:
    """Seconds from a number or a Go-style duration (``15m``, ``1h30m``). Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError("not a duration; write seconds or e.g. 90s, 15m, 1h") from None
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        raise ValueError("not a duration")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("must be more than 0 seconds")
    return seconds


def _number(value: object, *, whole: bool) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    if isinstance(value, str):
        try:
            value = int(value.strip()) if whole else float(value.strip())
        except ValueError:
            raise ValueError("must be a whole number" if whole else "must be a number") from None
    if not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise ValueError("must be a number")
    if whole and float(value) != int(value):
        raise ValueError("must be a whole number")
    return float(value)


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise ValueError("must be true or false")


def _convert(key: str, value: object) -> Any:
    if key in ("min", "max"):
        number = _number(value, whole=True)
        if not 1 <= number <= MAX_REPLICAS:
            raise ValueError(f"must be a whole number from 1 to {MAX_REPLICAS}")
        return int(number)
    if key == "type":
        try:
            return ScaleType(str(value).strip().lower())
        except ValueError:
            raise ValueError(f"must be one of {', '.join(t.value for t in ScaleType)}") from None
    if key in ("zero", "spare"):
        return _bool(value)
    if key in DURATION_KEYS:
        return parse_duration(value)
    number = _number(value, whole=False)
    if key == "target_proportion" and not 0 < number <= 1:
        raise ValueError("must be more than 0 and at most 1")
    if key == "factor" and not 0 < number <= 100:
        raise ValueError("must be a percentage: more than 0, at most 100")
    if key == "max_scale_down_rate" and number < 1:
        raise ValueError("must be at least 1")
    if key == "panic_threshold" and number <= 1:
        raise ValueError("must be more than 1")
    if number <= 0:
        raise ValueError("must be more than 0")
    return number


def parse_scaling(
    labels: Mapping[str, str],
    block: Mapping[str, object] | None = None,
    *,
    labels_key: str = "labels",
    block_key: str = "scale",
) -> Scaling:
    """The policy from the labels and the optional block. Raises :class:`ScaleError`."""
    values: dict[str, Any] = {}
    for label, raw in labels.items():
        if not label.startswith(LABEL_PREFIX):
            continue
        where = f"{labels_key}.{label}"
        key = LABEL_KEYS.get(label)
        if key is None:
            raise ScaleError(
                where, raw, f"unknown scaling label; expected one of {sorted(LABEL_KEYS)}"
            )
        try:
            values[key] = _convert(key, raw)
        except ValueError as exc:
            raise ScaleError(where, raw, str(exc)) from None
    for key, value in (block or {}).items():
        where = f"{block_key}.{key}"
        if key not in BLOCK_KEYS:
            raise ScaleError(where, key, f"unknown key; expected one of {sorted(BLOCK_KEYS)}")
        if key in values:
            raise ScaleError(
                where, value, f"is also given as the label {BLOCK_KEYS[key]}; keep one"
            )
        try:
            values[key] = _convert(key, value)
        except ValueError as exc:
            raise ScaleError(where, value, str(exc)) from None
    policy = ScalePolicy(**values)
    if policy.max < policy.min:
        where = f"{block_key}.max" if "max" in (block or {}) else f"{labels_key}.{LABEL_MAX}"
        if "max" not in values:
            where = f"{block_key}.min" if "min" in (block or {}) else f"{labels_key}.{LABEL_MIN}"
            raise ScaleError(where, policy.min, f"is more than the maximum ({policy.max})")
        raise ScaleError(where, policy.max, f"is less than the minimum ({policy.min})")
    if policy.panic_window > policy.stable_window:
        raise ScaleError(
            f"{block_key}.panic_window",
            policy.panic_window,
            f"must not be longer than the stable window ({policy.stable_window:g} s)",
        )
    return Scaling(policy, frozenset(values))
