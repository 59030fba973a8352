"""The wipe certificate: NIST SP 800-88 Appendix G fields, device data only, written atomically.

No personal names: the technician is an id, the organisation is the DEEL IT point. The
registry records the SHA-256 of the file's bytes; the PDF rendering lives on the registry
side (reportlab is not in the installer image).

What it holds (SP 800-88 Rev.1 §4.8 and Appendix G, and what nwipe's report shows): the
media's maker, model, serial, type, its apparent size (what the system saw) and real size
(the drive's native max, beyond an HPA, or its DCO factory size), the hidden-area status;
the method, its NIST category, tool and version, the drive's own record of the erase; the
verification and its result; errors; start, end, duration and throughput; the technician
id and the point (organisation); and the `result`.

A wipe that ran but cannot be called complete still gets its certificate, as evidence of
what was done, with `result` saying why it is not a pass:
  "passed"                  every sector of the drive was erased and the read-back passed
  "hidden area not erased"  sectors beyond what the kernel addressed (an HPA that could not
                            be restored, a DCO, or a restored HPA the kernel does not see
                            until a reboot) were not erased and read back
  "unconfirmed"             the drive's own record could not confirm the firmware erase, or
                            whether the drive hides sectors could not be read
A certificate whose result is not "passed" carries `nist_category` "none": the medium as a
whole reached no NIST level (`method_category` says what the method reaches when complete).
Certificates written before these fields existed read as passed, with the new fields empty.
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
Outcome = Literal["passed", "hidden area not erased", "unconfirmed"]
NistCategory = Literal["Clear", "Purge", "none"]
HiddenStatus = Literal["none", "removed", "present", "unknown", "not applicable"]
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
    size_bytes: int = Field(description="bytes erased and verified: what the kernel addressed")
    size_apparent_bytes: int | None = Field(
        default=None, description="what the system saw before the wipe (visible, after an HPA)"
    )
    size_real_bytes: int | None = Field(
        default=None, description="the drive's real size: native max, or DCO factory size"
    )
    logical_block_size: int | None = None
    type: str = Field(description="nvme, ata (hdd/ssd), virtio, loop, other")
    media_type: str | None = Field(default=None, description="e.g. NVMe SSD, SATA HDD")
    rotational: bool
    transport: str | None = None
    kernel_name: str


class HiddenArea(BaseModel):
    """Sectors the drive hides from the system (ATA host protected area, DCO), and what was done.

    status: "none" (nothing hidden), "removed" (an HPA was lifted to the native max before the
    erase and the whole size erased), "present" (hidden sectors stayed out of the erase),
    "unknown" (the drive's answer could not be read), "not applicable" (NVMe, virtio, loop).
    Sector counts are logical sectors of `sector_size` bytes.
    """

    status: HiddenStatus
    detail: str = ""
    sector_size: int | None = None
    visible_sectors: int | None = None  # hdparm -N before anything was changed
    native_max_sectors: int | None = None  # hdparm -N: the max an HPA can be lifted to
    dco_max_sectors: int | None = None  # hdparm --dco-identify: factory size
    restore_command: str | None = None  # what deelit ran to lift the HPA, if it did
    restore_error: str | None = None  # why that failed
    kernel_sectors: int | None = None  # what the kernel addressed for the erase


class Sanitization(BaseModel):
    nist_category: NistCategory  # reached by the medium as a whole: "none" unless passed
    method: str  # overwrite, nvme-sanitize-crypto, nvme-sanitize-block, nvme-format, ata-erase…
    method_category: Literal["Clear", "Purge"] | None = None  # what the method reaches
    technique: str
    tool: str
    tool_version: str
    commands: list[str]
    drive_report: str | None = None  # the drive's own record read back after a firmware erase


class Certificate(BaseModel):
    schema_: str = Field(default=SCHEMA, alias="schema")
    certificate_id: str
    organisation: str
    technician_id: str
    started_at: str
    finished_at: str
    duration_s: float | None = None
    throughput_bytes_per_s: float | None = None  # bytes erased / duration (incl. read-back)
    computer: Computer
    media: Media
    sanitization: Sanitization
    hidden_areas: list[str]  # one line each (HPA, DCO), as shown by --dry-run
    hidden_area: HiddenArea | None = None
    verification: Verification
    # A failed erase or read-back gets no certificate at all; these did run to the end.
    result: Outcome = "passed"
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
    stamp = re.sub(r"[^0-9T]", "", cert.finished_at[:19]) + "Z"  # 2026-12-06T06:34:04 (UTC)
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
