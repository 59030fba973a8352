"""Step `finalize`: make the configured tree a clean, anonymous, reproducible image root.

The tree is hard links into the cache (layers.py): files are removed or replaced, never written
in place; the times `touch` clamps are shared with the cache entries, whose keys all hold
SOURCE_DATE_EPOCH, so every build that shares an inode clamps it to the same time.

Empty machine-id (systemd creates one on first boot), no SSH host keys (sshd-keygen makes them
on first boot), the build host's name replaced (mmdebstrap copies it in), no apt lists or
caches, no build leftovers, and every mtime clamped to SOURCE_DATE_EPOCH.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from provisioner.build.context import BuildContext
from provisioner.build.runner import run_logged

# The static name until the image's own unit names the laptop from its serial at boot.
IMAGE_HOSTNAME = "deelit"

# Globs relative to the tree, removed outright.
REMOVE = [
    "etc/ssh/ssh_host_*",
    "var/lib/apt/lists/*_*",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old",
    "var/log/apt/*",
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/cache/ldconfig/aux-cache",
    "root/.ansible",
    "root/.cache",
    "tmp/*",
    "tmp/.*",
    "var/tmp/*",
    "etc/apt/apt.conf.d/99mmdebstrap",
]


def clean_tree(tree: Path) -> None:
    for pattern in REMOVE:
        for path in tree.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    _replace(tree / "etc" / "hostname", IMAGE_HOSTNAME + "\n")
    _replace(tree / "etc" / "machine-id", "")
    dbus_id = tree / "var" / "lib" / "dbus" / "machine-id"
    if dbus_id.exists() and not dbus_id.is_symlink():
        dbus_id.unlink()


def _replace(path: Path, text: str) -> None:
    """A new file in place of the old: the tree's files are hard links into the build cache
    (the bootstrap and the role layers), so none is ever written in place."""
    mode = path.lstat().st_mode & 0o7777 if path.exists() and not path.is_symlink() else 0o644
    path.unlink(missing_ok=True)
    path.write_text(text)
    path.chmod(mode)


def clamp_mtimes(ctx: BuildContext, tree: Path) -> None:
    stamp = f"@{ctx.source_date_epoch}"
    run_logged(
        "finalize",
        ["find", tree, "-xdev", "-newermt", stamp, "-exec", "touch", "--no-dereference",
         f"--date={stamp}", "{}", "+"],
        ctx.log,
    )


def finalize(ctx: BuildContext) -> None:
    if "configure" in ctx.cached:
        ctx.cached.add("finalize")
        return
    assert ctx.tree is not None
    clean_tree(ctx.tree)
    clamp_mtimes(ctx, ctx.tree)
    ctx.tree = ctx.cache.store(
        "tree", ctx.keys.tree, ctx.tree,
        {"profile": ctx.profile.name, "bootstrap": ctx.keys.bootstrap, "roles": ctx.role_digests},
    )
