"""The build pipeline: one list of named steps over one build context.

    bootstrap -> configure (one layer per role) -> finalize -> artifacts -> manifest (publish)

Each step either answers from the cache or does its work into the build's staging folder;
only complete results move into the cache, and the output folder is swapped in whole at the
end, so a failed step leaves no partial artifact behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from provisioner.build import bootstrap as bootstrap_mod
from provisioner.build import configure as configure_mod
from provisioner.build import finalize as finalize_mod
from provisioner.build import role_packages
from provisioner.build.artifacts import boot_password, disk, netboot
from provisioner.build.cache import Cache, digest_json, digest_tree
from provisioner.build.context import ArtifactFile, BuildContext, CacheKeys
from provisioner.build.manifest import artifact_record, write_manifest
from provisioner.build.mirrors import resolve_mirrors
from provisioner.build.staging import stage_role_inputs
from provisioner.errors import DeelitError
from provisioner.profile import PROJECT_ROOT, Profile

BUILD_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[BuildContext], None]


def write_artifacts(ctx: BuildContext) -> None:
    hit = ctx.cache.lookup("artifacts", ctx.keys.artifacts)
    if hit is not None:
        ctx.artifacts_dir = hit
        ctx.artifacts = _read_index(hit)
        ctx.cached.add("artifacts")
        return
    staged = ctx.work / "artifacts"
    staged.mkdir()
    outputs = ctx.profile.outputs
    writers: list[Callable[[], object]] = []
    if outputs.disk is not None:
        writers.append(partial(disk.write, ctx, outputs.disk, staged))
    if outputs.netboot is not None:
        writers.append(partial(netboot.write, ctx, outputs.netboot, staged))
    side_by_side(writers)
    ctx.artifacts = [
        artifact_record(path, _kind(path.name)) for path in sorted(staged.iterdir())
    ]
    _write_index(staged, ctx.artifacts)
    ctx.artifacts_dir = ctx.cache.store(
        "artifacts", ctx.keys.artifacts, staged, {"profile": ctx.profile.name, "tree": ctx.keys.tree}
    )


def side_by_side(writers: list[Callable[[], object]]) -> None:
    """Runs each writer in its own thread and waits for all; the first failure is raised.

    The disk's mke2fs -d is single-threaded and waits on the file system, so the squashfs
    (both formats read the same cached tree and write files of their own names) uses the
    other core meanwhile. A failure is raised only when the others have ended, so no
    process still writes into the staging folder while the step cleans it up.
    """
    with ThreadPoolExecutor(max_workers=max(1, len(writers)), thread_name_prefix="artifacts") as pool:
        futures = [pool.submit(write) for write in writers]
    for future in futures:  # the pool's end waited for all of them
        future.result()


def publish(ctx: BuildContext) -> None:
    """Hard-links the artifacts next to a fresh manifest, then swaps the output folder in."""
    assert ctx.artifacts_dir is not None
    out = ctx.out_dir
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir()
    try:
        for art in ctx.artifacts:
            _link_or_copy(ctx.artifacts_dir / art.name, staged / art.name)
        write_manifest(ctx, staged)
        if ctx.boot_password is not None and ctx.boot_password.password is not None:
            boot_password.write_private(staged / boot_password.OUT_NAME,
                                        ctx.boot_password.note(ctx.profile.name))
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            os.rename(out, old)
        os.rename(staged, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


STEPS: list[Step] = [
    Step("bootstrap", bootstrap_mod.bootstrap),
    Step("configure", configure_mod.configure),
    Step("finalize", finalize_mod.finalize),
    Step("artifacts", write_artifacts),
    Step("manifest", publish),
]

ARTIFACT_KINDS = {**netboot.FILES}
INDEX = ".deelit-artifacts.tsv"


def _kind(name: str) -> str:
    return ARTIFACT_KINDS.get(name) or disk.kind(name) or "file"


def _write_index(folder: Path, arts: list[ArtifactFile]) -> None:
    lines = [f"{a.name}\t{a.kind}\t{a.size}\t{a.sha256}\n" for a in arts]
    (folder / INDEX).write_text("".join(lines))


def _read_index(folder: Path) -> list[ArtifactFile]:
    arts = []
    for line in (folder / INDEX).read_text().splitlines():
        name, kind, size, sha = line.split("\t")
        arts.append(ArtifactFile(name, kind, int(size), sha))
    return arts


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


# --- planning -----------------------------------------------------------------------------


def source_date_epoch(project: Path = PROJECT_ROOT, paths: list[Path] | None = None) -> int:
    """SOURCE_DATE_EPOCH, else the last commit that touched what shapes this image.

    Only this image's own inputs count (its profile files and its roles), so a commit to another
    profile's role, or to build code, does not invalidate this image's cache through the
    timestamp; the build code that shapes trees and artifacts is in the cache keys by digest.
    """
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env:
        if not env.isdigit():
            raise DeelitError(f"SOURCE_DATE_EPOCH: '{env}' is not a number of seconds")
        return int(env)
    rel = [str(p.relative_to(project)) if p.is_relative_to(project) else str(p)
           for p in (paths or [project / "images", project / "roles"])]
    try:
        out = subprocess.run(
            ["git", "-C", str(project), "log", "-1", "--format=%ct", "--", *rel],
            capture_output=True, text=True, check=False,
        ).stdout.strip()
    except FileNotFoundError:
        out = ""
    return int(out) if out.isdigit() else 1735689600  # 2025-01-01: outside a git checkout


def role_digests(profile: Profile, roles_dir: Path) -> dict[str, str]:
    return {r.name: digest_tree(roles_dir / r.name) for r in profile.roles}


def cache_keys(
    profile: Profile, mirrors_lines: list[str], roles: dict[str, str], sde: int,
    image_lines: list[str] | None = None, role_packages: dict[str, list[str]] | None = None,
    play: dict[str, object] | None = None, collections: str = "", boot_hash: str = "",
) -> CacheKeys:
    """Every cache key of a build. SOURCE_DATE_EPOCH is in each: the tree shares inodes with the
    bootstrap and the layers, and finalize clamps their times to it."""
    bootstrap_key = digest_json({
        "suite": profile.suite, "arch": profile.architecture, "components": profile.components,
        "sources": mirrors_lines, "packages": bootstrap_mod.bootstrap_packages(profile, role_packages),
        "code": [digest_tree(p) for p in (BUILD_DIR / "bootstrap.py",)], "sde": sde,
    })
    layer_code = [digest_tree(p) for p in (BUILD_DIR / "configure.py", BUILD_DIR / "layers.py",
                                           BUILD_DIR / "templates")]
    below, layer_keys = bootstrap_key, []
    for role in profile.roles:
        below = digest_json({
            "below": below, "role": role.name, "digest": roles[role.name], "vars": role.vars,
            "image_sources": image_lines or mirrors_lines, "play": play or {}, "code": layer_code,
            "collections": collections, "sde": sde,
        })
        layer_keys.append(below)
    tree_key = digest_json({
        "layers": below,
        "profile": profile.model_dump(mode="json", exclude={"outputs", "description", "tests"}),
        "code": [digest_tree(BUILD_DIR / "finalize.py")], "sde": sde,
    })
    artifacts_key = digest_json({
        "tree": tree_key, "outputs": profile.outputs.model_dump(mode="json"), "sde": sde,
        # the GRUB password's hash by its digest: the key names no secret, even a hashed one
        "boot_password": hashlib.sha256(boot_hash.encode()).hexdigest() if boot_hash else "",
        "code": [digest_tree(p) for p in (BUILD_DIR / "artifacts",)],
    })
    return CacheKeys(bootstrap_key, layer_keys, tree_key, artifacts_key)


def prepare(
    profile: Profile, out_dir: Path, cache: Cache, *, project: Path = PROJECT_ROOT,
    verbose: bool = False,
) -> BuildContext:
    _check_out_dir(out_dir)
    mirrors = resolve_mirrors(profile.mirror, profile.security_mirror)
    image_mirrors = resolve_mirrors(profile.apt_sources.mirror, profile.apt_sources.security_mirror)
    inputs = [*profile.source_files, *(project / "roles" / r.name for r in profile.roles),
              project / "collections"]
    sde = source_date_epoch(project, inputs)
    stage_role_inputs(profile, project / "roles")  # before the digests that cover them
    roles = role_digests(profile, project / "roles")
    play = configure_mod.play_vars(profile, image_mirrors.debian, image_mirrors.security)
    packages = role_packages.declared(profile, project / "roles", play)
    password = None
    if profile.outputs.disk is not None:
        password = boot_password.resolve(profile.name, profile.outputs.disk.boot_password_hash_file,
                                         cache.root / "secrets")
    keys = cache_keys(profile, mirrors.source_lines(profile.suite, profile.components), roles, sde,
                      image_mirrors.source_lines(profile.suite, profile.components), packages, play,
                      digest_tree(project / "collections"), password.hash if password else "")
    work = cache.staging(profile.name)
    log = cache.root / "logs" / f"{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    ctx = BuildContext(
        profile=profile, project=project, out_dir=out_dir, cache=cache, work=work, log=log,
        mirrors=mirrors, image_mirrors=image_mirrors, source_date_epoch=sde, role_digests=roles,
        keys=keys, verbose=verbose, role_packages=packages, boot_password=password,
    )
    ctx.tree = cache.lookup("tree", keys.tree)
    return ctx


def _check_out_dir(out: Path) -> None:
    """Never replace a folder that is not a deelit output (e.g. --out pointed at $HOME)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").exists())):
        raise DeelitError(
            f"{out}: exists and is not a deelit output folder (no manifest.json); "
            "choose an empty or new folder with --out"
        )


