"""Battery health from `/sys/class/power_supply/BAT*/uevent` (or a saved `upower -i`)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from provisioner.errors import DeelitError

POWER_SUPPLY = Path("/sys/class/power_supply")


class Battery(BaseModel):
    """Design vs full capacity in the unit the battery reports (µWh for energy, µAh for charge)."""

    name: str
    maker: str | None = None
    model: str | None = None
    technology: str | None = None
    unit: str  # "uWh" (energy_*) or "uAh" (charge_*): never mixed in one ratio
    full: int
    design: int
    cycle_count: int | None = None  # None when the firmware reports 0 (= not reported)

    @property
    def health_percent(self) -> float | None:
        return round(100.0 * self.full / self.design, 1) if self.design > 0 else None


def parse_uevent(text: str, *, source: str = "uevent") -> Battery:
    """A battery from uevent lines; energy_* preferred over charge_*, as the kernel documents."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.startswith("POWER_SUPPLY_"):
            values[key.removeprefix("POWER_SUPPLY_")] = value.strip()
    found = [
        (unit, values.get(f"{prefix}_FULL", ""), values.get(f"{prefix}_FULL_DESIGN", ""))
        for unit, prefix in (("uWh", "ENERGY"), ("uAh", "CHARGE"))
    ]
    usable = [(u, f, d) for u, f, d in found if f.isdigit() and d.isdigit()]
    if not usable:
        raise DeelitError(
            f"{source}: no ENERGY_FULL/ENERGY_FULL_DESIGN or CHARGE_FULL/CHARGE_FULL_DESIGN lines; "
            "pass the battery's /sys/class/power_supply/BAT*/uevent file"
        )
    unit, full, design = usable[0]
    cycles = int(values["CYCLE_COUNT"]) if values.get("CYCLE_COUNT", "").isdigit() else None
    return Battery(
        name=values.get("NAME", "BAT?"),
        maker=values.get("MANUFACTURER") or None,
        model=values.get("MODEL_NAME") or None,
        technology=values.get("TECHNOLOGY") or None,
        unit=unit,
        full=int(full),
        design=int(design),
        cycle_count=cycles or None,
    )


def _wh(value: str) -> int:
    """'53,4052 Wh' (locale decimal comma) → µWh."""
    number = re.match(r"\s*([0-9]+(?:[.,][0-9]+)?)", value)
    if not number:
        raise ValueError(value)
    return round(float(number.group(1).replace(",", ".")) * 1_000_000)


def parse_upower(text: str, *, source: str = "upower") -> Battery:
    """A battery from `upower -i` text (any locale: decimal commas are accepted)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            values.setdefault(key.strip(), value.strip())
    try:
        full, design = _wh(values["energy-full"]), _wh(values["energy-full-design"])
    except (KeyError, ValueError) as exc:
        raise DeelitError(f"{source}: no readable energy-full / energy-full-design lines") from exc
    cycles = values.get("charge-cycles", "")
    return Battery(
        name=values.get("native-path", "BAT?"),
        maker=values.get("vendor") or None,
        model=values.get("model") or None,
        technology=values.get("technology") or None,
        unit="uWh",
        full=full,
        design=design,
        cycle_count=int(cycles) if cycles.isdigit() and int(cycles) > 0 else None,
    )


def parse_battery_file(path: Path) -> Battery:
    """A saved report: uevent lines or `upower -i` output, told apart by their content."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DeelitError(f"cannot read battery report {path}: {exc.strerror}") from exc
    if "POWER_SUPPLY_" in text:
        return parse_uevent(text, source=str(path))
    return parse_upower(text, source=str(path))


def read_batteries(root: Path = POWER_SUPPLY) -> list[Battery]:
    """Every present battery on this machine (none on a desktop or in a VM)."""
    batteries = []
    for uevent in sorted(root.glob("*/uevent")):
        text = uevent.read_text(errors="replace")
        if "POWER_SUPPLY_TYPE=Battery" not in text and not uevent.parent.name.startswith("BAT"):
            continue
        if "POWER_SUPPLY_PRESENT=0" in text:
            continue
        try:
            batteries.append(parse_uevent(text, source=str(uevent)))
        except DeelitError:
            continue  # a battery without capacity data (some firmware) says nothing we can grade
    return batteries
