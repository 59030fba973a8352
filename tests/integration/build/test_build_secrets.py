"""A build's secrets stay where they belong: the disk's GRUB password (a point's hash, or the
password the build makes) reaches the image's boot loader and one root-only file, and no
manifest, SBOM, checksum list, block map, build log or cache entry's listing."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from provisioner.build import pipeline
from provisioner.build.artifacts import boot_password
from provisioner.build.cache import Cache
from provisioner.build.context import BuildContext
from provisioner.profile import DiskOutput, Profile, load_profile

pytestmark = [pytest.mark.slow, pytest.mark.root]


def with_disk(profile: Profile, **changes: Any) -> Profile:
    assert profile.outputs.disk is not None
    disk = DiskOutput(**{**profile.outputs.disk.model_dump(), **changes})
    return profile.model_copy(update={"outputs": profile.outputs.model_copy(update={"disk": disk})})


def build(profile: Profile, out: Path) -> BuildContext:
    cache = Cache()
    ctx = pipeline.prepare(profile, out, cache)
    pipeline.run(ctx, lambda *_: None)
    return ctx


def places_holding(secret: str, ctx: BuildContext, skip: set[Path]) -> list[Path]:
    """Every file of the output folder, the build's log and the cache's own listings (indexes,
    metadata, logs) whose bytes hold the secret. Compressed artifacts are searched unpacked."""
    files = [*ctx.out_dir.iterdir(), ctx.log, *ctx.cache.root.glob("*/*.json"),
             *ctx.cache.root.glob("logs/*"), *ctx.cache.root.glob(f"artifacts/*/{pipeline.INDEX}")]
    found = []
    for path in files:
        if path in skip or not path.is_file():
            continue
        data = path.read_bytes()
        if path.name.endswith(".zst"):
            data = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
        if secret.encode() in data:
            found.append(path)
    return found


def test_a_points_boot_password_hash_reaches_only_the_boot_loader(tmp_path: Path) -> None:
    secret_hash = boot_password.grub_hash("made-up point password")
    hash_file = tmp_path / "point.grub-hash"
    hash_file.write_text(secret_hash + "\n")
    hash_file.chmod(0o600)
    ctx = build(with_disk(load_profile("ci"), boot_password_hash_file=str(hash_file)), tmp_path / "out")
    image = ctx.out_dir / "ci.img.zst"
    # GRUB needs it in its configuration on the ESP; nothing else may hold it
    assert places_holding(secret_hash, ctx, skip=set()) == [image]
    assert not (ctx.out_dir / boot_password.OUT_NAME).exists()  # the point keeps its password
    assert str(hash_file) in (ctx.out_dir / "manifest.json").read_text()  # the file's name only


def test_a_made_boot_password_is_kept_root_only(tmp_path: Path) -> None:
    ctx = build(load_profile("ci"), tmp_path / "out")
    assert ctx.boot_password is not None and ctx.boot_password.password is not None
    kept = ctx.out_dir / boot_password.OUT_NAME
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert places_holding(ctx.boot_password.password, ctx, skip=set()) == [kept]
    # its hash is in the image's GRUB configuration, and in that same root-only note
    assert sorted(places_holding(ctx.boot_password.hash, ctx, skip=set())) == sorted(
        [kept, ctx.out_dir / "ci.img.zst"])
    secrets = ctx.cache.root / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    assert ctx.boot_password.password in (secrets / "ci.boot-password").read_text()
