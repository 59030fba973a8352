"""500 concurrent registrations over HTTP against `deelit registry serve` (a real process)."""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

import httpx
import pytest

from provisioner.lab.postgres import RegistryServer
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store


def bodies() -> tuple[list[dict[str, Any]], int]:
    """300 distinct machines (a third with placeholder serials) and 200 repeat registrations."""
    rng = random.Random(6)
    unique: list[dict[str, Any]] = []
    for i in range(200):
        unique.append({"serial": f"PF{i:06d}", "maker": "LENOVO", "model": "ThinkPad T440",
                       "uuid": f"00000000-0000-4000-8000-{i:012d}", "macs": []})
    for i in range(60):  # placeholder serials, identity from the SMBIOS UUID
        unique.append({"serial": "To Be Filled By O.E.M.", "baseboard_serial": "Default string",
                       "uuid": f"aaaaaaaa-0000-4000-8000-{i:012d}", "maker": "ASUS",
                       "model": "X540"})
    for i in range(40):  # placeholder serial and template UUID: identity from the MACs
        unique.append({"serial": "", "baseboard_serial": "MB-1234567890",
                       "uuid": "03000200-0400-0500-0006-000700080009",
                       "macs": [f"02:00:00:00:00:{i:02x}", f"00:1b:21:00:{i // 256:02x}:"
                                f"{i % 256:02x}"], "maker": "TECLAST", "model": "F7S"})
    repeats = []
    for _ in range(200):
        again = dict(rng.choice(unique))
        if again.get("macs"):
            again["macs"] = list(reversed(again["macs"]))  # NIC order must not matter
        if rng.random() < 0.5:
            again["ram_bytes"] = 8 * 2**30  # an inventory update, still the same device
        repeats.append(again)
    allbodies = unique + repeats
    rng.shuffle(allbodies)
    return allbodies, len(unique)


async def _register_all(base: str, token: str, payloads: list[dict[str, Any]]
                        ) -> list[httpx.Response | Exception]:
    limits = httpx.Limits(max_connections=len(payloads), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        return await asyncio.gather(*(client.post("/api/v1/devices", json=p) for p in payloads),
                                    return_exceptions=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_500_concurrent_registrations(settings: Settings) -> None:
    store = Store(settings)
    token = store.create_token("load-test")
    payloads, expected = bodies()
    server = RegistryServer(settings.data_dir, settings.db_url).start()
    try:
        results = asyncio.run(_register_all(server.base, token, payloads))
    finally:
        server.stop()
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    statuses = [r.status_code for r in results if isinstance(r, httpx.Response)]
    assert len(statuses) == 500 and all(s < 500 for s in statuses)
    assert sorted(set(statuses)) == [200, 201]
    assert statuses.count(201) == expected
    assert store.count_devices() == expected
    numbers = sorted(int(re.sub(r"\D", "", d.asset_tag)) for d in store.list_devices(limit=1000))
    assert numbers == list(range(1, expected + 1))  # no tag twice, none skipped
    store.close()
