"""The wipe certificate: NIST SP 800-88 Appendix G fields, device data only, written atomically.

No personal names: the technician is an id, the organisation is the DEEL IT point. The
registry records the SHA-256 of the file's bytes; the PDF rendering lives on the registry
side (reportlab is not in the installer image).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from provisioner.agent.overwrite import Verification
from provisioner.errors import DeelitError

SCHEMA = "deelit-wipe-certificate/1"
TECHNICIAN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")


class Computer(BaseModel):
    """The laptop the media came from (Appendix G: source computer)."""

    maker: str | None = None
    model: str | None = None
    serial: str | None = None


class Media(BaseModel):
    maker: str | None = None
    model: str | None = None
    serial: str | None = None
    size_bytes: int
    type: str = Field(description="nvme, ata (hdd/ssd), virtio, loop, other")
    rotational: bool
    transport: str | None = None
    kernel_name: str


class Sanitization(BaseModel):
    nist_category: Literal["Clear", "Purge"]
    method: str  # overwrite, nvme-sanitize-crypto, nvme-sanitize-block, nvme-format, ata-erase…
    technique: str
    tool: str
    tool_version: str
    commands: list[str]


class Certificate(BaseModel):
    schema_: str = Field(default=SCHEMA, alias="schema")
    certificate_id: str
    organisation: str
    technician_id: str
    started_at: str
    finished_at: str
    computer: Computer
    media: Media
    sanitization: Sanitization
    hidden_areas: list[str]
    verification: Verification
    result: Literal["passed"] = "passed"  # a failed wipe gets no certificate at all
    errors: list[str] = Field(default_factory=list)
    post_sanitization_destination: str = "reuse in the DEEL IT loan pool"

    model_config = {"populate_by_name": True}


def check_technician_id(value: str) -> str:
    if not TECHNICIAN_ID.match(value):
        raise DeelitError(
            f"technician id {value!r} must be a short id (letters, digits, . _ -; no spaces), "
            "not a name: certificates carry no personal data"
        )
    return value


def filename(cert: Certificate) -> str:
    who = re.sub(r"[^A-Za-z0-9._-]", "_", cert.media.serial or cert.media.kernel_name)
    stamp = re.sub(r"[^0-9TZ]", "", cert.finished_at.split(".")[0]) + "Z"
    return f"wipe-{who}-{stamp}.json"


def write(cert: Certificate, directory: Path) -> tuple[Path, str]:
    """Atomic write (same-dir tmp, fsync, rename, fsync dir); returns the path and sha256."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeelitError(
            f"cannot create certificate directory {directory}: {exc.strerror}"
        ) from exc
    for stale in directory.glob(".wipe-*.json.tmp"):  # left by a run killed mid-write
        stale.unlink(missing_ok=True)
    data = (cert.model_dump_json(by_alias=True, indent=2) + "\n").encode()
    final = directory / filename(cert)
    tmp = directory / f".{final.name}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DeelitError(f"cannot write certificate in {directory}: {exc.strerror}") from exc
    return final, hashlib.sha256(data).hexdigest()
