from __future__ import annotations

from pathlib import Path

import pytest

from faaso.build.mirror import apt_sources, debian_mirror
from faaso.errors import BootstrapError


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_deb822_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAASO_DEBIAN_MIRROR", raising=False)
    write(
        tmp_path,
        "sources.list.d/debian.sources",
        (
            "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n"
            "Suites: bookworm bookworm-updates\nComponents: main contrib\n\n"
            "Types: deb\nURIs: http://mirror.example/debian-security\n"
            "Suites: bookworm-security\nComponents: main\n"
        ),
    )
    assert debian_mirror("bookworm", tmp_path) == "http://mirror.example/debian"


def test_one_line_and_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAASO_DEBIAN_MIRROR", raising=False)
    write(
        tmp_path,
        "sources.list",
        (
            "# deb http://commented.example/debian bookworm main\n"
            "deb-src http://src.example/debian bookworm main\n"
            "deb [arch=amd64 signed-by=/x.gpg] https://secure.example/debian bookworm main\n"
            "deb http://plain.example/debian bookworm main non-free\n"
        ),
    )
    uris = [s.uri for s in apt_sources(tmp_path)]
    assert uris == ["https://secure.example/debian", "http://plain.example/debian"]
    # containers only reach plain HTTP: prefer it
    assert debian_mirror("bookworm", tmp_path) == "http://plain.example/debian"


def test_disabled_and_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAASO_DEBIAN_MIRROR", raising=False)
    write(
        tmp_path,
        "sources.list.d/x.sources",
        "Enabled: no\nTypes: deb\nURIs: http://off.example/\nSuites: bookworm\nComponents: main\n",
    )
    with pytest.raises(BootstrapError, match="FAASO_DEBIAN_MIRROR"):
        debian_mirror("bookworm", tmp_path)


def test_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAASO_DEBIAN_MIRROR", "http://override.example/debian")
    assert debian_mirror("bookworm", tmp_path) == "http://override.example/debian"
