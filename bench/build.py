#!/usr/bin/env python3
"""Build benchmark: cold, no-change and last-role-change builds against the floor.

The floor (the baseline) is what any builder of the same image must pay at least: one
mmdebstrap call installing the image's final package set, mksquashfs of that tree at the
profile's netboot level, and, for a profile with a disk, the disk step's own floor (mke2fs -d
of that tree into a root of the same size + zstd at the disk's level: bench/disk.py). Printed
in one run:

    cold build (with its steps), no-change rebuild, a change to the profile's last role,
    the floor, cold / floor (goal <= 1.3) and last-role change / cold (goal <= 0.3).

Usage (root): .venv/bin/python bench/build.py [PROFILE]   (default: ci)
Uses a fresh cache in a temporary folder, so the cold build is really cold. Run it with
nothing else on the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import disk as disk_bench  # bench/disk.py: the disk step's floor

from provisioner.build import pipeline
from provisioner.build.artifacts import disk
from provisioner.build.cache import Cache
from provisioner.build.mirrors import resolve_mirrors
from provisioner.formats import manifest as fm
from provisioner.profile import PROJECT_ROOT, load_profile

# Two builds' trees and artifacts plus the floor's tree and images (pupil: a run with 22 GB
# free ran out in the floor's zstd).
NEEDS_FREE = 25 * 10**9


def timed_build(profile_name: str, out: Path, cache: Cache, project: Path = PROJECT_ROOT,
                steps: dict[str, float] | None = None) -> float:
    started = time.monotonic()
    ctx = pipeline.prepare(load_profile(profile_name), out, cache, project=project)
    try:
        pipeline.run(ctx, lambda name, s, _cached: (steps if steps is not None else {}).__setitem__(name, s))
    except pipeline.DeelitError:
        print(ctx.log.read_text(errors="replace")[-4000:], file=sys.stderr)  # the cache goes with tmp
        raise
    return time.monotonic() - started


def floor(profile_name: str, manifest: fm.Manifest, tmp: Path) -> dict[str, float]:
    prof = load_profile(profile_name)
    mirrors = resolve_mirrors(prof.mirror, prof.security_mirror)
    names = sorted({p.name for p in manifest.packages})
    tree = tmp / "floor-tree"
    parts: dict[str, float] = {}
    started = time.monotonic()
    subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(names)}",
         '--aptopt=APT::Install-Recommends "false"', prof.suite, str(tree),
         *mirrors.source_lines(prof.suite, prof.components)],
        check=True, stdout=subprocess.DEVNULL,
    )
    parts["mmdebstrap same packages"] = time.monotonic() - started
    if prof.outputs.netboot is not None:
        started = time.monotonic()
        subprocess.run(["mksquashfs", str(tree), str(tmp / "floor.squashfs"), "-noappend", "-no-progress",
                        "-comp", "zstd", "-Xcompression-level", str(prof.outputs.netboot.compression_level)],
                       check=True, stdout=subprocess.DEVNULL)
        parts["mksquashfs same level"] = time.monotonic() - started
    if prof.outputs.disk is not None:
        layout = disk.plan_layout(disk.parse_size(prof.outputs.disk.size), disk.DiskIds.derive("bench"))
        parts["disk: mke2fs -d + zstd"] = disk_bench.floor(tree, layout.root.size,
                                                          prof.outputs.disk.compression_level, tmp)
    return parts


def main() -> None:
    profile_name = sys.argv[1] if len(sys.argv) > 1 else "ci"
    # Pinned, so that a commit landing while the bench runs cannot invalidate its cache.
    os.environ.setdefault("SOURCE_DATE_EPOCH", "1767225600")
    free = shutil.disk_usage("/var/tmp").free
    if free < NEEDS_FREE:
        sys.exit(f"bench/build.py: /var/tmp has {free / 1e9:.0f} GB free; a pupil run needs about "
                 f"{NEEDS_FREE / 1e9:.0f} GB (two builds, the floor's tree and images): free some "
                 "first, e.g. 'deelit cache prune --older-than 7'")
    with tempfile.TemporaryDirectory(prefix="deelit-bench-", dir="/var/tmp") as tmp_name:
        tmp = Path(tmp_name)
        cache = Cache(tmp / "cache")
        out = tmp / "out"
        steps: dict[str, float] = {}
        cold = timed_build(profile_name, out, cache, steps=steps)
        unchanged = timed_build(profile_name, out, cache)

        project = tmp / "project"
        project.mkdir()
        shutil.copytree(PROJECT_ROOT / "roles", project / "roles")
        shutil.copytree(PROJECT_ROOT / "collections", project / "collections")
        last_role = load_profile(profile_name).roles[-1].name
        with (project / "roles" / last_role / "defaults" / "main.yml").open("a") as f:
            f.write("# bench: one role changed\n")
        role_steps: dict[str, float] = {}
        role_change = timed_build(profile_name, tmp / "out-role", cache, project=project, steps=role_steps)

        manifest = fm.read(out / fm.FILENAME)
        floor_parts = floor(profile_name, manifest, tmp)
        floor_total = sum(floor_parts.values())

    def shown(parts: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:.1f}" for k, v in parts.items())

    print(f"profile {profile_name}: {len(manifest.packages)} packages")
    print(f"{'run':<40}{'seconds':>9}{'x floor':>9}")
    rows = [
        ("cold build (empty cache)", cold),
        ("no-change rebuild", unchanged),
        (f"last role changed ({last_role})", role_change),
        *((f"floor: {name}", seconds) for name, seconds in floor_parts.items()),
        ("floor total (baseline)", floor_total),
    ]
    for name, seconds in rows:
        print(f"{name:<40}{seconds:9.1f}{seconds / floor_total:9.2f}")
    print(f"cold steps: {shown(steps)}")
    print(f"last-role steps: {shown(role_steps)}")
    print(f"cold / floor = {cold / floor_total:.2f} (goal <= 1.3: "
          f"{'met' if cold / floor_total <= 1.3 else 'NOT met'})")
    print(f"last-role change / cold = {role_change / cold:.2f} (goal <= 0.3: "
          f"{'met' if role_change / cold <= 0.3 else 'NOT met'})")
    print(f"no-change goal < 10 s: {'met' if unchanged < 10 else 'NOT met'} ({unchanged:.1f} s)")


if __name__ == "__main__":
    main()
