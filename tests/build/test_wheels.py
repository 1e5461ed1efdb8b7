"""Wheels fetched on the host for the python runtime, with the real pip and the package index.

A requirement with only a source distribution is built into a wheel here; a misspelled name or
a version that does not exist says so. Each test has a cache folder of its own, so nothing is
answered from an earlier run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from faaso.build.wheels import fetch_wheels
from faaso.errors import WheelError
from faaso.logs import get_logger

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAASO_CACHE_DIR", str(tmp_path / "cache"))


async def test_a_source_only_requirement_is_built_into_a_wheel(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    # docopt has only a source distribution; six beside it has a wheel.
    count = await fetch_wheels(b"docopt==0.6.2\nsix\n", dest, get_logger("test"))
    names = sorted(p.name for p in dest.glob("*.whl"))
    assert count == 2
    assert names[0] == "docopt-0.6.2-py2.py3-none-any.whl"
    assert names[1].startswith("six-")


async def test_a_misspelled_package_is_named(tmp_path: Path) -> None:
    with pytest.raises(WheelError) as info:
        await fetch_wheels(b"six\ndocopt-nosuch-pkg-faaso\n", tmp_path / "out", get_logger("test"))
    message = str(info.value)
    assert "there is no package named 'docopt-nosuch-pkg-faaso'" in message
    assert "could not fetch binary wheels" not in message


async def test_a_version_that_does_not_exist_lists_the_ones_that_do(tmp_path: Path) -> None:
    with pytest.raises(WheelError) as info:
        await fetch_wheels(b"docopt==99.0\n", tmp_path / "out", get_logger("test"))
    message = str(info.value)
    assert "no version of docopt matches 'docopt==99.0'" in message
    assert "0.6.2" in message
