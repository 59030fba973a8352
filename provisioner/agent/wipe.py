"""Wipe one disk per NIST SP 800-88: Purge where the firmware offers it, Clear otherwise.

Reads the drive's capabilities (`wipe_probe`), takes the plan (`wipe_plan`), runs it, checks
that sampled data changed (firmware erase) or reads the overwrite back (a sample, or every
block with `verify="full"`), and writes the certificate only after verification passed.

Hook for the VM test (QEMU `-device nvme`, which implements Format NVM): run
`deelit agent wipe /dev/nvme0n1 --method auto --confirm TOKEN` inside the guest; `auto`
takes whatever the emulated controller advertises, and the certificate names the method.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from provisioner.agent import certificate as certs
from provisioner.agent import overwrite
from provisioner.agent.blockdev import (
    DiskIdentity,
    Safety,
    confirmation_token,
    identify,
    refuse_if_in_use,
)
from provisioner.agent.sysrun import run, tool_version
from provisioner.agent.wipe_plan import (
    ATA_PASSWORD,
    METHODS,
    Method,
    Plan,
    choose_plan,
    sanitize_status,
)
from provisioner.agent.wipe_probe import (
    AtaSecurity,
    NvmeCaps,
    ata_security_from_hdparm,
    hidden_area_notes,
    nvme_caps,
    parse_dco,
    parse_hpa,
)
from provisioner.errors import DeelitError

__all__ = ["METHODS", "Method", "WipeRequest", "WipeResult", "wipe"]


def read_capabilities(ident: DiskIdentity) -> tuple[NvmeCaps | None, AtaSecurity | None, list[str]]:
    """Live capability queries; hidden-area notes for ATA disks."""
    if ident.kind == "nvme":
        ctrl = ident.nvme_controller or ident.path
        id_ctrl = json.loads(run(["nvme", "id-ctrl", ctrl, "--output-format=json"]).stdout)
        id_ns = json.loads(run(["nvme", "id-ns", ident.path, "--output-format=json"]).stdout)
        return nvme_caps(id_ctrl, id_ns), None, ["HPA/DCO: not applicable to NVMe"]
    if ident.kind == "ata":
        sec = ata_security_from_hdparm(run(["hdparm", "-I", ident.path]).stdout)
        hpa = parse_hpa(run(["hdparm", "-N", ident.path], check=False).stdout)
        dco = parse_dco(run(["hdparm", "--dco-identify", ident.path], check=False).stdout)
        return None, sec, hidden_area_notes(hpa, dco)
    return None, None, [f"HPA/DCO: not applicable ({ident.kind} device)"]


def _fingerprints(path: str, size: int, sample: overwrite.Sample) -> dict[int, str]:
    return {
        i: hashlib.sha256(data).hexdigest()
        for i, data in overwrite.read_blocks(path, size, sample.indices)
    }


def verify_changed(
    path: str, size: int, sample: overwrite.Sample, before: dict[int, str]
) -> overwrite.Verification:
    """After a firmware erase: no sampled block that held data may still hold the same bytes."""
    blank = hashlib.sha256(bytes(overwrite.BLOCK)).hexdigest()
    after = _fingerprints(path, size, sample)
    held = [
        i
        for i, h in before.items()
        if h != blank and overwrite.block_len(size, i) == overwrite.BLOCK
    ]
    same = [i for i in held if after.get(i) == before[i]]
    return overwrite.Verification(
        method=(
            "sampled blocks fingerprinted before the erase and read back after it; "
            f"{len(held)} held data before, none may be unchanged"
        ),
        scope="sample",
        block_size=overwrite.BLOCK,
        blocks_total=sample.blocks_total,
        blocks_sampled=len(sample.indices),
        percent_sampled=sample.percent,
        sample_seed=sample.sample_seed,
        mismatches=len(same),
        mismatch_blocks=same[:20],
        passed=not same,
    )


def run_firmware(plan: Plan, sleep: Callable[[float], None] = time.sleep) -> None:
    for argv in plan.commands:
        run(argv, timeout=plan.timeout_s)
    if plan.poll is None:
        return
    deadline = time.monotonic() + plan.timeout_s * 24  # sanitize of a big HDD-class device
    while time.monotonic() < deadline:
        status = sanitize_status(json.loads(run(plan.poll).stdout))
        if status in (1, 4):
            return
        if status == 3:
            raise DeelitError(
                f"NVMe sanitize failed (sanitize log status 3): run `nvme sanitize {plan.poll[2]} "
                "--sanact=1` to exit failure mode, then rerun; no certificate written"
            )
        sleep(5)
    raise DeelitError("NVMe sanitize did not finish in time; no certificate written")


def check_verify(verify: str, method: str) -> None:
    """A full read-back needs the stream that was written: only the overwrite has one."""
    if verify not in overwrite.SCOPES:
        raise DeelitError(f"unknown verification {verify!r}: choose sample or full")
    if verify == "full" and method != "overwrite":
        raise DeelitError(
            f"--verify full reads back every block of an overwrite; {method} is a firmware "
            "erase, verified by a sample: pass --method overwrite, or drop --verify full"
        )


def _overwrite(
    path: str, size: int, verify: str, progress: overwrite.Progress | None
) -> overwrite.Verification:
    """The pass, then its read-back; a full one counts as a second pass in the progress."""
    seed = secrets.randbits(63)
    full = verify == "full"
    passes = 2 if full else 1

    def writing(done: int, total: int) -> None:
        if progress:
            progress(done, total * passes)

    def reading(done: int, total: int) -> None:
        if progress:
            progress(total + done, total * passes)

    overwrite.write_pass(path, size, seed, writing)
    return overwrite.verify_pass(path, size, seed, full=full, progress=reading if full else None)


class WipeRequest(BaseModel):
    device: str
    method: str = "auto"
    verify: str = "sample"  # overwrite read-back: "sample" or "full" (every block)
    confirm: str | None = None
    dry_run: bool = False
    cert_dir: Path = Path("/var/lib/deelit/certificates")
    organisation: str = ""
    technician_id: str = ""
    computer: certs.Computer = certs.Computer()


class WipeResult(BaseModel):
    device: str
    token: str
    method: str
    nist_category: str
    commands: list[str]
    hidden_areas: list[str]
    dry_run: bool
    certificate: str | None = None
    certificate_sha256: str | None = None
    verification: overwrite.Verification | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def wipe(
    req: WipeRequest,
    *,
    safety: Safety | None = None,
    progress: overwrite.Progress | None = None,
) -> WipeResult:
    """Identify, refuse unsafe targets, plan, erase, verify, then (only then) certify."""
    safety = safety or Safety()
    ident = identify(req.device, safety)
    refuse_if_in_use(ident, safety)
    token = confirmation_token(ident)
    if not req.dry_run:
        if not req.confirm:
            raise DeelitError(
                f"no confirmation token for {req.device}: run `deelit agent wipe {req.device} "
                "--dry-run` to see what would be erased and the token, then pass --confirm TOKEN"
            )
        if req.confirm.strip().upper() != token:
            raise DeelitError(
                f"confirmation token {req.confirm!r} does not match {req.device} "
                f"({ident.model or ident.kind}, {ident.size_bytes} bytes): "
                "rerun --dry-run and copy the token of this disk"
            )
        if not req.organisation:
            raise DeelitError("the certificate needs the DEEL IT point: pass --point NAME")
        certs.check_technician_id(req.technician_id)
    nvme, ata, hidden = (
        read_capabilities(ident)
        if ident.kind in ("nvme", "ata")
        else (None, None, [f"HPA/DCO: not applicable ({ident.kind} device)"])
    )
    plan = choose_plan(ident, req.method, nvme=nvme, ata=ata)
    check_verify(req.verify, plan.method)
    read_back = "every block" if req.verify == "full" else "a sample"
    shown = [" ".join(c).replace(ATA_PASSWORD, "****") for c in plan.commands]
    result = WipeResult(
        device=req.device,
        token=token,
        method=plan.method,
        nist_category=plan.nist_category,
        commands=shown
        or [f"overwrite {req.device} ({ident.size_bytes} bytes), then read back {read_back}"],
        hidden_areas=hidden,
        dry_run=req.dry_run,
    )
    if req.dry_run:
        return result

    started = _now()
    if plan.method == "overwrite":
        verification = _overwrite(ident.path, ident.size_bytes, req.verify, progress)
        version = "deelit " + _package_version()
    else:
        sample = overwrite.choose_sample(ident.size_bytes)
        before = _fingerprints(ident.path, ident.size_bytes, sample)
        run_firmware(plan)
        verification = verify_changed(ident.path, ident.size_bytes, sample, before)
        version = tool_version(
            [plan.tool, "version"] if plan.tool == "nvme-cli" else ["hdparm", "-V"]
        )
    if not verification.passed:
        raise DeelitError(
            f"verification of {req.device} failed: {verification.mismatches} of "
            f"{verification.blocks_sampled} blocks read back wrong (first: "
            f"{verification.mismatch_blocks[:5]}); no certificate written: rerun, or destroy it"
        )
    cert = certs.Certificate(
        certificate_id=str(uuid.uuid4()),
        organisation=req.organisation,
        technician_id=req.technician_id,
        started_at=started,
        finished_at=_now(),
        computer=req.computer,
        media=certs.Media(
            maker=ident.vendor,
            model=ident.model,
            serial=ident.serial,
            size_bytes=ident.size_bytes,
            type=ident.kind,
            rotational=ident.rotational,
            transport=ident.transport,
            kernel_name=ident.name,
        ),
        sanitization=certs.Sanitization(
            nist_category=plan.nist_category,
            method=plan.method,
            technique=plan.technique,
            tool=plan.tool,
            tool_version=version,
            commands=result.commands,
        ),
        hidden_areas=hidden,
        verification=verification,
    )
    path, digest = certs.write(cert, req.cert_dir)
    result.certificate, result.certificate_sha256 = str(path), digest
    result.verification = verification
    return result


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("deelit")
    except Exception:
        return "unknown"


def nvme_tool_version() -> str:
    return tool_version(["nvme", "version"])


__all__ = ["METHODS", "WipeRequest", "WipeResult", "choose_plan", "wipe"]
