"""Exports for the loan systems: Lend Engine item import, Snipe-IT REST, CSV/JSON, ORDS."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from provisioner.errors import DeelitError
from provisioner.registry.schemas import DeviceOut, EventOut

# Lend Engine's item importer accepts exactly these columns; any other aborts the import.
LENDENGINE_COLUMNS = (
    "Code", "Name", "Short description", "Long description", "Components",
    "Care information", "Serial", "Condition", "Category", "Brand", "Price paid", "Value",
    "Loan fee", "Loan period", "Keywords", "Reservable",
)


@dataclass
class LendEngineOptions:
    category: str = "Laptop"
    # grade -> a condition name defined in the point's Lend Engine; without a mapping the
    # Condition column is left out, since a name Lend Engine does not know fails the import.
    conditions: Mapping[str, str] = field(default_factory=dict)
    loan_period: int | None = None
    components: str = "laptop, charger"
    reservable: bool = True


def _gib(n: int | None) -> str | None:
    return f"{round(n / 2**30)} GB" if n else None


def _summary(d: DeviceOut) -> str:
    disk = sum(int(x.get("size_bytes") or 0) for x in d.disks)
    parts = [d.cpu, f"RAM {_gib(d.ram_bytes)}" if d.ram_bytes else None,
             f"disk {round(disk / 1e9)} GB" if disk else None,
             f"grade {d.grade}" if d.grade else None]
    return ", ".join(p for p in parts if p)


def _clean(text: str | None) -> str:
    # Tabs and newlines would break the tab-separated rows.
    return " ".join((text or "").split())


def lendengine_tsv(devices: Iterable[DeviceOut], opts: LendEngineOptions) -> str:
    columns = [c for c in LENDENGINE_COLUMNS
               if (c != "Condition" or opts.conditions) and (c != "Loan period"
                                                             or opts.loan_period is not None)]
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(columns)
    for d in devices:
        if opts.conditions and d.grade not in opts.conditions:
            raise DeelitError(f"{d.asset_tag}: grade {d.grade!r} has no Lend Engine condition; "
                              "add --condition GRADE=NAME for it")
        row: dict[str, str] = {
            "Code": d.asset_tag,
            "Name": _clean(" ".join(p for p in (d.maker, d.model) if p) or "Laptop"),
            "Short description": _clean(_summary(d)),
            "Long description": "",
            "Components": opts.components,
            "Care information": "",
            "Serial": "" if d.serial_placeholder else _clean(d.serial),
            "Condition": opts.conditions.get(d.grade or "", ""),
            "Category": opts.category,
            "Brand": _clean(d.maker),
            "Price paid": "",
            "Value": "",
            "Loan fee": "",
            "Loan period": str(opts.loan_period) if opts.loan_period is not None else "",
            "Keywords": _clean(f"deelit {d.point} {d.grade or ''}"),
            "Reservable": "yes" if opts.reservable else "no",
        }
        writer.writerow([row[c] for c in columns])
    return buf.getvalue()


FLAT_COLUMNS = ("asset_tag", "point", "status", "grade", "maker", "model", "serial",
                "serial_placeholder", "baseboard_serial", "uuid", "identity_source", "macs",
                "cpu", "ram_bytes", "disk_bytes", "battery_health_percent", "batch_date",
                "updated_at")


def devices_csv(devices: Iterable[DeviceOut]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(FLAT_COLUMNS)
    for d in devices:
        flat = d.model_dump(mode="json")
        flat["macs"] = " ".join(d.macs)
        flat["disk_bytes"] = sum(int(x.get("size_bytes") or 0) for x in d.disks)
        flat["battery_health_percent"] = (d.battery or {}).get("health_percent")
        writer.writerow(["" if flat.get(c) is None else flat[c] for c in FLAT_COLUMNS])
    return buf.getvalue()


def devices_json(devices: Iterable[DeviceOut]) -> str:
    return json.dumps([d.model_dump(mode="json") for d in devices], indent=1) + "\n"


# Open Repair Data Standard 0.3: one row per repair outcome, no personal data.
ORDS_COLUMNS = ("id", "data_provider", "country", "partner_product_category", "product_category",
                "brand", "year_of_manufacture", "product_age", "repair_status",
                "repair_barrier_if_end_of_life", "group_identifier", "problem", "event_date",
                "record_date")
_ORDS_STATUS = {"unknown": 0, "fixed": 1, "repairable": 2, "end of life": 3}


def ords_csv(rows: Iterable[tuple[DeviceOut, EventOut]], data_provider: str = "DEEL IT") -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(ORDS_COLUMNS)
    for d, e in rows:
        if e.type == "retired":
            status = _ORDS_STATUS["end of life"]
        else:
            status = _ORDS_STATUS.get(str(e.details.get("repair_status", "fixed")).lower(), 0)
        writer.writerow([
            f"{d.asset_tag}-{e.uid[:12]}", data_provider, "BEL", "Laptop", "Laptop",
            d.maker or "", e.details.get("year_of_manufacture", ""), "", status,
            e.details.get("barrier", "") if status == 3 else "", d.point,
            _clean(str(e.details.get("problem", ""))), e.at.date().isoformat(),
            e.recorded_at.date().isoformat(),
        ])
    return buf.getvalue()


# -- Snipe-IT ------------------------------------------------------------------------------


@dataclass
class SnipeReport:
    created: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def _snipe_json(resp: httpx.Response, what: str) -> Any:
    if resp.status_code in (401, 403):
        raise DeelitError(f"Snipe-IT refused the token ({resp.status_code}); create an API key "
                          "for a user allowed to create assets and pass it with --token-file")
    if resp.status_code == 404:
        return None
    if resp.status_code >= 400:
        raise DeelitError(f"Snipe-IT answered {resp.status_code} to {what}")
    try:
        return resp.json()
    except ValueError as exc:
        raise DeelitError(f"Snipe-IT's answer to {what} is not JSON; is --url the Snipe-IT "
                          "base address?") from exc


def _exists(client: httpx.Client, d: DeviceOut) -> bool:
    if d.serial and not d.serial_placeholder:
        found = _snipe_json(client.get(f"/api/v1/hardware/byserial/{quote(d.serial, safe='')}"),
                            f"the lookup of serial {d.serial}")
        if found and int(found.get("total") or 0) > 0:
            return True
    found = _snipe_json(client.get(f"/api/v1/hardware/bytag/{quote(d.asset_tag, safe='')}"),
                        f"the lookup of tag {d.asset_tag}")
    return bool(found and found.get("id"))


def sync_snipeit(devices: Sequence[DeviceOut], *, url: str, token: str, model_id: int,
                 status_id: int, transport: httpx.BaseTransport | None = None) -> SnipeReport:
    """Creates in Snipe-IT every device it does not know yet (by serial, then asset tag)."""
    report = SnipeReport()
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30,
                      transport=transport) as client:
        for d in devices:
            try:
                if _exists(client, d):
                    report.present.append(d.asset_tag)
                    continue
                body = {"asset_tag": d.asset_tag, "status_id": status_id, "model_id": model_id,
                        "name": " ".join(p for p in (d.maker, d.model) if p) or d.asset_tag,
                        "notes": _summary(d)}
                if d.serial and not d.serial_placeholder:
                    body["serial"] = d.serial
                answer = _snipe_json(client.post("/api/v1/hardware", json=body),
                                     f"creating {d.asset_tag}")
            except httpx.HTTPError as exc:
                raise DeelitError(f"cannot reach Snipe-IT at {url}: {exc}") from exc
            # Snipe-IT reports validation errors with HTTP 200 and status "error".
            if not answer or answer.get("status") != "success":
                messages = (answer or {}).get("messages", "no answer")
                report.failed.append((d.asset_tag, json.dumps(messages)))
            else:
                report.created.append(d.asset_tag)
    return report
