"""Jinja filters of the UI: numbers as people read them, and small SVG line charts."""

from __future__ import annotations

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


FILTERS: dict[str, Callable[..., Any]] = {
    "seconds": seconds,
    "percent": percent,
    "rate": rate,
    "sparkline": sparkline,
}
