"""Jinja filters of the UI: numbers as people read them, and small SVG line charts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from markupsafe import Markup, escape

NONE = "\u2013"  # an en dash: no value yet


def seconds(value: float | None) -> str:
    if value is None:
        return NONE
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def percent(value: float | None) -> str:
    if value is None:
        return NONE
    return f"{value * 100:.1f} %"


def rate(value: float | None) -> str:
    return NONE if value is None else f"{value:.2f}/s"


def sparkline(values: Sequence[float], label: str, width: int = 120, height: int = 28) -> Markup:
    """An inline SVG line chart of ``values`` (oldest first), scaled to its own maximum."""
    title = escape(label)
    if len(values) < 2:
        return Markup(
            f'<svg class="spark" role="img" aria-label="{title}: no data yet" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}"></svg>'
        )
    top = max(values) or 1.0
    step = width / (len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}" for i, v in enumerate(values)
    )
    return Markup(
        f'<svg class="spark" role="img" aria-label="{title}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" preserveAspectRatio="none">'
        f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{points}"/>'
        f"</svg>"
    )


def lines(
    series: Sequence[tuple[str, Sequence[float]]],
    label: str,
    marks: Sequence[float] = (),
    width: int = 460,
    height: int = 90,
) -> Markup:
    """An inline SVG chart of several series on one scale (``series``: (name, values oldest
    first), drawn as ``line-0``, ``line-1`` ...), with a dashed vertical line at each of
    ``marks`` (fractions 0..1 of the time axis: the autoscaler's decisions)."""
    title = escape(label)
    longest = max((len(v) for _, v in series), default=0)
    head = (
        f'<svg class="lines" role="img" aria-label="{title}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" preserveAspectRatio="none">'
    )
    if longest < 2:
        return Markup(head + "</svg>")
    top = 1.1 * (max((max(v) for _, v in series if v), default=0.0) or 1.0)  # headroom
    step = width / (longest - 1)
    parts = [head]
    for fraction in marks:
        x = max(0.0, min(1.0, fraction)) * width
        parts.append(
            f'<line class="mark" x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" '
            'stroke-dasharray="3 3"/>'
        )
    for i, (_, values) in enumerate(series):
        offset = longest - len(values)  # a shorter series ends at the right edge too
        points = " ".join(
            f"{(offset + j) * step:.1f},{height - 3 - (v / top) * (height - 6):.1f}"
            for j, v in enumerate(values)
        )
        parts.append(f'<polyline class="line-{i}" fill="none" stroke-width="2" points="{points}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def when(value: float | None) -> str:
    """A Unix time as UTC wall-clock time, to the second."""
    if value is None:
        return NONE
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(value: float | None) -> str:
    """A Unix time as UTC time of day (for lists where the day is today)."""
    if value is None:
        return NONE
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%H:%M:%S")


PHASE_LABELS = {"scaled-to-zero": "scaled to zero"}
PHASE_HINTS = {
    "paused": "scaled to zero: its instances are paused and wake in milliseconds on a request",
    "scaled-to-zero": "no instance at all: the next request starts one",
    "crash-looping": "its instances keep exiting; see the last error",
}


def phase_label(value: str) -> str:
    return PHASE_LABELS.get(value, value)


def phase_hint(value: str) -> str:
    return PHASE_HINTS.get(value, "")


FILTERS: dict[str, Callable[..., Any]] = {
    "lines": lines,
    "when": when,
    "clock": clock,
    "phase_label": phase_label,
    "phase_hint": phase_hint,
    "seconds": seconds,
    "percent": percent,
    "rate": rate,
    "sparkline": sparkline,
}
