"""One faaso per state directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from faaso.errors import StateDirError, StateLockedError
from faaso.state.lock import state_lock


def test_a_held_state_dir_is_refused_naming_the_holder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with state_lock(state) as path:
        assert path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(StateLockedError, match=rf"PID {os.getpid()}\b"), state_lock(state):
            pass  # pragma: no cover - refused
    # released: the next holder gets it
    with state_lock(state):
        pass


def test_a_state_dir_that_cannot_be_made_is_a_faaso_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with (
        pytest.raises(StateDirError, match="cannot use the state directory"),
        state_lock(blocker / "state"),
    ):
        pass  # pragma: no cover - refused
