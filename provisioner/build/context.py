"""The build context every pipeline step reads and fills in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from provisioner.build.artifacts.boot_password import BootPassword
from provisioner.build.cache import Cache
from provisioner.build.mirrors import Mirrors
from provisioner.profile import Profile


@dataclass(frozen=True)
class ArtifactFile:
    """One published file: its name in the output folder, kind, size and SHA-256."""

    name: str
    kind: str
    size: int
    sha256: str


@dataclass(frozen=True)
class CacheKeys:
    bootstrap: str  # suite, arch, mirrors, components, package set, SOURCE_DATE_EPOCH
    layers: list[str]  # per role: the key below it + its digest, vars, play vars, code
    tree: str  # the last layer + finalize code
    artifacts: str  # tree + outputs + SOURCE_DATE_EPOCH + artifact writer code


@dataclass
class BuildContext:
    profile: Profile
    project: Path  # repository root: roles/ and images/
    out_dir: Path
    cache: Cache
    work: Path  # this build's staging folder (on the cache's filesystem)
    log: Path  # the build log every command appends to
    mirrors: Mirrors  # where the build fetches packages
    image_mirrors: Mirrors  # what the image's own apt sources name
    source_date_epoch: int
    role_digests: dict[str, str]
    keys: CacheKeys
    verbose: bool = False
    role_packages: dict[str, list[str]] = field(default_factory=dict)  # what roles declare
    boot_password: BootPassword | None = None  # the disk's GRUB password, for a disk output
    bootstrap_dir: Path | None = None
    tree: Path | None = None
    artifacts_dir: Path | None = None
    artifacts: list[ArtifactFile] = field(default_factory=list)
    cached: set[str] = field(default_factory=set)  # steps answered from the cache
    cached_layers: list[str] = field(default_factory=list)  # roles whose layer was cached

    @property
    def roles_dir(self) -> Path:
        return self.project / "roles"

    @property
    def collections_dir(self) -> Path:
        return self.project / "collections"
