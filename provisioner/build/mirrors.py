"""Debian mirrors: from the profile, else from the build host's own apt sources.

No mirror host name is written into the repository: the default is whatever the host's apt
is configured with (deb822 `.sources` files and one-line `.list` files).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioner.errors import DeelitError

APT_DIR = Path("/etc/apt")


@dataclass(frozen=True)
class Mirrors:
    debian: str
    security: str | None

    def source_lines(self, suite: str, components: Sequence[str]) -> list[str]:
        """One-line apt sources for mmdebstrap: the suite, its updates, and security."""
        comps = " ".join(components)
        lines = [f"deb {self.debian} {suite} {comps}", f"deb {self.debian} {suite}-updates {comps}"]
        if self.security:
            lines.append(f"deb {self.security} {suite}-security {comps}")
        return lines


def resolve_mirrors(
    profile_mirror: str | None, profile_security: str | None, apt_dir: Path = APT_DIR
) -> Mirrors:
    if profile_mirror:
        return Mirrors(profile_mirror.rstrip("/"), (profile_security or "").rstrip("/") or None)
    uris = host_debian_uris(apt_dir)
    debian = next((u for u in uris if u.rstrip("/").endswith("/debian")), None)
    security = next((u for u in uris if u.rstrip("/").endswith("/debian-security")), None)
    if debian is None:
        raise DeelitError(
            f"{apt_dir}: no Debian mirror found in the host's apt sources "
            "(a URI ending in /debian); set 'mirror:' in the profile"
        )
    if profile_security:
        security = profile_security
    return Mirrors(debian.rstrip("/"), security.rstrip("/") if security else None)


def host_debian_uris(apt_dir: Path = APT_DIR) -> list[str]:
    """URIs of enabled `deb` sources, in apt's reading order."""
    uris: list[str] = []
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in files:
        if path.is_file():
            uris += _one_line_uris(path.read_text())
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        uris += _deb822_uris(path.read_text())
    return uris


def _one_line_uris(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"^deb\s+(\[[^\]]*\]\s+)?(\S+)\s", line)
        if match:
            out.append(match.group(2))
    return out


def _deb822_uris(text: str) -> list[str]:
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[0].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
            out += fields.get("uris", "").split()
    return out
