"""Real loop devices, mounts and images for the flash tests; all cleaned up in finalizers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from provisioner.errors import DeelitError
from provisioner.flash.commands import register
from provisioner.formats import bmap as bm

B = bm.BLOCK_SIZE
REPO = Path(__file__).resolve().parents[3]


def run(*cmd: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, input=input)


def _detach(dev: str) -> None:
    for _ in range(50):  # udev may hold the device for a moment after use
        if subprocess.run(["losetup", "-d", dev], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"could not detach {dev}")


@pytest.fixture
def loop() -> Iterator[Callable[..., Path]]:
    """Factory: loop(backing_file, *losetup_flags) -> /dev/loopN, detached afterwards."""
    made: list[str] = []

    def make(backing: Path, *flags: str) -> Path:
        dev = run("losetup", "-f", "--show", *flags, str(backing)).stdout.strip()
        made.append(dev)
        return Path(dev)

    yield make
    for dev in reversed(made):
        _detach(dev)


@pytest.fixture
def mount() -> Iterator[Callable[..., Path]]:
    """Factory: mount(source, dir, *options) in this namespace, unmounted afterwards."""
    done: list[Path] = []

    def make(source: str, where: Path, *opts: str) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        run("mount", *opts, source, str(where))
        done.append(where)
        return where

    yield make
    for where in reversed(done):
        run("umount", str(where))


def patterned(path: Path, size: int, seed: str = "old") -> Path:
    """A file full of a position-dependent pattern, so any write to it shows."""
    block = b"".join(hashlib.sha256(f"{seed}{i}".encode()).digest() for i in range(B // 32))
    mib = b"".join(block[i:] + block[:i] for i in range(0, 256 * 16, 16))  # 256 distinct blocks
    with path.open("wb") as f:
        for i in range(size // len(mib)):
            f.write(i.to_bytes(8, "little") + mib[8:])  # and every MiB differs
    return path


def sparse_image(path: Path, size: int, spans: list[tuple[int, int]]) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
        for i, (off, length) in enumerate(spans):
            f.seek(off)
            chunk = hashlib.sha256(f"img{i}".encode()).digest() * (B // 32)
            f.write((chunk * (length // B + 1))[:length])
    return path


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Image:
    path: Path
    bmap: bm.BlockMap

    def spans(self) -> list[tuple[int, int]]:
        return [self.bmap.extent(r) for r in self.bmap.ranges]


@pytest.fixture
def image(tmp_path: Path) -> Image:
    """16 MiB + a partial block, four mapped spans (the first at 0, like a partition table)."""
    p = sparse_image(tmp_path / "pupil.img", (16 << 20) + 512,
                     [(0, 2 * B), (1 << 20, 3 << 20), (9 << 20, 5 * B + 100), (16 << 20, 512)])
    return Image(p, bm.create(p))


def mapped_equal(img: Image, dev: Path) -> list[tuple[int, int]]:
    """Spans where `dev` differs from the image, read independently of deelit's verify."""
    bad = []
    with img.path.open("rb") as a, dev.open("rb") as b:
        for off, length in img.spans():
            a.seek(off)
            b.seek(off)
            if a.read(length) != b.read(length):
                bad.append((off, length))
    return bad


def deelit_process(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """The real command in a child process (python -m provisioner.cli, as `deelit` runs)."""
    res = subprocess.run([sys.executable, "-m", "provisioner.cli", *args],
                         capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "COLUMNS": "200"}, timeout=300)
    if check and res.returncode != 0:
        raise AssertionError(f"deelit {args} failed ({res.returncode}):\n{res.stderr}")
    return res


_app = typer.Typer()
register(_app)


def deelit(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """The real command in this process (a child costs ~1 s of imports), with the exit code
    and error line that `deelit` itself would give."""
    res = CliRunner().invoke(_app, list(args), env={"COLUMNS": "200"})
    code, err = res.exit_code, res.stderr
    if isinstance(res.exception, DeelitError):
        code, err = res.exception.exit_code, err + f"error: {res.exception}\n"
    elif res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    if check and code != 0:
        raise AssertionError(f"deelit {args} failed ({code}):\n{err}")
    return subprocess.CompletedProcess(["deelit", *args], code, res.stdout, err)


class Helpers:
    """The helpers above, as a fixture: test modules cannot import conftest (importlib mode)."""

    patterned = staticmethod(patterned)
    sparse_image = staticmethod(sparse_image)
    digest = staticmethod(digest)
    mapped_equal = staticmethod(mapped_equal)
    deelit = staticmethod(deelit)
    deelit_process = staticmethod(deelit_process)
    run = staticmethod(run)


@pytest.fixture
def h() -> type[Helpers]:
    return Helpers
