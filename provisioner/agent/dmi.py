"""Parse `dmidecode` text output into records (saved dumps and live runs share this parser)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HANDLE = re.compile(r"^Handle 0x[0-9A-Fa-f]+, DMI type (\d+),")


@dataclass
class DmiRecord:
    """One SMBIOS structure: its type, title line and `Key: Value` properties."""

    type: int
    title: str = ""
    props: dict[str, str] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)


def parse_dmidecode(text: str) -> list[DmiRecord]:
    """Records in file order.

    Real dumps differ in indentation (tabs, 4 or 8 spaces) and in blank lines between records
    (the Surface Go 2 dump has none), so a record starts at each `Handle` line and a property's
    depth is measured against the first property of that record, not against a fixed tab.
    """
    records: list[DmiRecord] = []
    current: DmiRecord | None = None
    prop_indent: int | None = None
    last_key: str | None = None
    for raw in text.splitlines():
        line = raw.rstrip("\r\n")
        match = _HANDLE.match(line)
        if match:
            current = DmiRecord(type=int(match.group(1)))
            records.append(current)
            prop_indent, last_key = None, None
            continue
        if current is None or not line.strip():
            continue
        indent = len(line.expandtabs(8)) - len(line.expandtabs(8).lstrip())
        # The title is the first line without a colon; some BIOSes indent it (XPS 13 type 25).
        if not current.title and (indent == 0 or ":" not in line):
            current.title = line.strip()
            continue
        if indent == 0:
            continue
        if prop_indent is None:
            prop_indent = indent
        if indent > prop_indent and last_key is not None:
            current.lists.setdefault(last_key, []).append(line.strip())
            continue
        key, sep, value = line.strip().partition(":")
        if not sep:
            continue
        last_key = key.strip()
        # A value that is a single space (blank serial) must stay distinguishable from absent.
        current.props[last_key] = value[1:] if value.startswith(" ") else value
    return records


def first(records: list[DmiRecord], dmi_type: int) -> DmiRecord | None:
    """The first record of a type (system, baseboard, chassis have one each)."""
    return next((r for r in records if r.type == dmi_type), None)


def of_type(records: list[DmiRecord], dmi_type: int) -> list[DmiRecord]:
    return [r for r in records if r.type == dmi_type]
