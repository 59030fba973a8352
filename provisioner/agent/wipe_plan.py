"""Choosing the NIST SP 800-88 method for one disk, and its exact command lines.

Order of preference for `--method auto`:
  NVMe: Sanitize crypto erase > Sanitize block erase > Format NVM with secure erase
        (crypto, ses=2, when FNA says so; else user-data erase, ses=1) > overwrite
  ATA:  (enhanced) security erase > overwrite; a frozen drive stops with the suspend hint
  other (virtio, USB, loop, eMMC): one verified overwrite pass (Clear)

Pure functions of the capability data (`wipe_probe`), unit-tested without hardware.
`nvme sanitize-log -o json` reports `sstat` (bits 2:0: 1 done, 2 running, 3 failed, 4 done
without deallocation) either as a number or as an object with `status`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from provisioner.agent.blockdev import DiskIdentity
from provisioner.agent.wipe_probe import AtaSecurity, NvmeCaps
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
