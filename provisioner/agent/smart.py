"""SMART data of one disk, read three ways into one `DiskHealth` that `health.grade_disk` grades.

* live disk: pySMART `Device(path)` (it runs `smartctl --all` and parses the text) gives
  model, serial, assessment, the ATA attribute table and the NVMe health log; `smartctl -j`
  then fills what pySMART does not expose: smartctl's exit-status bit mask, the NVMe
  `available_spare_threshold` when missing, the self-test log verdicts and the capacity.
* saved `smartctl -j` report: parsed directly (the JSON already has every field).
* saved `smartctl --all`/`-x` text report: fed to the same pySMART parser through a
  `Smartctl` whose `_exec` returns the saved lines instead of running the tool.

Grading never looks at where the data came from, so a saved report of a disk grades exactly
as the live disk did.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from provisioner.agent.sysrun import run
from provisioner.errors import DeelitError

Kind = Literal["hdd", "ssd", "nvme", "unknown"]


class AtaAttribute(BaseModel):
    id: int
    name: str
    value: int | None = None  # normalized, 1..253
    worst: int | None = None
    thresh: int | None = None
    raw: int | None = None  # first integer of the raw string ("1234 (Min/Max 20/45)" → 1234)
    when_failed: Literal["", "now", "past"] = ""


class NvmeHealth(BaseModel):
    critical_warning: int | None = None
    available_spare: int | None = None
    available_spare_threshold: int | None = None
    percentage_used: int | None = None
    media_errors: int | None = None
    num_err_log_entries: int | None = None


class DiskHealth(BaseModel):
    source: str = Field(description="device path or report file")
    reader: str = Field(description="smartctl-json, pysmart, or pysmart+smartctl-json")
    model: str | None = None
    serial: str | None = None
    firmware: str | None = None
    kind: Kind = "unknown"
    size_bytes: int | None = None
    smart_available: bool = False
    smart_passed: bool | None = None
    exit_status: int | None = Field(
        default=None, description="smartctl's bit mask (JSON/live only)"
    )
    messages: list[str] = Field(default_factory=list)
    power_on_hours: int | None = None
    attributes: dict[int, AtaAttribute] = Field(default_factory=dict)
    nvme: NvmeHealth | None = None
    self_test_failures: int | None = None


def _first_int(text: object) -> int | None:
    match = re.search(r"\d+", str(text))
    return int(match.group()) if match else None


# --- smartctl -j -------------------------------------------------------------------------------


def from_smartctl_json(data: dict[str, Any], *, source: str) -> DiskHealth:
    smartctl = data.get("smartctl", {})
    device = data.get("device", {})
    protocol = str(device.get("protocol", ""))
    rotation = data.get("rotation_rate")
    kind: Kind = "unknown"
    if protocol == "NVMe":
        kind = "nvme"
    elif isinstance(rotation, int):
        kind = "hdd" if rotation > 0 else "ssd"
    attributes = {}
    for row in data.get("ata_smart_attributes", {}).get("table", []):
        raw = row.get("raw", {})
        # raw.value packs several counters for some ids (188, 190, 194); the string's first
        # number is the one smartctl prints and the one pySMART reads, so both paths agree.
        failed = str(row.get("when_failed", "")).lower()
        attributes[int(row["id"])] = AtaAttribute(
            id=int(row["id"]),
            name=str(row.get("name", "")),
            value=row.get("value"),
            worst=row.get("worst"),
            thresh=row.get("thresh"),
            raw=_first_int(raw.get("string", raw.get("value", ""))),
            when_failed="now" if failed == "now" else "past" if failed == "past" else "",
        )
    nvme = None
    log = data.get("nvme_smart_health_information_log")
    if log is not None:
        nvme = NvmeHealth(**{k: log.get(k) for k in NvmeHealth.model_fields})
    status = data.get("smart_status")
    tests = data.get("ata_smart_self_test_log", {}).get("standard", {}).get("table")
    hours = data.get("power_on_time", {}).get("hours")
    if hours is None and log is not None:
        hours = log.get("power_on_hours")
    size = data.get("user_capacity", {}).get("bytes") or data.get("nvme_total_capacity")
    return DiskHealth(
        source=source,
        reader="smartctl-json",
        model=data.get("model_name"),
        serial=data.get("serial_number"),
        firmware=data.get("firmware_version"),
        kind=kind,
        size_bytes=size,
        smart_available=status is not None,
        smart_passed=status.get("passed") if isinstance(status, dict) else None,
        exit_status=smartctl.get("exit_status"),
        messages=[str(m.get("string", "")) for m in smartctl.get("messages", [])],
        power_on_hours=hours,
        attributes=attributes,
        nvme=nvme,
        self_test_failures=(
            sum(1 for t in tests if t.get("status", {}).get("passed") is False)
            if tests is not None
            else None
        ),
    )


def read_smartctl_json_file(path: Path) -> DiskHealth:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DeelitError(f"cannot read smartctl report {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise DeelitError(
            f"{path} is not smartctl JSON (line {exc.lineno}): save it with `smartctl -a -j DEV`"
        ) from exc
    if not isinstance(data, dict) or "smartctl" not in data:
        raise DeelitError(f"{path} has no `smartctl` section: save it with `smartctl -a -j DEV`")
    return from_smartctl_json(data, source=str(path))


# --- pySMART ---------------------------------------------------------------------------------

_BRIEF_ROW = re.compile(r"^(\s*\d+\s+\S+\s+)([PORSCK-]{6})(\s+\d+\s+\d+\s+\S+)\s+(\S+)\s+(.+)$")
_FLAG_BITS = dict(zip("POSRCK", (0x01, 0x02, 0x04, 0x08, 0x10, 0x20), strict=True))
_CLASSIC_HEADER = (
    "ID# ATTRIBUTE_NAME          FLAG     VALUE WORST THRESH "
    "TYPE      UPDATED  WHEN_FAILED RAW_VALUE"
)


def classic_attribute_table(lines: list[str]) -> list[str]:
    """Rewrite `smartctl -x`'s brief attribute table into the `--all` layout pySMART parses.

    pySMART 1.4 reads only the classic table (FLAG as hex, TYPE, UPDATED, WHEN_FAILED); the
    brief one (FLAGS letters `POSRCK`, FAIL `-`/`NOW`/`Past`) makes it raise. The letters are
    exactly the flag bits, so the rewrite loses nothing. Likewise `-x` heads the self-test
    log "SMART Extended Self-test Log", which pySMART (matching "Self-test log") skips.
    """
    out: list[str] = []
    in_table = False
    for line in lines:
        if line.startswith("SMART Extended Self-test Log"):
            line = "SMART Self-test log structure revision number 1"
        if line.startswith("ID#") and "FLAGS" in line and "FAIL" in line:
            in_table = True
            out.append(_CLASSIC_HEADER)
            continue
        if in_table:
            row = _BRIEF_ROW.match(line)
            if row:
                letters = row.group(2)
                flag = sum(_FLAG_BITS[c] for c in letters if c != "-")
                failed = {"-": "-", "NOW": "FAILING_NOW", "Past": "In_the_past"}.get(
                    row.group(4), row.group(4)
                )
                kind = "Pre-fail" if "P" in letters else "Old_age"
                updated = "Always" if "O" in letters else "Offline"
                out.append(
                    f"{row.group(1)}0x{flag:04x}{row.group(3)}    {kind}  {updated}  "
                    f"{failed}  {row.group(5)}"
                )
                continue
            in_table = False
            if line.lstrip().startswith("|"):  # the flag legend under the brief table
                continue
        out.append(line)
    return out


def _saved_smartctl(lines: list[str]) -> Any:
    from pySMART.smartctl import Smartctl  # imported late: pySMART sets LANG=C on import

    class SavedSmartctl(Smartctl):
        """pySMART's smartctl wrapper answering every query with one saved report."""

        def _exec(self, cmd: list[str]) -> tuple[list[str], int]:
            return list(lines), 0

    return SavedSmartctl(smartctl_path="smartctl")


