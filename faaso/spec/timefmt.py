"""Times as the API writes them."""

from __future__ import annotations

import datetime as dt


def rfc3339(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat().replace("+00:00", "Z")
