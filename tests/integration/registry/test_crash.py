"""SIGKILL the registry during a stream of registrations: every 2xx answer survives."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from provisioner.lab.postgres import RegistryServer
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_loses_no_acknowledged_registration(settings: Settings) -> None:
    store = Store(settings)
    token = store.create_token("crash-test")
    store.close()
    server = RegistryServer(settings.data_dir, settings.db_url).start()
    acked: dict[str, str] = {}  # serial -> asset tag answered with 2xx
    failures: list[str] = []
    server_errors: list[int] = []
    lock = threading.Lock()

    def stream(worker: int) -> None:
        with httpx.Client(base_url=server.base, timeout=10,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            for i in range(500):  # bounded; the kill comes long before the end
                serial = f"CR{worker}{i:05d}"
                try:
                    r = client.post("/api/v1/devices", json={"serial": serial, "maker": "HP"})
                except httpx.HTTPError as exc:
                    failures.append(type(exc).__name__)
                    return
                with lock:
                    if 200 <= r.status_code < 300:
                        acked[serial] = r.json()["asset_tag"]
                    elif r.status_code >= 500:
                        server_errors.append(r.status_code)

    threads = [threading.Thread(target=stream, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 150 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill()
    for t in threads:
        t.join(timeout=30)
    assert len(acked) >= 150, "the stream never got going"
    assert failures, "the kill did not interrupt the stream"
    assert server_errors == []

    restarted = RegistryServer(settings.data_dir, settings.db_url).start()
    try:
        with httpx.Client(base_url=restarted.base, timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            stored = {d["serial"]: d["asset_tag"]
                      for d in client.get("/api/v1/devices", params={"limit": 1000}).json()}
            # the restarted server takes registrations again, continuing the numbering
            new = client.post("/api/v1/devices", json={"serial": "AFTER-CRASH", "maker": "HP"})
    finally:
        restarted.stop()
    missing = {s: t for s, t in acked.items() if stored.get(s) != t}
    assert missing == {}
    assert new.status_code == 201 and new.json()["asset_tag"] not in stored.values()
