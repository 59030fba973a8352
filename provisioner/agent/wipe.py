"""Wipe one disk per NIST SP 800-88: Purge where the firmware offers it, Clear otherwise.

Reads the drive's capabilities (`wipe_probe`), takes the plan (`wipe_plan`), lifts an ATA
host protected area to the drive's native max first (`uncover`), runs the plan, reads the
drive's own record of a firmware erase back (`run_firmware`: every exit status, the NVMe
sanitize log, `hdparm -I` after an ATA security erase; an NVMe Format only ever with a secure
erase setting), checks that sampled data changed (firmware erase) or reads the overwrite back
(a sample, or every block with `verify="full"`), then writes the certificate.

A failed command, a sanitize the drive reports failed, or a failed read-back raises
DeelitError and writes no certificate. A wipe that ran to the end but cannot be called
complete writes its certificate as evidence, with `result` other than "passed" and NIST
category "none" (see `certificate`): sectors stayed hidden from the erase ("hidden area not
erased"), or the drive's word on a firmware erase, or on hidden sectors, could not be read
("unconfirmed"). `WipeResult.passed` and `.result` tell the caller which; the device still
needs a wipe unless `passed`.

Hook for the VM test (QEMU `-device nvme`, which implements Format NVM): run
`deelit agent wipe /dev/nvme0n1 --method auto --confirm TOKEN` inside the guest; `auto`
takes whatever the emulated controller advertises, and the certificate names the method.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
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
    hpa_restore_command,
    sanitize_record,
    secure_erase_setting,
)
from provisioner.agent.wipe_probe import (
    AtaSecurity,
    HiddenProbe,
    NvmeCaps,
    ata_security_from_hdparm,
    hidden_probe,
    nvme_caps,
    parse_hpa,
    probe_notes,
)
from provisioner.errors import DeelitError

__all__ = ["METHODS", "Method", "WipeRequest", "WipeResult", "wipe"]


@dataclass
class Capabilities:
    nvme: NvmeCaps | None = None
    ata: AtaSecurity | None = None
    hidden: HiddenProbe | None = None  # ATA only: what hdparm says the drive hides
    notes: list[str] = field(default_factory=list)


def read_capabilities(ident: DiskIdentity) -> Capabilities:
    """Live capability queries (read only); the hidden-area probe for ATA disks."""
    if ident.kind == "nvme":
        ctrl = ident.nvme_controller or ident.path
        id_ctrl = json.loads(run(["nvme", "id-ctrl", ctrl, "--output-format=json"]).stdout)
        id_ns = json.loads(run(["nvme", "id-ns", ident.path, "--output-format=json"]).stdout)
        caps = nvme_caps(id_ctrl, id_ns)
        return Capabilities(nvme=caps, notes=["HPA/DCO: not applicable to NVMe"])
    if ident.kind == "ata":
        identify_text = run(["hdparm", "-I", ident.path]).stdout
        hpa = run(["hdparm", "-N", ident.path], check=False)
        dco = run(["hdparm", "--dco-identify", ident.path], check=False)
        probe = hidden_probe(identify_text, hpa.stdout + hpa.stderr, dco.stdout + dco.stderr)
        return Capabilities(
            ata=ata_security_from_hdparm(identify_text), hidden=probe, notes=probe_notes(probe)
        )
    return Capabilities(notes=[f"HPA/DCO: not applicable ({ident.kind} device)"])


def _rescan(ident: DiskIdentity, safety: Safety) -> None:
    """Ask the kernel to read the disk's size again (SCSI rescan, then the partition table).

    libata keeps the size it read when it found the drive, so many kernels show a lifted HPA
    only after a power cycle; `uncover` then reports the sectors as still hidden.
    """
    with contextlib.suppress(OSError):
        (safety.sysfs / "block" / ident.name / "device" / "rescan").write_text("1")
    with contextlib.suppress(DeelitError):
        run(["blockdev", "--rereadpt", ident.path], check=False, timeout=60)


def uncover(
    ident: DiskIdentity, probe: HiddenProbe, safety: Safety
) -> tuple[DiskIdentity, certs.HiddenArea]:
    """Lift an HPA to the native max (permanently), then re-identify the disk's size.

    Only the HPA: a DCO is left as it is. DEVICE CONFIGURATION RESTORE resets the drive's
    feature sets as well as its size, is refused while an HPA is set or after a BIOS's DCO
    FREEZE LOCK, and has left drives unusable; a failed one on a café table leaves a donated
    disk worth nothing. A DCO-restricted drive is erased as far as it lets us, and its
    certificate says "hidden area not erased" (a technician may restore the DCO on a bench
    and rerun). Lifting an HPA only reveals sectors (a vendor's recovery area, a previous
    owner's hidden data) that the erase then covers; "p" keeps it lifted after a power cycle,
    so the disk, once re-used, shows its whole size.
    """
    restore: str | None = None
    error: str | None = None
    lifted = False
    if probe.hpa_sectors > 0 and probe.native is not None:
        argv = hpa_restore_command(ident.path, probe.native)
        restore = " ".join(argv)
        try:
            run(argv, timeout=120)
        except DeelitError as exc:  # SET MAX frozen by the BIOS, a set-max password, a bridge
            error = str(exc)
        else:
            after = parse_hpa(run(["hdparm", "-N", ident.path], check=False).stdout)
            if after is None or after[0] < after[1]:
                error = (
                    f"`{restore}` exited 0 but hdparm -N then read "
                    + (f"{after[0]}/{after[1]} sectors" if after else "no valid max sectors")
                )
            else:
                lifted = True
                _rescan(ident, safety)
                again = identify(ident.path, safety)
                if (again.model, again.serial) != (ident.model, ident.serial):
                    raise DeelitError(
                        f"{ident.path} answered as {again.model} {again.serial} after its HPA "
                        f"was lifted, not {ident.model} {ident.serial}: nothing erased, no "
                        "certificate written; check the disks and rerun"
                    )
                ident = again
    return ident, hidden_area(probe, ident, restore=restore, error=error, lifted=lifted)


def hidden_area(
    probe: HiddenProbe | None,
    ident: DiskIdentity,
    *,
    restore: str | None = None,
    error: str | None = None,
    lifted: bool = False,
) -> certs.HiddenArea:
    """The hidden-area status of the disk as it is about to be erased (`ident`'s size)."""
    sector = ident.logical_block_size or 512
    kernel = ident.size_bytes // sector
    if probe is None:
        return certs.HiddenArea(
            status="not applicable",
            detail=f"no host protected area or DCO on {ident.kind} devices",
            sector_size=sector,
            kernel_sectors=kernel,
        )
    hidden: list[str] = []
    if probe.native is not None and kernel < probe.native:
        if error:
            hidden.append(
                f"an HPA hides {probe.hpa_sectors} sectors and could not be lifted: {error}"
            )
        elif lifted:
            hidden.append(
                f"the drive's max was lifted to its native {probe.native} sectors (permanent), "
                f"but the kernel still addresses {kernel}: power the laptop off and on, then "
                "rerun the wipe to erase the whole disk"
            )
        else:
            hidden.append(
                f"the kernel addresses {kernel} of the drive's {probe.native} sectors (an HPA "
                "lifted earlier shows after a power cycle): power-cycle and rerun the wipe"
            )
    if probe.dco_sectors:
        hidden.append(
            f"a DCO hides {probe.dco_sectors} sectors (factory size {probe.dco_max}, "
            f"native max {probe.native}); deelit does not restore a DCO"
        )
    if hidden:
        status: certs.HiddenStatus = "present"
        detail = "; ".join(hidden)
    elif not probe.known:
        status, detail = "unknown", "; ".join(probe.problems)
    elif lifted:
        status = "removed"
        detail = (
            f"an HPA of {probe.hpa_sectors} sectors was lifted to the native max "
            f"{probe.native} (permanent) before the erase; all {kernel} sectors erased"
        )
    else:
        status, detail = "none", f"no hidden sectors: {kernel} of {probe.native} addressed"
    return certs.HiddenArea(
        status=status,
        detail=detail,
        sector_size=sector,
        visible_sectors=probe.visible,
        native_max_sectors=probe.native,
        dco_max_sectors=probe.dco_max,
        restore_command=restore,
        restore_error=error,
        kernel_sectors=kernel,
    )


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


@dataclass
class DriveWord:
    """The drive's own record of a firmware erase, read back after it."""

    confirmed: bool
    report: str
    problems: list[str] = field(default_factory=list)


SANITIZE_POLL_S = 5
SANITIZE_NOT_STARTED_POLLS = 12  # a minute of "never sanitized" after the command: not started


def run_firmware(plan: Plan, sleep: Callable[[float], None] = time.sleep) -> DriveWord:
    """Run a firmware erase's commands, each of which must exit 0, then read the drive back.

    A failed command raises (no certificate; the caller must not claim anything). What the
    drive reports afterwards decides `confirmed`: the sanitize log must say "completed
    successfully" for the Sanitize deelit started; after an ATA security erase `hdparm -I`
    must show security not enabled (the erase clears the password it needs) and not locked;
    an NVMe Format, which keeps no log, must have carried SES 1 or 2 and is confirmed by the
    read-back sample that follows (`verify_changed`).
    """
    for argv in plan.commands:
        if argv[:2] == ["nvme", "format"] and secure_erase_setting(argv) not in (1, 2):
            raise DeelitError(
                f"refusing `{' '.join(argv)}`: a Format NVM without --ses=1 or --ses=2 "
                "changes the LBA format and leaves the data readable; nothing erased, no "
                "certificate written"
            )
    if plan.poll is not None:
        before = sanitize_record(json.loads(run(plan.poll).stdout))
        if before.status == 2:
            raise DeelitError(
                f"a sanitize is already running on {plan.poll[2]} ({before.text}): wait for "
                "it (nvme sanitize-log) and rerun; nothing started, no certificate written"
            )
    said: list[str] = []
    for argv in plan.commands:
        shown = " ".join(argv).replace(ATA_PASSWORD, "****")
        try:
            proc = run(argv, timeout=plan.timeout_s)
        except DeelitError as exc:
            raise DeelitError(f"{exc}; {_after_failure(plan)}no certificate written") from exc
        out = f"{proc.stdout}\n{proc.stderr}"
        # `run` raises on a non-zero exit; checked again here, and nvme-cli's own error line
        # with a zero exit (its status truncated to 8 bits can read as 0) is a failure too.
        if proc.returncode != 0 or "NVMe status:" in out:
            detail = [line for line in out.splitlines() if line.strip()]
            raise DeelitError(
                f"`{shown}` failed (exit status {proc.returncode}"
                + (f": {detail[-1].strip()}" if detail else "")
                + f"); {_after_failure(plan)}no certificate written"
            )
        last = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
        said.append(f"`{shown}` exited 0" + (f" ({last[-1]})" if last else ""))
    if plan.poll is not None:
        return _await_sanitize(plan, sleep)
    if plan.confirm is not None:
        return _confirm_ata(plan)
    ses = [secure_erase_setting(a) for a in plan.commands if a[:2] == ["nvme", "format"]]
    return DriveWord(
        confirmed=True,
        report="; ".join(said)
        + f"; secure erase setting {ses[0] if ses else '?'}; Format NVM keeps no log of its "
        "own: the read-back sample must show the data changed",
    )


def _after_failure(plan: Plan) -> str:
    if plan.confirm is None:
        return ""
    device = plan.confirm[-1]
    return (
        f"the drive may keep deelit's user password: clear it with `hdparm --user-master u "
        f"--security-disable {ATA_PASSWORD} {device}`; "
    )


def _await_sanitize(plan: Plan, sleep: Callable[[float], None]) -> DriveWord:
    assert plan.poll is not None
    ctrl = plan.poll[2]
    deadline = time.monotonic() + plan.timeout_s * 24  # sanitize of a big HDD-class device
    not_started = 0
    while True:
        record = sanitize_record(json.loads(run(plan.poll).stdout))
        if record.status in (1, 4):
            report = f"nvme sanitize-log: {record.text}" + (
                f"; SCDW10 {record.cdw10:#x}" if record.cdw10 is not None else ""
            ) + (
                f"; global data erased {record.global_erased}"
                if record.global_erased is not None
                else ""
            )
            problems = []
            if (
                plan.sanact is not None
                and record.cdw10 is not None
                and record.cdw10 & 0b111 != plan.sanact
            ):
                problems.append(
                    f"the sanitize log reports the operation started with SANACT "
                    f"{record.cdw10 & 0b111}, not the SANACT {plan.sanact} deelit sent: it "
                    "does not confirm this erase"
                )
            return DriveWord(confirmed=not problems, report=report, problems=problems)
        if record.status == 3:
            raise DeelitError(
                f"NVMe sanitize failed (sanitize log status 3: {record.text}): run `nvme "
                f"sanitize {ctrl} --sanact=1` to exit failure mode, then rerun; no certificate "
                "written"
            )
        if record.status == 2:
            not_started = 0
        else:  # 0 (never sanitized) or no status at all, after the drive accepted the command
            not_started += 1
            if not_started >= SANITIZE_NOT_STARTED_POLLS:
                raise DeelitError(
                    f"the sanitize log of {ctrl} shows no sanitize after `nvme sanitize` was "
                    f"accepted ({record.text or 'no SSTAT status'}): the drive did not start "
                    "it; no certificate written"
                )
        if time.monotonic() >= deadline:
            raise DeelitError("NVMe sanitize did not finish in time; no certificate written")
        sleep(SANITIZE_POLL_S)


def _confirm_ata(plan: Plan) -> DriveWord:
    """After SECURITY ERASE UNIT: the drive answers, security is disabled, not locked."""
    assert plan.confirm is not None
    device = plan.confirm[-1]
    try:
        text = run(plan.confirm, timeout=120).stdout
    except DeelitError as exc:
        return DriveWord(
            False,
            "",
            [f"the drive did not answer `hdparm -I` after the erase (still erasing?): {exc}"],
        )
    sec = ata_security_from_hdparm(text)
    if sec is None:
        return DriveWord(False, "", ["`hdparm -I` after the erase shows no Security section"])
    state = ", ".join(
        ("" if on else "not ") + name
        for name, on in (
            ("supported", sec.supported),
            ("enabled", sec.enabled),
            ("locked", sec.locked),
            ("frozen", sec.frozen),
        )
    )
    problems = []
    if sec.enabled or sec.locked:
        problems.append(
            f"security is still {'locked' if sec.locked else 'enabled'} after the erase: a "
            "completed SECURITY ERASE UNIT clears the user password, so the drive does not "
            f"confirm it; clear it with `hdparm --user-master u --security-disable "
            f"{ATA_PASSWORD} {device}` and rerun"
        )
    if not sec.supported:
        problems.append("`hdparm -I` after the erase no longer reports the security feature set")
    return DriveWord(not problems, f"hdparm -I after the erase: security {state}", problems)


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
    nist_category: str  # "Clear"/"Purge" as planned; "none" after a wipe that did not pass
    commands: list[str]
    hidden_areas: list[str]
    dry_run: bool
    certificate: str | None = None
    certificate_sha256: str | None = None
    verification: overwrite.Verification | None = None
    # After a wipe (None for a dry run): "passed", "hidden area not erased" or "unconfirmed".
    # Anything but "passed" still wrote its certificate, but the device is not wiped.
    result: certs.Outcome | None = None
    passed: bool = False
    hidden_area: certs.HiddenArea | None = None
    drive_report: str | None = None  # the drive's own record of a firmware erase
    errors: list[str] = []


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def media_type(ident: DiskIdentity) -> str:
    solid = "HDD" if ident.rotational else "SSD"
    if ident.kind == "nvme":
        return "NVMe SSD"
    if ident.kind == "ata":
        return f"{(ident.transport or 'ata').upper()} {solid}"
    if ident.kind == "loop":
        return "loop device (file)"
    if ident.kind == "virtio":
        return "virtio disk"
    return f"{ident.transport or 'other'} disk"


def outcome(hidden: certs.HiddenArea, drive: DriveWord | None) -> tuple[certs.Outcome, list[str]]:
    """The certificate's result and what keeps it from a pass.

    An unconfirmed firmware erase puts the whole erase in doubt, so it wins over a hidden
    area; a drive whose hidden sectors could not be read is unconfirmed, never "passed".
    """
    errors: list[str] = []
    if drive is not None:
        errors += drive.problems
    if hidden.status == "present":
        errors.append(f"hidden area not erased: {hidden.detail}")
    elif hidden.status == "unknown":
        errors.append(f"whether the drive hides sectors could not be read: {hidden.detail}")
    if drive is not None and not drive.confirmed:
        return "unconfirmed", errors
    if hidden.status == "present":
        return "hidden area not erased", errors
    if hidden.status == "unknown":
        return "unconfirmed", errors
    return "passed", errors


def wipe(
    req: WipeRequest,
    *,
    safety: Safety | None = None,
    progress: overwrite.Progress | None = None,
) -> WipeResult:
    """Identify, refuse unsafe targets, plan, uncover, erase, read back, then certify."""
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
    caps = (
        read_capabilities(ident)
        if ident.kind in ("nvme", "ata")
        else Capabilities(notes=[f"HPA/DCO: not applicable ({ident.kind} device)"])
    )
    plan = choose_plan(ident, req.method, nvme=caps.nvme, ata=caps.ata)
    check_verify(req.verify, plan.method)
    read_back = "every block" if req.verify == "full" else "a sample"
    shown = [" ".join(c).replace(ATA_PASSWORD, "****") for c in plan.commands]
    if caps.hidden is not None and caps.hidden.hpa_sectors > 0 and caps.hidden.native:
        lift = [" ".join(hpa_restore_command(ident.path, caps.hidden.native))]
    else:
        lift = []
    erase = shown or [
        f"overwrite {req.device} ({ident.size_bytes} bytes), then read back {read_back}"
    ]
    result = WipeResult(
        device=req.device,
        token=token,
        method=plan.method,
        nist_category=plan.nist_category,
        commands=lift + erase,
        hidden_areas=caps.notes,
        dry_run=req.dry_run,
    )
    if req.dry_run:
        return result

    started, clock = _now(), time.monotonic()
    apparent = ident.size_bytes
    if caps.hidden is not None:
        ident, hidden = uncover(ident, caps.hidden, safety)
    else:
        hidden = hidden_area(None, ident)
    drive: DriveWord | None = None
    if plan.method == "overwrite":
        verification = _overwrite(ident.path, ident.size_bytes, req.verify, progress)
        version = "deelit " + _package_version()
    else:
        sample = overwrite.choose_sample(ident.size_bytes)
        before = _fingerprints(ident.path, ident.size_bytes, sample)
        drive = run_firmware(plan)
        verification = verify_changed(ident.path, ident.size_bytes, sample, before)
        # nvme-cli's command is `nvme` ("nvme-cli version" found nothing: always "unknown")
        version = nvme_tool_version() if plan.tool == "nvme-cli" else tool_version(["hdparm", "-V"])
    if not verification.passed:
        raise DeelitError(
            f"verification of {req.device} failed: {verification.mismatches} of "
            f"{verification.blocks_sampled} blocks read back wrong (first: "
            f"{verification.mismatch_blocks[:5]}); no certificate written: rerun, or destroy it"
        )
    finished, duration = _now(), max(time.monotonic() - clock, 1e-6)
    verdict, errors = outcome(hidden, drive)
    passed = verdict == "passed"
    category: certs.NistCategory = plan.nist_category if passed else "none"
    probe = caps.hidden
    if probe is None:
        real: int | None = ident.size_bytes
    elif probe.native is not None:
        real = max(probe.native, probe.dco_max or 0) * (ident.logical_block_size or 512)
    else:
        real = None
    cert = certs.Certificate(
        certificate_id=str(uuid.uuid4()),
        organisation=req.organisation,
        technician_id=req.technician_id,
        started_at=started,
        finished_at=finished,
        duration_s=round(duration, 3),
        throughput_bytes_per_s=round(ident.size_bytes / duration, 1),
        computer=req.computer,
        media=certs.Media(
            maker=ident.vendor,
            model=ident.model,
            serial=ident.serial,
            size_bytes=ident.size_bytes,
            size_apparent_bytes=apparent,
            size_real_bytes=real,
            logical_block_size=ident.logical_block_size,
            type=ident.kind,
            media_type=media_type(ident),
            rotational=ident.rotational,
            transport=ident.transport,
            kernel_name=ident.name,
        ),
        sanitization=certs.Sanitization(
            nist_category=category,
            method=plan.method,
            method_category=plan.nist_category,
            technique=plan.technique,
            tool=plan.tool,
            tool_version=version,
            commands=result.commands,
            drive_report=drive.report if drive else None,
        ),
        hidden_areas=caps.notes,
        hidden_area=hidden,
        verification=verification,
        result=verdict,
        errors=errors,
    )
    if not passed:
        cert.post_sanitization_destination = "none yet: the wipe did not pass, wipe it again"
    path, digest = certs.write(cert, req.cert_dir)
    result.certificate, result.certificate_sha256 = str(path), digest
    result.verification = verification
    result.nist_category = category
    result.result, result.passed, result.errors = verdict, passed, errors
    result.hidden_area = hidden
    result.drive_report = cert.sanitization.drive_report
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
