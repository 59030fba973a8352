"""Step `finalize`: make the configured tree a clean, anonymous, reproducible image root.

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
    (tree / "etc" / "hostname").write_text(IMAGE_HOSTNAME + "\n")
    machine_id = tree / "etc" / "machine-id"
    machine_id.write_text("")
    dbus_id = tree / "var" / "lib" / "dbus" / "machine-id"
    if dbus_id.exists() and not dbus_id.is_symlink():
        dbus_id.unlink()


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
