"""Grade a laptop A/B/C/reject from its disks' SMART data, battery and specification.

Every finding is a `Reason` naming the component, the value and the threshold, and caps the
grade; the laptop's grade is the worst cap. Thresholds come from `grading.yaml` (one place,
a comment on each). `grade_device` is the single grading function: the live path and the saved-report path
(`grade_inputs.py`) only differ in how they fill its inputs (see `smart.py` for the disk
side); the thresholds' schema is in `thresholds.py`.
"""


from __future__ import annotations

from pydantic import BaseModel, Field

from provisioner.agent.battery import Battery
from provisioner.agent.inventory import Inventory
from provisioner.agent.smart import DiskHealth
from provisioner.agent.thresholds import ORDER, Grade, Thresholds


class Reason(BaseModel):
    component: str
    code: str
    grade: Grade = Field(description="the cap this finding puts on the grade (A = noted only)")
    message: str


class DiskGrade(BaseModel):
    source: str
    model: str | None
    serial: str | None
    kind: str
    size_bytes: int | None
    grade: Grade
    reasons: list[Reason]


class DeviceGrade(BaseModel):
    grade: Grade
    reasons: list[Reason] = Field(description="every finding, worst first")
    serial: str | None = None
    maker: str | None = None
    model: str | None = None
    disks: list[DiskGrade] = Field(default_factory=list)


def worst(grades: list[Grade]) -> Grade:
    return max(grades, key=ORDER.__getitem__, default="A")


def _disk_label(h: DiskHealth) -> str:
    return f"disk {h.model or '?'} ({h.serial or 'no serial'}, {h.source})"


def grade_disk(h: DiskHealth, t: Thresholds) -> list[Reason]:
    """Findings for one disk; each cites the value and the threshold it crossed."""
    rules, comp = t.disk, _disk_label(h)
    out: list[Reason] = []

    def add(code: str, grade: Grade | None, message: str) -> None:
        if grade is not None:
            out.append(Reason(component=comp, code=code, grade=grade, message=message))

    status = h.exit_status or 0
    if status & 0b11 and not h.smart_available:
        detail = "; ".join(h.messages) or f"exit status {status}"
        add("smart_unreadable", rules.smart_unavailable, f"smartctl could not read it: {detail}")
    elif not h.smart_available:
        add(
            "smart_unavailable",
            rules.smart_unavailable,
            "no SMART health status: health unknown, check the disk by hand",
        )
    if status & 0b100 and h.smart_available:
        detail = "; ".join(h.messages) or "exit bit 2"
        add("smart_command_failed", "A", f"a SMART command failed, data may be partial: {detail}")
    if h.smart_passed is False or status & 0b1000:
        add("smart_failed", rules.smart_failed, "SMART overall-health self-assessment: FAILED")
    failing_now = [a for a in h.attributes.values() if a.when_failed == "now"]
    for a in failing_now:
        add(
            "attribute_failing_now",
            rules.attribute_failing_now,
            f"attribute {a.id} {a.name} failing now: value {a.value} <= threshold {a.thresh}",
        )
    if status & 0b10000 and not failing_now:
        add(
            "attribute_failing_now",
            rules.attribute_failing_now,
            "smartctl reports a prefail attribute at or below its threshold (exit bit 4)",
        )
    past = [a for a in h.attributes.values() if a.when_failed == "past"]
    for a in past:
        add(
            "attribute_failed_in_past",
            rules.attribute_failed_in_past,
            f"attribute {a.id} {a.name} was at its threshold in the past (worst {a.worst}, "
            f"threshold {a.thresh})",
        )
    if status & 0b100000 and not past:
        add(
            "attribute_failed_in_past",
            rules.attribute_failed_in_past,
            "smartctl reports an attribute at its threshold in the past (exit bit 5)",
        )
    if status & 0b1000000:
        add(
            "error_log_entries",
            rules.error_log_entries,
            "the ATA error log has entries (exit bit 6)",
        )
    if h.self_test_failures or status & 0b10000000:
        count = f"{h.self_test_failures} failed self-test(s)" if h.self_test_failures else "errors"
        add("self_test_failures", rules.self_test_failures, f"self-test log shows {count}")
    for counter in rules.counters:
        attr = h.attributes.get(counter.id)
        if attr is None or not attr.raw:
            continue
        grade: Grade = "reject" if attr.raw >= counter.reject_at else counter.grade
        add(
            f"attribute_{counter.id}",
            grade,
            f"attribute {counter.id} {attr.name} raw {attr.raw} > 0"
            + (f" (>= {counter.reject_at}: reject)" if grade == "reject" else ""),
        )
    if h.kind == "hdd" and h.power_on_hours is not None:
        add(
            "power_on_hours",
            rules.hdd_power_on_hours.at_or_above(h.power_on_hours),
            f"{h.power_on_hours} power-on hours (B at {rules.hdd_power_on_hours.B:.0f}, "
            f"C at {rules.hdd_power_on_hours.C:.0f})",
        )
    life = [a for a in h.attributes.values() if a.name in rules.ssd_life_attributes and a.value]
    if h.kind != "hdd" and life and life[0].value is not None:
        used = max(0, 100 - life[0].value)
        add(
            "life_used",
            rules.life_used_percent.at_or_above(used),
            f"{used}% of rated endurance used (attribute {life[0].id} {life[0].name} = "
            f"{life[0].value}% left)",
        )
    if h.nvme is not None:
        out.extend(_grade_nvme(h, t, comp))
    return out


