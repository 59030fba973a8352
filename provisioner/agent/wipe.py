"""Wipe one disk per NIST SP 800-88: Purge where the firmware offers it, Clear otherwise.

Order of preference for `--method auto`:
  NVMe: Sanitize crypto erase > Sanitize block erase > Format NVM with secure erase
        (crypto, ses=2, when FNA says so; else user-data erase, ses=1) > overwrite
  ATA:  (enhanced) security erase > overwrite; a frozen drive stops with the suspend hint
  other (virtio, USB, loop, eMMC): one verified overwrite pass (Clear)

The decisions and the exact nvme-cli / hdparm command lines are pure functions of the
capability data (`NvmeCaps`, `AtaSecurity`), unit-tested without hardware. `wipe()` runs them.

Assumptions (nvme-cli 2.x JSON of `nvme id-ctrl -o json` and `nvme id-ns -o json`; not in
the shared fixtures, so tests build these dicts): `oacs` bit 1 = Format NVM supported;
`fna` bit 2 = crypto erase supported by Format, bit 0/1 = format/erase apply to all
namespaces; `sanicap` bit 0 crypto, bit 1 block, bit 2 overwrite; `flbas` bits 3:0 = current
LBA format. `nvme sanitize-log -o json` reports `sstat` (bits 2:0: 1 done, 2 running, 3 failed,
4 done without deallocation) either as a number or as an object with `status`.

Hook for the VM test (QEMU `-device nvme`, which implements Format NVM): run
`deelit agent wipe /dev/nvme0n1 --method auto --confirm TOKEN` inside the guest; `auto`
takes whatever the emulated controller advertises, and the certificate names the method.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

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
from provisioner.errors import DeelitError

Method = Literal["auto", "nvme-sanitize", "nvme-format", "ata-erase", "overwrite"]
METHODS: tuple[str, ...] = ("auto", "nvme-sanitize", "nvme-format", "ata-erase", "overwrite")
# hdparm needs a user password set before SECURITY ERASE UNIT; a fixed, documented one means a
# drive left locked by a power cut can always be unlocked: hdparm --security-disable deelit DEV
ATA_PASSWORD = "deelit"
SUSPEND_HINT = (
    "the BIOS froze the drive's security feature set: suspend the laptop (`systemctl suspend`), "
    "wake it, and rerun; or pass --method overwrite for a NIST Clear instead of a Purge"
)


# --- capabilities ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NvmeCaps:
    sanitize_crypto: bool = False
    sanitize_block: bool = False
    sanitize_overwrite: bool = False
    format_supported: bool = False
    format_crypto: bool = False
    format_all_namespaces: bool = False
    lbaf: int = 0


def nvme_caps(id_ctrl: dict[str, Any], id_ns: dict[str, Any] | None = None) -> NvmeCaps:
    """From `nvme id-ctrl -o json` (and `nvme id-ns -o json` for the current LBA format)."""
    sanicap, fna, oacs = (int(id_ctrl.get(k, 0)) for k in ("sanicap", "fna", "oacs"))
    return NvmeCaps(
        sanitize_crypto=bool(sanicap & 0b001),
        sanitize_block=bool(sanicap & 0b010),
        sanitize_overwrite=bool(sanicap & 0b100),
        format_supported=bool(oacs & 0b10),
        format_crypto=bool(fna & 0b100),
        format_all_namespaces=bool(fna & 0b011),
        lbaf=int((id_ns or {}).get("flbas", 0)) & 0xF,
    )


@dataclass(frozen=True)
class AtaSecurity:
    supported: bool
    enabled: bool = False
    locked: bool = False
    frozen: bool = False
    count_expired: bool = False
    enhanced_supported: bool = False
    erase_minutes: int | None = None
    enhanced_erase_minutes: int | None = None


def ata_security_from_smartctl(data: dict[str, Any]) -> AtaSecurity | None:
    """From `smartctl -j -x`'s `ata_security`: `state` is IDENTIFY word 128.

    Bits: 0 supported, 1 enabled, 2 locked, 3 frozen, 4 count expired, 5 enhanced erase.
    """
    sec = data.get("ata_security")
    if not isinstance(sec, dict) or "state" not in sec:
        return None
    word = int(sec["state"])
    return AtaSecurity(
        supported=bool(word & 1),
        enabled=bool(word & 2),
        locked=bool(word & 4),
        frozen=bool(word & 8),
        count_expired=bool(word & 16),
        enhanced_supported=bool(word & 32),
    )


def ata_security_from_hdparm(text: str) -> AtaSecurity | None:
    """From `hdparm -I`'s Security section (the live path; "not" prefixes a cleared flag)."""
    if "Security:" not in text:
        return None
    section = text.split("Security:", 1)[1].split("\n\n", 1)[0]

    def flag(name: str) -> bool:
        return bool(re.search(rf"^\s+{name}\s*$", section, re.M)) and not re.search(
            rf"not\s+{name}", section
        )

    def minutes(kind: str) -> int | None:
        match = re.search(rf"(\d+)min for {kind}SECURITY ERASE UNIT", section)
        return int(match.group(1)) if match else None

    return AtaSecurity(
        supported=flag("supported"),
        enabled=flag("enabled"),
        locked=flag("locked"),
        frozen=flag("frozen"),
        count_expired=flag("expired: security count"),
        enhanced_supported=flag("supported: enhanced erase"),
        erase_minutes=minutes(""),
        enhanced_erase_minutes=minutes("ENHANCED "),
    )


