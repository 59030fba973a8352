"""Choosing the NIST SP 800-88 method for one disk, and its exact command lines.

Order of preference for `--method auto`:
  NVMe: Sanitize crypto erase > Sanitize block erase > Format NVM with secure erase
        (crypto, ses=2, when FNA says so; else user-data erase, ses=1) > overwrite
  ATA:  (enhanced) security erase > overwrite; a frozen drive stops with the suspend hint
  other (virtio, USB, loop, eMMC): one verified overwrite pass (Clear)

Pure functions of the capability data (`wipe_probe`), unit-tested without hardware.

Each firmware plan also names how the drive's own record is read back afterwards (`wipe`
refuses to call an erase done on the exit status alone): NVMe Sanitize polls the sanitize log
(`poll`), ATA security erase re-reads `hdparm -I` (`confirm`), NVMe Format has no log and is
only ever run with a secure erase setting (`secure_erase_setting`), then read back by sample.

`nvme sanitize-log -o json` (nvme-cli 2.x) nests the log under the controller's name:
{"nvme0": {"sprog": 65535, "sstat": {"global_erased": 1, "no_cmplted_passes": 0,
"status": "(1) Most Recent Sanitize Command Completed Successfully."}, "cdw10_info": 4, ...}};
some releases key that string by its own text instead of "status", older ones gave `sstat` as
a number. SSTAT bits 2:0: 0 never sanitized, 1 completed, 2 in progress, 3 failed, 4 completed
although No-Deallocate After Sanitize was requested (the data was deallocated anyway; deelit
never requests it). `cdw10_info` is the CDW10 of the Sanitize command that started the
operation the status is about: its bits 2:0 are that command's SANACT.
"""

from __future__ import annotations

import re
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
    confirm: list[str] | None = None  # read the drive's state back after the erase (hdparm -I)
    sanact: int | None = None  # the SANACT deelit sends; the sanitize log must name it back
    timeout_s: float = 3600


def nvme_sanitize_command(controller: str, action: Literal["crypto", "block"]) -> list[str]:
    return ["nvme", "sanitize", controller, f"--sanact={4 if action == 'crypto' else 2}"]


def nvme_sanitize_log_command(controller: str) -> list[str]:
    return ["nvme", "sanitize-log", controller, "--output-format=json"]


def nvme_format_command(namespace: str, *, lbaf: int, crypto: bool) -> list[str]:
    # --force skips nvme-cli's interactive countdown; the token already confirmed the target.
    return ["nvme", "format", namespace, f"--lbaf={lbaf}", f"--ses={2 if crypto else 1}", "--force"]


def secure_erase_setting(argv: list[str]) -> int | None:
    """The SES an `nvme format` command line asks for (`--ses=N`, `--ses N`, `-s N`, `-sN`).

    A Format NVM without SES 1 (user data erase) or 2 (crypto erase) only rewrites the LBA
    format: on most drives it leaves the data readable, so it is never a Purge.
    """
    for i, arg in enumerate(argv):
        value: str | None = None
        if arg.startswith("--ses="):
            value = arg.split("=", 1)[1]
        elif arg in ("--ses", "-s") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("-s") and not arg.startswith("--") and arg[2:].isdigit():
            value = arg[2:]
        if value is not None:
            return int(value) if value.strip().isdigit() else None
    return None


def hpa_restore_command(device: str, native_max: int) -> list[str]:
    """Lift a host protected area to the native max, permanently ("p"): a re-used disk keeps it.

    hdparm asks for the flag only when a size goes down; it is passed anyway, as documented.
    """
    return ["hdparm", "--yes-i-know-what-i-am-doing", "-N", f"p{native_max}", device]


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
            sanact=4 if action == "crypto" else 2,
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
            confirm=["hdparm", "-I", ident.path],
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


@dataclass(frozen=True)
class SanitizeRecord:
    """The sanitize log as the drive reports it: SSTAT status, its text, SCDW10."""

    status: int | None
    text: str = ""
    cdw10: int | None = None
    global_erased: int | None = None


SSTAT_TEXT = {
    0: "never sanitized",
    1: "most recent sanitize completed successfully",
    2: "sanitize in progress",
    3: "most recent sanitize failed",
    4: "most recent sanitize completed successfully (data deallocated although "
    "No-Deallocate After Sanitize was requested)",
}


def _find(log: Any, key: str) -> Any:
    if isinstance(log, dict):
        for k, value in log.items():
            if k.lower() == key:
                return value
        for value in log.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


def sanitize_record(log: Any) -> SanitizeRecord:
    """SSTAT and SCDW10 from nvme-cli's sanitize-log JSON, wherever this version puts them."""
    sstat = _find(log, "sstat")
    status: int | None = None
    text = ""
    erased: int | None = None
    if isinstance(sstat, int):
        status, erased = sstat & 0b111, (sstat >> 8) & 1
    elif isinstance(sstat, dict):
        for key, value in sstat.items():
            if key == "global_erased" and isinstance(value, int):
                erased = value
            elif key == "status" and isinstance(value, int):
                status = value & 0b111
            elif isinstance(value, str) and (match := re.match(r"\s*\((\d+)\)\s*(.*)", value)):
                status, text = int(match.group(1)) & 0b111, value.strip()
    cdw10 = _find(log, "cdw10_info")
    return SanitizeRecord(
        status=status,
        text=text or SSTAT_TEXT.get(status if status is not None else -1, ""),
        cdw10=cdw10 if isinstance(cdw10, int) else None,
        global_erased=erased,
    )


def sanitize_status(log: Any) -> int | None:
    """SSTAT bits 2:0 from nvme-cli's sanitize-log JSON, wherever this version nests it."""
    return sanitize_record(log).status
