"""The first-boot dialog itself (no seed), driven through a pseudo-terminal like a parent at
the keyboard, in the built tree under a throwaway overlay (the cached tree stays untouched):
Dutch questions, a mismatched repeat refused, then the parent and child accounts."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioner.build import verify as verifier
from provisioner.build.cache import Cache

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.heavy_vm]

# Mounts stay inside a private mount namespace: they vanish with the process.
SCRIPT = r"""
set -e
lower=$1 top=$2
mkdir -p "$top/upper" "$top/work" "$top/root"
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$top/upper,workdir=$top/work" "$top/root"
mount -t proc proc "$top/root/proc"
mount --rbind /dev "$top/root/dev"
mount -t tmpfs tmpfs "$top/root/run"
exec chroot "$top/root" env -i TERM=linux LANG=nl_BE.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    /usr/local/sbin/deelit-firstboot
"""
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\x1b[=>]|[\x0e\x0f]")


class Terminal:
    def __init__(self, argv: list[str]) -> None:
        self.master, slave = pty.openpty()
        os.set_blocking(self.master, False)
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True)
        os.close(slave)
        self.seen = b""

    def expect(self, text: str, timeout: float = 60) -> None:
        """Waits until the screen, read since the last expect, shows text (Dutch, UTF-8)."""
        wanted = text.encode()
        deadline = time.monotonic() + timeout
        while True:
            plain = ANSI.sub(b"", self.seen)
            if wanted in re.sub(rb"\s+", b" ", plain):
                self.seen = b""
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not on the screen; last:\n{plain[-1500:].decode(errors='replace')}")
            ready, _, _ = select.select([self.master], [], [], 1)
            if ready:
                with contextlib.suppress(OSError):  # EIO once the dialog has ended
                    self.seen += os.read(self.master, 65536)

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())
        time.sleep(0.5)


def test_parent_and_child_through_the_dialog(build: Path, tmp_path: Path) -> None:
    tree = verifier.built_tree(build, Cache())
    top = tmp_path / "overlay"
    term = Terminal(["unshare", "--mount", "--propagation", "private", "--fork", "--",
                     "sh", "-c", SCRIPT, "sh", str(tree), str(top)])
    try:
        term.expect("Welkom bij je laptop van DEEL IT")
        term.type("\r")
        term.expect("Kies een wachtwoord voor de ouder")
        term.type("kort\r")
        term.expect("te kort")
        term.type("\r")
        term.expect("Kies een wachtwoord voor de ouder")
        term.type("Zomer-2026-fiets\r")
        term.expect("nog eens")
        term.type("Zomer-2026-fietz\r")
        term.expect("niet gelijk")
        term.type("\r")
        term.expect("Kies een wachtwoord voor de ouder")
        term.type("Zomer-2026-fiets\r")
        term.expect("nog eens")
        term.type("Zomer-2026-fiets\r")
        term.expect("voornaam van je kind")
        term.type("Noor 3\r")  # a digit is not part of a first name
        term.expect("alleen letters")
        term.type("\r")
        term.expect("voornaam van je kind")
        term.type("Noor\r")
        assert term.proc.wait(timeout=120) == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
            term.proc.wait()
        os.close(term.master)
    upper = top / "upper" / "etc"
    passwd = {ln.split(":")[0]: ln.split(":") for ln in (upper / "passwd").read_text().splitlines()}
    shadow = {ln.split(":")[0]: ln.split(":")[1] for ln in (upper / "shadow").read_text().splitlines()}
    groups = {ln.split(":")[0]: ln.split(":")[3].split(",") for ln in (upper / "group").read_text().splitlines()}
    assert passwd["noor"][4] == "Noor"
    assert shadow["ouder"].startswith("$y$") and shadow["noor"].startswith("!")
    assert "ouder" in groups["sudo"] and "noor" not in groups["sudo"]
    assert "noor" in groups["nopasswdlogin"]
    assert (top / "upper" / "var" / "lib" / "deelit" / "firstboot-done").exists()
    # the hash is of the password typed (libxcrypt on the host knows yescrypt)
    check = subprocess.run([sys.executable, "-W", "ignore", "-c",
                            "import crypt, sys; print(crypt.crypt(sys.argv[1], sys.argv[2]))",
                            "Zomer-2026-fiets", shadow["ouder"]], capture_output=True, text=True, check=True)
    assert check.stdout.strip() == shadow["ouder"]
