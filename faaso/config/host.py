"""What this host can give one container: its CPUs and its memory.

Read from the operating system (the engine runs on this host, so it sees the same numbers); used
to refuse limits no container could get before anything is started.
"""

from __future__ import annotations

import os


def host_cpus() -> int:
    """The CPUs the engine can hand out (Docker's ``--cpus`` may not exceed this)."""
    return os.cpu_count() or 1


def host_memory() -> int | None:
    """Physical memory in bytes, or None when the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
