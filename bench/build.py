#!/usr/bin/env python3
"""Build benchmark: cold, no-change and one-role-change builds against the floor.

The floor (the baseline) is what any builder of the same image must pay at least: one
mmdebstrap call installing the image's final package set, plus mksquashfs of that tree at the
profile's compression level. Printed in one run:

    cold build, no-change rebuild, one-role-change rebuild, floor, and cold / floor.

Usage (root): .venv/bin/python bench/build.py [PROFILE]   (default: ci)
Uses a fresh cache in a temporary folder, so the cold build is really cold.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provisioner.build import pipeline
from provisioner.build.cache import Cache
from provisioner.build.mirrors import resolve_mirrors
from provisioner.formats import manifest as fm
from provisioner.profile import PROJECT_ROOT, load_profile


def timed_build(profile_name: str, out: Path, cache: Cache, project: Path = PROJECT_ROOT) -> float:
    started = time.monotonic()
    ctx = pipeline.prepare(load_profile(profile_name), out, cache, project=project)
    try:
        pipeline.run(ctx)
    except pipeline.DeelitError:
        print(ctx.log.read_text(errors="replace")[-4000:], file=sys.stderr)  # the cache goes with tmp
        raise
    return time.monotonic() - started


def floor(profile_name: str, manifest: fm.Manifest, tmp: Path) -> tuple[float, float]:
    prof = load_profile(profile_name)
    mirrors = resolve_mirrors(prof.mirror, prof.security_mirror)
    names = sorted({p.name for p in manifest.packages})
    tree = tmp / "floor-tree"
    started = time.monotonic()
    subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(names)}",
         '--aptopt=APT::Install-Recommends "false"', prof.suite, str(tree),
         *mirrors.source_lines(prof.suite, prof.components)],
        check=True, stdout=subprocess.DEVNULL,
    )
    bootstrap_s = time.monotonic() - started
    level = prof.outputs.netboot.compression_level if prof.outputs.netboot else 15
    started = time.monotonic()
    subprocess.run(["mksquashfs", str(tree), str(tmp / "floor.squashfs"), "-noappend", "-no-progress",
                    "-comp", "zstd", "-Xcompression-level", str(level)],
                   check=True, stdout=subprocess.DEVNULL)
    return bootstrap_s, time.monotonic() - started


def main() -> None:
    profile_name = sys.argv[1] if len(sys.argv) > 1 else "ci"
    # Pinned, so that a commit landing while the bench runs cannot invalidate its cache.
    os.environ.setdefault("SOURCE_DATE_EPOCH", "1767225600")
    with tempfile.TemporaryDirectory(prefix="deelit-bench-", dir="/var/tmp") as tmp_name:
        tmp = Path(tmp_name)
        cache = Cache(tmp / "cache")
        out = tmp / "out"
        cold = timed_build(profile_name, out, cache)
        unchanged = timed_build(profile_name, out, cache)

        project = tmp / "project"
        project.mkdir()
        shutil.copytree(PROJECT_ROOT / "roles", project / "roles")
        first_role = load_profile(profile_name).roles[0].name
        with (project / "roles" / first_role / "defaults" / "main.yml").open("a") as f:
            f.write("# bench: one role changed\n")
        role_change = timed_build(profile_name, tmp / "out-role", cache, project=project)

        manifest = fm.read(out / fm.FILENAME)
        floor_bootstrap, floor_squash = floor(profile_name, manifest, tmp)
        floor_total = floor_bootstrap + floor_squash

    print(f"profile {profile_name}: {len(manifest.packages)} packages")
    print(f"{'run':<34}{'seconds':>9}{'x floor':>9}")
    rows = [
        ("cold build (empty cache)", cold),
        ("no-change rebuild", unchanged),
        (f"one-role change ({first_role})", role_change),
        ("floor: mmdebstrap same packages", floor_bootstrap),
        ("floor: mksquashfs same level", floor_squash),
        ("floor total (baseline)", floor_total),
    ]
    for name, seconds in rows:
        print(f"{name:<34}{seconds:9.1f}{seconds / floor_total:9.2f}")
    print(f"cold / floor = {cold / floor_total:.2f}   no-change goal < 10 s: "
          f"{'met' if unchanged < 10 else 'NOT met'} ({unchanged:.1f} s)")


if __name__ == "__main__":
    main()