_CRITICAL_BITS = {
    0: "available spare below threshold",
    1: "temperature out of range",
    2: "NVM subsystem reliability degraded",
    3: "media in read-only mode",
    4: "volatile memory backup failed",
    5: "persistent memory region read-only",
}


def _grade_nvme(h: DiskHealth, t: Thresholds, comp: str) -> list[Reason]:
    n, rules = h.nvme, t.nvme
    assert n is not None
    out: list[Reason] = []
    if n.critical_warning:
        bits = [name for bit, name in _CRITICAL_BITS.items() if n.critical_warning >> bit & 1]
        out.append(
            Reason(
                component=comp,
                code="nvme_critical_warning",
                grade=rules.critical_warning,
                message=f"NVMe critical warning 0x{n.critical_warning:02x}: "
                + ", ".join(bits or ["reserved bit"]),
            )
        )
    if (
        n.available_spare is not None
        and n.available_spare_threshold is not None
        and n.available_spare <= n.available_spare_threshold
    ):
        out.append(
            Reason(
                component=comp,
                code="nvme_spare",
                grade=rules.spare_at_or_below_threshold,
                message=f"available spare {n.available_spare}% <= threshold "
                f"{n.available_spare_threshold}%",
            )
        )
    if n.media_errors:
        grade = rules.media_errors.at_or_above(n.media_errors)
        if grade:
            out.append(
                Reason(
                    component=comp,
                    code="nvme_media_errors",
                    grade=grade,
                    message=f"{n.media_errors} media/data integrity errors",
                )
            )
    if n.percentage_used is not None:
        grade = t.disk.life_used_percent.at_or_above(n.percentage_used)
        if grade:
            out.append(
                Reason(
                    component=comp,
                    code="life_used",
                    grade=grade,
                    message=f"{n.percentage_used}% of rated endurance used",
                )
            )
    return out