def from_pysmart(device: Any, *, source: str, reader: str = "pysmart") -> DiskHealth:
    """DiskHealth from a pySMART `Device` (live or fed a saved report)."""
    nvme_attrs = device.if_attributes if device.dev_interface == "nvme" else None
    attributes: dict[int, AtaAttribute] = {}
    for attr in device.attributes:
        if attr is None:
            continue
        failed = str(attr.when_failed)
        attributes[int(attr.num)] = AtaAttribute(
            id=int(attr.num),
            name=str(attr.name),
            value=_first_int(attr.value),
            worst=_first_int(attr.worst),
            thresh=attr.thresh,
            raw=attr.raw_int,
            when_failed="now"
            if failed == "FAILING_NOW"
            else "past"
            if "past" in failed.lower()
            else "",
        )
    nvme = None
    hours = attributes[9].raw if 9 in attributes else None
    if nvme_attrs is not None:
        nvme = NvmeHealth(
            critical_warning=nvme_attrs.criticalWarning,
            available_spare=nvme_attrs.availableSpare,
            available_spare_threshold=nvme_attrs.availableSpareThreshold,
            percentage_used=nvme_attrs.percentageUsed,
            media_errors=nvme_attrs.integrityErrors,
            num_err_log_entries=nvme_attrs.errorEntries,
        )
        hours = nvme_attrs.powerOnHours
    kind: Kind = "nvme" if nvme is not None else "ssd" if device.is_ssd else "hdd"
    if nvme is None and not device.is_ssd and not device.rotation_rate:
        kind = "unknown"
    failures = None
    if device.dev_interface != "nvme" and device.tests is not None:
        failures = sum(1 for t in device.tests if re.search(r"fail|fatal", str(t.status), re.I))
    assessment = device.assessment
    return DiskHealth(
        source=source,
        reader=reader,
        model=device.model,
        serial=device.serial,
        firmware=device.firmware,
        kind=kind,
        size_bytes=device.size or None,
        smart_available=bool(device.smart_capable) and assessment is not None,
        smart_passed=None if assessment is None else assessment != "FAIL",
        power_on_hours=hours,
        attributes=attributes,
        nvme=nvme,
        self_test_failures=failures,
    )


