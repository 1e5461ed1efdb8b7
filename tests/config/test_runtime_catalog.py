"""runtime.yml is read like faaso's other files: strictly."""

from __future__ import annotations

from pathlib import Path

import pytest

from faaso.config.runtimes import RuntimeCatalog
from faaso.errors import ConfigError


def test_a_duplicate_key_in_runtime_yml_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "rt" / "twice"
    folder.mkdir(parents=True)
    (folder / "runtime.yml").write_text("description: first\ndescription: second\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'description' \(line 2\)") as info:
        RuntimeCatalog((tmp_path / "rt",)).find("twice")
    assert info.value.path == str(folder / "runtime.yml")
