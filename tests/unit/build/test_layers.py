"""Role layers: the hard-link merge gives exactly what the kernel's overlay shows.

A real overlay (unshare + mount, as the build does) records changes of every kind in an upper
folder: a removed file and folder (whiteouts), a folder replaced by a new one (opaque), a file
replaced by a folder and the reverse, changed content, a new symlink, a changed mode. The
merge of base + that layer is compared, path by path, with the overlay's own merged view.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from provisioner.build import layers

pytestmark = pytest.mark.root

CHANGES = r"""
set -e
m=$1
rm "$m/etc/gone"
rm -r "$m/usr/old"
rm -r "$m/var/replaced" && mkdir "$m/var/replaced" && echo fresh > "$m/var/replaced/only"
rm "$m/file-to-dir" && mkdir "$m/file-to-dir" && echo in > "$m/file-to-dir/x"
rm -r "$m/dir-to-file" && echo now-a-file > "$m/dir-to-file"
echo changed > "$m/etc/kept"
ln -s ../etc/kept "$m/usr/link"
chmod 0700 "$m/usr/private"
mkdir -p "$m/new/deep" && echo new > "$m/new/deep/file"
"""


def snapshot(root: Path) -> dict[str, tuple[str, int, str]]:
    """Path -> (type, mode, content or link target), for every entry below root."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                seen[rel] = ("link", 0, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                seen[rel] = ("dir", stat.S_IMODE(st.st_mode), "")
            else:
                seen[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_text())
    return seen


def make_base(base: Path) -> None:
    for folder in ("etc", "usr/old/sub", "usr/private", "var/replaced/inner", "dir-to-file/a"):
        (base / folder).mkdir(parents=True)
    for rel, text in {"etc/gone": "g", "etc/kept": "k", "usr/old/sub/f": "o",
                      "var/replaced/inner/f": "r", "var/replaced/top": "t", "file-to-dir": "f",
                      "dir-to-file/a/b": "b", "usr/private/p": "p"}.items():
        (base / rel).write_text(text)


def overlay(tmp: Path, lowers: list[Path], script: str, upper: Path | None = None) -> None:
    """Runs script ($1: the merged view) over an overlay of lowers (bottom first), as root in
    a private mount namespace; with upper, its changes land there."""
    merged, work = tmp / "merged", tmp / "work"
    merged.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    opts = "lowerdir=" + ":".join(str(p) for p in reversed(lowers))
    if upper:
        opts += f",upperdir={upper},workdir={work},redirect_dir=off,metacopy=off,index=off,xino=off"
    subprocess.run(["unshare", "--mount", "--propagation", "private", "--fork", "--", "sh", "-c",
                    f'mount -t overlay overlay -o "{opts}" "$1" && sh -c "$2" sh "$1"',
                    "sh", str(merged), script], check=True)


def test_merge_equals_the_overlay_view(tmp_path: Path) -> None:
    base, upper = tmp_path / "base", tmp_path / "layer"
    base.mkdir()
    upper.mkdir()
    make_base(base)
    overlay(tmp_path, [base], CHANGES, upper)
    layers.strip_overlay_xattrs(upper)

    merged_copy = tmp_path / "expected"
    overlay(tmp_path, [base, upper], f'cp -a "$1" {merged_copy}')  # the kernel's merged view
    result = tmp_path / "tree"
    layers.merge(base, [upper], result)

    assert snapshot(result) == snapshot(merged_copy)
    assert (result / "var/replaced/inner").exists() is False
    assert not (result / "etc/gone").exists()
    # nothing was copied: unchanged files are the base's inodes, changed ones the layer's
    assert os.stat(result / "usr/private/p").st_ino == os.stat(base / "usr/private/p").st_ino
    assert os.stat(result / "etc/kept").st_ino == os.stat(upper / "etc/kept").st_ino
    # overlay's bookkeeping stays out of the files that reach the image
    for dirpath, _dirs, files in os.walk(upper):
        for name in files:
            assert not [a for a in os.listxattr(Path(dirpath) / name, follow_symlinks=False)
                        if a.startswith("trusted.overlay.")]


def test_layers_stack_in_order(tmp_path: Path) -> None:
    """A second layer over the first: its changes win, the first layer's others stay."""
    base, one, two = (tmp_path / n for n in ("base", "one", "two"))
    for folder in (base, one, two):
        folder.mkdir()
    make_base(base)
    overlay(tmp_path, [base], 'echo one > "$1/etc/kept"; echo one > "$1/etc/first"', one)
    overlay(tmp_path, [base, one], 'echo two > "$1/etc/kept"; rm "$1/etc/first"; echo t > "$1/etc/second"', two)
    result = tmp_path / "tree"
    layers.merge(base, [one, two], result)
    assert (result / "etc/kept").read_text() == "two\n"
    assert not (result / "etc/first").exists()
    assert (result / "etc/second").read_text() == "t\n"
    assert (result / "etc/gone").read_text() == "g"
