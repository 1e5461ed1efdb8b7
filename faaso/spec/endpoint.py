"""Where a function instance answers: what the data plane needs to reach it, and nothing else."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a function instance answers HTTP.

    ``host``:``port`` is a TCP port on 127.0.0.1 (the container's 8080, published), always
    there. ``unix``, when set, is the host path of a Unix socket on which the instance answers
    the same HTTP as on its TCP port (no port publishing, no NAT in between). The backend sets
    it when the instance was given a socket directory; the controller keeps it in the pool's
    copy only if the socket file existed when the instance was first found healthy, so a
    runtime that ignores ``FAASO_SOCKET`` is reached over TCP alone.
    """

    host: str
    port: int
    unix: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"