def parse_hpa(text: str) -> tuple[int, int] | None:
    """`hdparm -N`: 'max sectors = 976771055/976773168, HPA is enabled' → (visible, native)."""
    match = re.search(r"max sectors\s*=\s*(\d+)/(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_dco(text: str) -> int | None:
    """`hdparm --dco-identify`: 'Real max sectors: N' → N (the factory size)."""
    match = re.search(r"Real max sectors:\s*(\d+)", text)
    return int(match.group(1)) if match else None


def hidden_area_notes(hpa: tuple[int, int] | None, dco_max: int | None) -> list[str]:
    notes = []
    if hpa is None:
        notes.append("HPA: not reported by the drive")
    elif hpa[0] < hpa[1]:
        notes.append(
            f"HPA present: {hpa[0]} of {hpa[1]} sectors visible; {hpa[1] - hpa[0]} hidden "
            "sectors are not reached by an overwrite (a firmware erase covers them)"
        )
    else:
        notes.append(f"HPA: none ({hpa[0]} sectors visible of {hpa[1]})")
    if dco_max is not None and hpa is not None and dco_max > hpa[1]:
        notes.append(f"DCO restricts the drive: factory size {dco_max} sectors > {hpa[1]}")
    elif dco_max is not None:
        notes.append(f"DCO: none (factory size {dco_max} sectors)")
    else:
        notes.append("DCO: not reported by the drive")
    return notes


# --- plans and command lines ---------------------------------------------------------------------


@dataclass
class Plan:
    method: str  # concrete: overwrite, nvme-sanitize-crypto, nvme-sanitize-block, nvme-format, …
    nist_category: Literal["Clear", "Purge"]
    technique: str
    tool: str
    commands: list[list[str]] = field(default_factory=list)
    poll: list[str] | None = None  # nvme sanitize-log, run until done
    timeout_s: float = 3600


def nvme_sanitize_command(controller: str, action: Literal["crypto", "block"]) -> list[str]:
    return ["nvme", "sanitize", controller, f"--sanact={4 if action == 'crypto' else 2}"]


def nvme_sanitize_log_command(controller: str) -> list[str]:
    return ["nvme", "sanitize-log", controller, "--output-format=json"]


def nvme_format_command(namespace: str, *, lbaf: int, crypto: bool) -> list[str]:
    # --force skips nvme-cli's interactive countdown; the token already confirmed the target.
    return ["nvme", "format", namespace, f"--lbaf={lbaf}", f"--ses={2 if crypto else 1}", "--force"]


def hdparm_erase_commands(device: str, *, enhanced: bool) -> list[list[str]]:
    erase = "--security-erase-enhanced" if enhanced else "--security-erase"
    return [
        ["hdparm", "--user-master", "u", "--security-set-pass", ATA_PASSWORD, device],
        ["hdparm", "--user-master", "u", erase, ATA_PASSWORD, device],
    ]


def overwrite_plan() -> Plan:
    return Plan(
        method="overwrite",
        nist_category="Clear",
        technique="one pass of seeded pseudo-random data over every addressable block",
        tool="deelit",
    )


def plan_nvme(ident: DiskIdentity, caps: NvmeCaps, requested: str) -> Plan:
    ctrl = ident.nvme_controller or ident.path
    if requested in ("auto", "nvme-sanitize") and (caps.sanitize_crypto or caps.sanitize_block):
        action: Literal["crypto", "block"] = "crypto" if caps.sanitize_crypto else "block"
        return Plan(
            method=f"nvme-sanitize-{action}",
            nist_category="Purge",
            technique=f"NVMe Sanitize, {action} erase (whole NVM subsystem, incl. spare areas)",
            tool="nvme-cli",
            commands=[nvme_sanitize_command(ctrl, action)],
            poll=nvme_sanitize_log_command(ctrl),
        )
    if requested == "nvme-sanitize":
        raise DeelitError(
            f"{ident.path} does not support NVMe Sanitize (SANICAP has no crypto or "
            "block erase): use --method nvme-format or --method auto"
        )
    if requested in ("auto", "nvme-format") and caps.format_supported:
        kind = "cryptographic erase (ses=2)" if caps.format_crypto else "user data erase (ses=1)"
        return Plan(
            method="nvme-format",
            nist_category="Purge",
            technique=f"NVMe Format NVM with secure erase: {kind}",
            tool="nvme-cli",
            commands=[nvme_format_command(ident.path, lbaf=caps.lbaf, crypto=caps.format_crypto)],
        )
    if requested == "nvme-format":
        raise DeelitError(
            f"{ident.path} does not support Format NVM (OACS bit 1 clear): use --method overwrite"
        )
    return overwrite_plan()


def plan_ata(ident: DiskIdentity, sec: AtaSecurity | None, requested: str) -> Plan:
    usable = sec is not None and sec.supported
    if requested == "ata-erase" and not usable:
        raise DeelitError(
            f"{ident.path} does not offer the ATA security feature set: use --method overwrite"
        )
    if usable and requested in ("auto", "ata-erase"):
        assert sec is not None
        if sec.frozen:
            raise DeelitError(f"{ident.path}: ATA security is frozen; {SUSPEND_HINT}", exit_code=3)
        if sec.locked or sec.enabled:
            raise DeelitError(
                f"{ident.path}: ATA security is {'locked' if sec.locked else 'enabled'} with an "
                f"unknown password; if deelit set it, unlock with `hdparm --security-disable "
                f"{ATA_PASSWORD} {ident.path}` and rerun"
            )
        if sec.count_expired:
            raise DeelitError(f"{ident.path}: password attempt counter expired: power-cycle it")
        minutes = sec.enhanced_erase_minutes if sec.enhanced_supported else sec.erase_minutes
        return Plan(
            method="ata-erase-enhanced" if sec.enhanced_supported else "ata-erase",
            nist_category="Purge",
            technique="ATA SECURITY ERASE UNIT" + (" (enhanced)" if sec.enhanced_supported else ""),
            tool="hdparm",
            commands=hdparm_erase_commands(ident.path, enhanced=sec.enhanced_supported),
            timeout_s=max(3600.0, 2 * 60 * (minutes or 0)),
        )
    return overwrite_plan()


def choose_plan(
    ident: DiskIdentity,
    requested: str,
    *,
    nvme: NvmeCaps | None = None,
    ata: AtaSecurity | None = None,
) -> Plan:
    """The wipe for this disk: a pure decision over its identity and capabilities."""
    if requested not in METHODS:
        raise DeelitError(f"unknown wipe method {requested!r}: choose one of {', '.join(METHODS)}")
    if requested == "overwrite":
        return overwrite_plan()
    if ident.kind == "nvme":
        if requested == "ata-erase":
            raise DeelitError(f"{ident.path} is NVMe: --method ata-erase does not apply")
        return plan_nvme(ident, nvme or NvmeCaps(), requested)
    if ident.kind == "ata":
        if requested.startswith("nvme"):
            raise DeelitError(f"{ident.path} is ATA: --method {requested} does not apply")
        return plan_ata(ident, ata, requested)
    if requested != "auto":
        raise DeelitError(
            f"{ident.path} ({ident.kind}) has no firmware erase: use --method overwrite or auto"
        )
    return overwrite_plan()


def sanitize_status(log: Any) -> int | None:
    """SSTAT bits 2:0 from nvme-cli's sanitize-log JSON, wherever this version nests it."""
    if isinstance(log, dict):
        for key, value in log.items():
            if key.lower() == "sstat":
                if isinstance(value, int):
                    return value & 0b111
                if isinstance(value, dict) and isinstance(value.get("status"), int):
                    return int(value["status"]) & 0b111
            found = sanitize_status(value)
            if found is not None:
                return found
    return None


# --- running it ---------------------------------------------------------------------------


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


class WipeRequest(BaseModel):
    device: str
    method: str = "auto"
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
    shown = [" ".join(c).replace(ATA_PASSWORD, "****") for c in plan.commands]
    result = WipeResult(
        device=req.device,
        token=token,
        method=plan.method,
        nist_category=plan.nist_category,
        commands=shown or [f"overwrite {req.device} ({ident.size_bytes} bytes), then read back"],
        hidden_areas=hidden,
        dry_run=req.dry_run,
    )
    if req.dry_run:
        return result

    started = _now()
    sample = overwrite.choose_sample(ident.size_bytes)
    if plan.method == "overwrite":
        seed = secrets.randbits(63)
        overwrite.write_pass(ident.path, ident.size_bytes, seed, progress)
        verification = overwrite.verify_pass(ident.path, ident.size_bytes, seed, sample)
        version = "deelit " + _package_version()
    else:
        before = _fingerprints(ident.path, ident.size_bytes, sample)
        run_firmware(plan)
        verification = verify_changed(ident.path, ident.size_bytes, sample, before)
        version = tool_version(
            [plan.tool, "version"] if plan.tool == "nvme-cli" else ["hdparm", "-V"]
        )
    if not verification.passed:
        raise DeelitError(
            f"verification of {req.device} failed: {verification.mismatches} of "
            f"{verification.blocks_sampled} sampled blocks wrong (first: "
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