def run(ctx: BuildContext, on_step: Callable[[str, float, bool], None] | None = None) -> None:
    """Runs every step in order; the staging folder goes whatever happens."""
    try:
        for step in STEPS:
            started = time.monotonic()
            step.run(ctx)
            if on_step:
                on_step(step.name, time.monotonic() - started, step.name in ctx.cached)
    finally:
        _remove_work(ctx.work)


def build(profile: Profile, out_dir: Path, cache: Cache, *, verbose: bool = False,
          on_prepared: Callable[[BuildContext], None] | None = None,
          on_step: Callable[[str, float, bool], None] | None = None) -> BuildContext:
    """The build area's one entry point (`deelit build`, the demo): prepare, then every step.

    `on_prepared` sees the context before the first step (its log path, what is cached)."""
    ctx = prepare(profile, out_dir.absolute(), cache, verbose=verbose)
    if on_prepared:
        on_prepared(ctx)
    run(ctx, on_step)
    return ctx


def _remove_work(work: Path) -> None:
    # A mount below the staging folder would make rmtree reach into it: refuse loudly.
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    if any(f" {work}/" in line or f" {work} " in line for line in mounts):
        raise DeelitError(f"{work}: something is still mounted below it; not removing it")
    shutil.rmtree(work, ignore_errors=True)
