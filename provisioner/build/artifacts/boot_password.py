"""The disk's GRUB password: entries boot without one, but editing an entry (`e`, where
`init=/bin/bash` would make anyone root) and the GRUB shell need the GRUB superuser's.

A point sets its own as a PBKDF2 hash (`grub-mkpasswd-pbkdf2`) in a file outside the profile
(`outputs.disk.boot_password_hash_file`). Where it sets none, the build makes a random password
once per profile and keeps it in the build cache (`secrets/`, root only), so every image of
that profile has the same one and a rebuild is bit for bit the same; each build puts a copy in
its output folder as boot-password.txt, readable by root only, never listed among the
artifacts. Never a default anyone knows.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from provisioner.errors import DeelitError

USER = "deelit"
# Letters typed the same on a QWERTY and a Belgian AZERTY keyboard (GRUB reads keys as US):
# no a/q, z/w or m, no digits or punctuation (shifted on AZERTY).
ALPHABET = "bcdefghijklnoprstuvxy"
LENGTH = 20  # 20 letters of 21: about 88 bits
ROUNDS = 10000  # grub-mkpasswd-pbkdf2's default
HASH_RE = re.compile(r"^grub\.pbkdf2\.sha512\.[0-9]+\.[0-9A-F]+\.[0-9A-F]+$")
OUT_NAME = "boot-password.txt"


@dataclass(frozen=True)
class BootPassword:
    hash: str
    password: str | None  # only when the build made it

    def note(self, profile: str) -> str:
        assert self.password is not None
        return (f"GRUB boot menu of the deelit image '{profile}': entries boot without a password;\n"
                f"editing one or the GRUB shell asks for this user and password.\n"
                f"user: {USER}\npassword: {self.password}\nhash: {self.hash}\n")


def new_password() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def grub_hash(password: str, salt: bytes | None = None, rounds: int = ROUNDS) -> str:
    """What grub-mkpasswd-pbkdf2 prints: PBKDF2-HMAC-SHA512, salt and hash in upper-case hex."""
    salt = salt if salt is not None else secrets.token_bytes(64)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, rounds, 64)
    return f"grub.pbkdf2.sha512.{rounds}.{salt.hex().upper()}.{digest.hex().upper()}"


def read_hash(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise DeelitError(f"outputs.disk.boot_password_hash_file: cannot read {path} "
                          f"({exc.strerror})") from None
    if not HASH_RE.match(text):
        raise DeelitError(f"{path}: not a GRUB PBKDF2 hash (grub.pbkdf2.sha512.…); make one with "
                          "grub-mkpasswd-pbkdf2 and put only its hash in the file")
    return text


def resolve(profile: str, hash_file: str | None, secrets_dir: Path) -> BootPassword:
    """The point's hash, else this profile's made password (made on first use)."""
    if hash_file:
        return BootPassword(read_hash(Path(hash_file).expanduser()), None)
    path = secrets_dir / f"{profile}.boot-password"
    if path.exists():
        return read_note(path)
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    made = BootPassword(grub_hash(password := new_password()), password)
    write_private(path, made.note(profile))
    return made


def read_note(path: Path) -> BootPassword:
    """A made password's note (the cache's copy, or boot-password.txt in an output folder)."""
    fields = dict(line.split(": ", 1) for line in path.read_text().splitlines() if ": " in line)
    if fields.get("user") == USER and HASH_RE.match(fields.get("hash", "")) and fields.get("password"):
        return BootPassword(fields["hash"], fields["password"])
    raise DeelitError(f"{path}: damaged (no user, password and hash lines); remove it and the "
                      "build makes a new password (laptops imaged before keep the old one)")


def write_private(path: Path, text: str) -> None:
    """Written readable by root only from its first byte, then moved into place whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
