"""Where faaso keeps things on the host."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir() -> Path:
    """Shared, re-creatable data (downloaded wheels, the bootstrap lock): not per-config state."""
    base = os.environ.get("FAASO_CACHE_DIR")
    if base:
        path = Path(base)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        path = (Path(xdg) if xdg else Path.home() / ".cache") / "faaso"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_state_dir(config_path: Path) -> Path:
    """``.faaso/`` beside the config file."""
    return config_path.resolve().parent / ".faaso"


def owner_id(state_dir: Path) -> str:
    """Labels containers with the faaso that owns them: one per state directory."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]


def cluster_owner_id(cluster: str) -> str:
    """The owner id of a cluster of faaso processes (``swarm: {cluster: NAME}``): the same for
    every member whatever its state directory, so they own the same Swarm services."""
    return hashlib.sha256(f"cluster:{cluster}".encode()).hexdigest()[:12]