def grade_battery(batteries: list[Battery] | None, t: Thresholds) -> list[Reason]:
    """`None` = no battery data was given (saved reports); `[]` = this laptop has none."""
    rules = t.battery
    if batteries is None:
        return [
            Reason(
                component="battery",
                code="battery_not_given",
                grade="A",
                message="no battery report given: battery not graded",
            )
        ]
    if not batteries:
        return [
            Reason(
                component="battery",
                code="battery_missing",
                grade=rules.missing,
                message="no battery found in /sys/class/power_supply",
            )
        ]
    out: list[Reason] = []
    for b in batteries:
        comp = f"battery {b.name} {b.model or ''}".strip()
        health = b.health_percent
        if health is not None:
            grade = rules.health_percent_below.below(health)
            if grade:
                out.append(
                    Reason(
                        component=comp,
                        code="battery_health",
                        grade=grade,
                        message=f"holds {health}% of its design capacity "
                        f"({b.full}/{b.design} {b.unit})",
                    )
                )
        if b.cycle_count is not None:
            grade = rules.cycle_count.at_or_above(b.cycle_count)
            if grade:
                out.append(
                    Reason(
                        component=comp,
                        code="battery_cycles",
                        grade=grade,
                        message=f"{b.cycle_count} charge cycles",
                    )
                )
    return out


def grade_spec(inv: Inventory, disks: list[DiskHealth], t: Thresholds) -> list[Reason]:
    rules = t.spec
    out: list[Reason] = []
    if inv.ram_bytes is not None:
        grade = rules.ram_bytes_below.below(inv.ram_bytes)
        if grade:
            out.append(
                Reason(
                    component="system",
                    code="ram",
                    grade=grade,
                    message=f"{inv.ram_bytes / 2**30:.1f} GiB RAM",
                )
            )
    else:
        out.append(
            Reason(
                component="system",
                code="ram_unknown",
                grade="A",
                message="RAM size not reported by SMBIOS",
            )
        )
    if inv.cpu.cores is not None:
        grade = rules.cpu_cores_below.below(inv.cpu.cores)
        if grade:
            out.append(
                Reason(
                    component="system",
                    code="cpu_cores",
                    grade=grade,
                    message=f"{inv.cpu.cores} CPU core(s)",
                )
            )
    else:
        out.append(
            Reason(
                component="system",
                code="cpu_cores_unknown",
                grade="A",
                message="CPU core count not reported by SMBIOS",
            )
        )
    sizes = [d.size_bytes for d in disks if d.size_bytes]
    if sizes:
        grade = rules.disk_bytes_below.below(max(sizes))
        if grade:
            out.append(
                Reason(
                    component="system",
                    code="disk_size",
                    grade=grade,
                    message=f"largest disk {max(sizes) / 1e9:.0f} GB",
                )
            )
    else:
        out.append(
            Reason(
                component="system",
                code="no_disk",
                grade="reject",
                message="no disk with a known size to install on",
            )
        )
    if inv.serial is None:
        fields = ", ".join(inv.placeholder_fields) or "no SMBIOS serial"
        out.append(
            Reason(
                component="system",
                code="placeholder_serial",
                grade=rules.placeholder_serial,
                message=f"no usable serial ({fields}): label it with an asset tag",
            )
        )
    return out


def grade_device(
    inv: Inventory,
    disks: list[DiskHealth],
    batteries: list[Battery] | None,
    t: Thresholds,
) -> DeviceGrade:
    """The one grading function for live machines and saved reports alike."""
    disk_grades = []
    reasons: list[Reason] = []
    for h in disks:
        found = grade_disk(h, t)
        reasons.extend(found)
        disk_grades.append(
            DiskGrade(
                source=h.source,
                model=h.model,
                serial=h.serial,
                kind=h.kind,
                size_bytes=h.size_bytes,
                grade=worst([r.grade for r in found]),
                reasons=found,
            )
        )
    reasons.extend(grade_battery(batteries, t))
    reasons.extend(grade_spec(inv, disks, t))
    reasons.sort(key=lambda r: -ORDER[r.grade])
    return DeviceGrade(
        grade=worst([r.grade for r in reasons]),
        reasons=reasons,
        serial=inv.serial,
        maker=inv.maker,
        model=inv.model,
        disks=disk_grades,
    )