def from_smartctl_text(text: str, *, source: str) -> DiskHealth:
    """A saved `smartctl --all` or `-x` text report, parsed by pySMART."""
    from pySMART import Device

    lines = text.splitlines()
    if "=== START OF INFORMATION SECTION ===" not in text:
        raise DeelitError(f"{source} is not smartctl text output (no INFORMATION SECTION)")
    # pySMART skips the 4-line banner; hw-probe captures start without it.
    if not lines[0].startswith("smartctl"):
        lines = ["smartctl (saved report)", "Copyright", "", "", *lines]
    lines = classic_attribute_table(lines)
    interface = "nvme" if any("NVMe Log" in line for line in lines) else "sat"
    try:
        device = Device("/dev/saved", interface=interface, smartctl=_saved_smartctl(lines))
    except Exception as exc:  # pySMART raises bare ValueError/IndexError on odd layouts
        raise DeelitError(
            f"pySMART could not parse {source} ({exc}); save a JSON report with `smartctl -a -j`"
        ) from exc
    return from_pysmart(device, source=source)


def read_smartctl_text_file(path: Path) -> DiskHealth:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DeelitError(f"cannot read smartctl report {path}: {exc.strerror}") from exc
    return from_smartctl_text(text, source=str(path))


# --- live ------------------------------------------------------------------------------------


def merge(primary: DiskHealth, fallback: DiskHealth) -> DiskHealth:
    """pySMART's reading, with every field it left empty taken from `smartctl -j`."""
    merged = primary.model_copy(deep=True)
    for name in DiskHealth.model_fields:
        if name in ("source", "reader", "attributes", "nvme"):
            continue
        if getattr(merged, name) in (None, [], "unknown"):
            setattr(merged, name, getattr(fallback, name))
    for key, attr in fallback.attributes.items():
        merged.attributes.setdefault(key, attr)
    if fallback.nvme is not None:
        if merged.nvme is None:
            merged.nvme = fallback.nvme
        else:
            for name in NvmeHealth.model_fields:
                if getattr(merged.nvme, name) is None:
                    setattr(merged.nvme, name, getattr(fallback.nvme, name))
    merged.reader = f"{primary.reader}+{fallback.reader}"
    return merged


def read_live(path: str) -> DiskHealth:
    """One disk of this machine: pySMART first, `smartctl -j` for what it lacks."""
    from pySMART import Device

    proc = run(["smartctl", "-a", "-j", path], check=False)
    try:
        via_json = from_smartctl_json(json.loads(proc.stdout), source=path)
    except json.JSONDecodeError as exc:
        raise DeelitError(f"smartctl -j {path} printed no JSON (exit {proc.returncode})") from exc
    try:
        via_pysmart = from_pysmart(Device(path), source=path)
    except Exception:  # pySMART cannot read every bridge; the JSON alone still grades
        return via_json
    return merge(via_pysmart, via_json)
