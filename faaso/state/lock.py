"""One faaso per state directory: an exclusive lock on ``<state>/lock``, holding the PID.

The lock is ``flock(2)`` on an open file, so the kernel releases it when the holder exits,
however it exits: a stale lock file (a crashed faaso) never blocks a new start. The PID in the
file is only there to name the holder in the refusal. The file itself stays (removing it would
let a third process lock a fresh file while a second still waits on the old one).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from faaso.errors import StateDirError, StateLockedError
from faaso.state.files import private_dir

LOCK_FILE = "lock"


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[Path]:
    """Hold the state directory's lock for the duration of the block.

    Raises :class:`StateLockedError` naming the PID of the faaso that holds it, and
    :class:`StateDirError` when the directory cannot be created or written.
    """
    path = state_dir / LOCK_FILE
    try:
        private_dir(state_dir)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateDirError(
            f"cannot use the state directory {state_dir}: {exc.strerror or exc}"
        ) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise StateLockedError(
                f"the state directory {state_dir} is in use by another faaso (PID {holder}, "
                f"{path}); stop it first or give this one its own --state-dir"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            os.fsync(fd)
        except OSError as exc:
            raise StateDirError(
                f"cannot write to the state directory {state_dir}: {exc.strerror or exc}"
            ) from exc
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock
