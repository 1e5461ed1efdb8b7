"""Find the Debian mirror this host's apt is configured with.

faaso never names a mirror of its own: the base image is bootstrapped from whatever the host
uses, read from ``/etc/apt/sources.list`` (one-line format) and ``/etc/apt/sources.list.d/``
(``*.list`` and deb822 ``*.sources``). ``FAASO_DEBIAN_MIRROR`` overrides it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from faaso.errors import BootstrapError


@dataclass(frozen=True, slots=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def _parse_one_line(text: str) -> list[AptSource]:
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = line.split()[1:]
        if words and words[0].startswith("["):  # options: [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = words[1:]
        if len(words) >= 2:
            out.append(AptSource(words[0], (words[1],), tuple(words[2:])))
    return out


def _parse_deb822(text: str) -> list[AptSource]:
    out: list[AptSource] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        last = ""
        for raw in stanza.splitlines():
            if raw.startswith("#") or not raw.strip():
                continue
            if raw[0].isspace() and last:  # continuation line
                fields[last] += " " + raw.strip()
                continue
            key, _, value = raw.partition(":")
            last = key.strip().lower()
            fields[last] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        suites = tuple(fields.get("suites", "").split())
        components = tuple(fields.get("components", "").split())
        for uri in fields.get("uris", "").split():
            out.append(AptSource(uri, suites, components))
    return out


def apt_sources(root: Path = Path("/etc/apt")) -> list[AptSource]:
    """Every ``deb`` source the host's apt knows, in apt's reading order."""
    files: list[Path] = []
    if (root / "sources.list").is_file():
        files.append(root / "sources.list")
    sources_d = root / "sources.list.d"
    if sources_d.is_dir():
        files.extend(sorted(p for p in sources_d.iterdir() if p.suffix in (".list", ".sources")))
    out: list[AptSource] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        out.extend(_parse_deb822(text) if path.suffix == ".sources" else _parse_one_line(text))
    return out


def debian_mirror(suite: str, root: Path = Path("/etc/apt")) -> str:
    """The URI of a source that serves ``suite`` with ``main``. Raises BootstrapError."""
    override = os.environ.get("FAASO_DEBIAN_MIRROR")
    if override:
        return override
    candidates = [
        s
        for s in apt_sources(root)
        if suite in s.suites
        and "main" in s.components
        and s.uri.startswith(("http://", "https://"))
    ]
    # Containers reach the mirror over plain HTTP only, so prefer an http:// one.
    candidates.sort(key=lambda s: not s.uri.startswith("http://"))
    if not candidates:
        raise BootstrapError(
            f"no Debian mirror for {suite!r} with component 'main' in {root}/sources.list or "
            f"{root}/sources.list.d; set FAASO_DEBIAN_MIRROR to the mirror's URL"
        )
    return candidates[0].uri
