"""One layer per role: each role runs over the layers below it and writes only its own changes.

A role's run mounts an overlay (lower: the build-only files, the layers of the roles before it,
the bootstrap; upper: a fresh folder) inside a private mount namespace: when the process ends,
for any reason, the kernel drops every mount, so a failed build leaves nothing mounted. The
upper folder is the role's layer, cached by everything that shaped it, so changing one role
reruns that role and the ones after it, never the ones before.

The finished tree is the layers merged by hard links (no byte is copied): a whiteout removes
a path, an opaque folder replaces the one below. Hard links share inodes with the cache, so
everything that later touches the tree only ever adds or replaces files (see finalize.py).

The build-only files sit as the top lower layer: the build host's DNS, a policy that starts no
service, apt pointed at the build's mirror. A role that leaves them alone leaves no trace of
them in its layer; one that writes its own (the filter's resolv.conf) keeps its own file.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from provisioner.build.context import BuildContext
from provisioner.build.runner import run_logged

# Mounts the overlay and the API filesystems inside the namespace, then runs the command.
_NAMESPACE_SCRIPT = r"""
set -e
t=$1 lower=$2 upper=$3 work=$4; shift 4
mount -t overlay overlay \
  -o "lowerdir=$lower,upperdir=$upper,workdir=$work,redirect_dir=off,metacopy=off,index=off,xino=off" "$t"
mount -t proc proc "$t/proc"
mount -t sysfs sysfs "$t/sys"
mount --rbind /dev "$t/dev"
mount -t tmpfs -o mode=0755 tmpfs "$t/run"
mount -t tmpfs -o mode=1777 tmpfs "$t/tmp"
exec "$@"
"""

# apt reads the build's sources from here while the roles run
BUILD_APT_CONF = "etc/apt/apt.conf.d/00deelit-build-sources"
BUILD_APT_DIR = "etc/apt/deelit-build"
POLICY_RC_D = "#!/bin/sh\n# deelit build: no service starts while configuring the image\nexit 101\n"
OVERLAY_XATTR = "trusted.overlay."
OPAQUE_XATTR = "trusted.overlay.opaque"


def build_files(folder: Path, build_sources: list[str]) -> Path:
    """The build-only layer: host DNS, no service starts, apt on the build's mirror."""
    shutil.rmtree(folder, ignore_errors=True)
    for sub in ("etc/apt/apt.conf.d", f"{BUILD_APT_DIR}/sources.list.d", "usr/sbin"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    shutil.copyfile("/etc/resolv.conf", folder / "etc/resolv.conf")
    policy = folder / "usr/sbin/policy-rc.d"
    policy.write_text(POLICY_RC_D)
    policy.chmod(0o755)
    (folder / BUILD_APT_DIR / "sources.list").write_text("\n".join(build_sources) + "\n")
    (folder / BUILD_APT_CONF).write_text(
        f'Dir::Etc::SourceList "/{BUILD_APT_DIR}/sources.list";\n'
        f'Dir::Etc::SourceParts "/{BUILD_APT_DIR}/sources.list.d";\n')
    for path in folder.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
    return folder


def run(ctx: BuildContext, lowers: Sequence[Path], upper: Path, argv: list[str], *,
        env: dict[str, str], step: str,
        on_failure: Callable[[Path], str | None] | None = None) -> None:
    """Runs argv (ansible-playbook over the merged view) with `lowers` (bottom first) below
    the build-only files; every change lands in `upper`."""
    merged = ctx.work / "merged"
    merged.mkdir(exist_ok=True)
    overlay_work = ctx.work / "overlay-work"
    shutil.rmtree(overlay_work, ignore_errors=True)
    overlay_work.mkdir()
    build_sources = ctx.mirrors.source_lines(ctx.profile.suite, ctx.profile.components)
    top = build_files(ctx.work / "build-files", build_sources)
    lowerdir = ":".join(str(p) for p in [top, *reversed(lowers)])  # overlay lists the top first
    try:
        run_logged(
            step,
            ["unshare", "--mount", "--propagation", "private", "--fork", "--",
             "sh", "-c", _NAMESPACE_SCRIPT, "sh", merged, lowerdir, upper, overlay_work, *argv],
            ctx.log,
            shown=argv,
            env=env,
            stream=ctx.verbose,
            on_failure=on_failure,
            cwd=ctx.work,
        )
    finally:
        shutil.rmtree(overlay_work, ignore_errors=True)
    strip_overlay_xattrs(upper)


def strip_overlay_xattrs(layer: Path) -> None:
    """Overlay's bookkeeping stays out of the image: files lose every trusted.overlay.* xattr
    (they are hard-linked into the tree); folders keep only `opaque`, which stacking needs."""
    for dirpath, dirnames, filenames in os.walk(layer):
        for name in filenames:
            _strip(Path(dirpath) / name, keep=())
        for name in dirnames:
            _strip(Path(dirpath) / name, keep=(OPAQUE_XATTR,))
    _strip(layer, keep=())


def _strip(path: Path, keep: tuple[str, ...]) -> None:
    for attr in os.listxattr(path, follow_symlinks=False):
        if attr.startswith(OVERLAY_XATTR) and attr not in keep:
            os.removexattr(path, attr, follow_symlinks=False)


def merge(base: Path, layers: Sequence[Path], dest: Path) -> None:
    """dest = base with each layer applied in order, every file a hard link into the cache."""
    subprocess.run(["cp", "-a", "-l", str(base), str(dest)], check=True, capture_output=True)
    for layer in layers:
        apply(layer, dest)


def apply(layer: Path, dest: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(layer):
        src_dir = Path(dirpath)
        dest_dir = dest / src_dir.relative_to(layer)
        for name in dirnames:
            src, target = src_dir / name, dest_dir / name
            opaque = OPAQUE_XATTR in os.listxattr(src, follow_symlinks=False)
            replaced = target.exists() and not target.is_dir()
            if target.is_symlink() or replaced or (opaque and target.is_dir()):
                _remove(target)
            if not target.exists():
                target.mkdir()
            _copy_dir_metadata(src, target)
        for name in filenames:
            src, target = src_dir / name, dest_dir / name
            st = os.lstat(src)
            if target.exists() or target.is_symlink():
                _remove(target)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                continue  # a whiteout: the path is gone
            os.link(src, target, follow_symlinks=False)


def _copy_dir_metadata(src: Path, target: Path) -> None:
    st = os.lstat(src)
    os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
    os.chmod(target, stat.S_IMODE(st.st_mode))
    for attr in os.listxattr(src, follow_symlinks=False):
        if not attr.startswith(OVERLAY_XATTR):
            os.setxattr(target, attr, os.getxattr(src, attr, follow_symlinks=False), follow_symlinks=False)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
