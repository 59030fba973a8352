"""1,000 registrations over HTTP against `deelit registry serve`, on SQLite and PostgreSQL.

Goal (issue 6, kept by issue 20): 1,000 registrations in at most 10 s on SQLite with
`synchronous=FULL` (an acknowledged event survives a power cut). Baseline in the same run:
SQLite with `synchronous=NORMAL` (what the registry used before), so the cost of FULL prints
as a ratio. Prints time, requests/s and time/goal (below 1.0 meets it). PostgreSQL runs in a
throwaway cluster with its default durability (fsync on).
Run: .venv/bin/python bench/registry.py [--concurrency N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from provisioner.lab.postgres import PgCluster, RegistryServer
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store

GOAL_S = 10.0
N = 1000


def body(i: int) -> dict[str, object]:
    # one in five has a placeholder serial, as at a real intake table
    serial = "To Be Filled By O.E.M." if i % 5 == 0 else f"BENCH{i:06d}"
    return {"serial": serial, "baseboard_serial": "Default string",
            "uuid": f"bbbbbbbb-0000-4000-8000-{i:012d}", "macs": [f"00:1b:21:00:{i // 256:02x}:"
                                                                f"{i % 256:02x}"],
            "maker": "LENOVO", "model": "ThinkPad T440", "cpu": "Intel Core i5-4300U",
            "ram_bytes": 8 * 2**30, "disks": [{"size_bytes": 256 * 10**9, "kind": "ssd"}],
            "grade": "B"}


def run(label: str, data: Path, db: str | None, concurrency: int,
        synchronous: str = "FULL") -> float:
    os.environ["DEELIT_SQLITE_SYNCHRONOUS"] = synchronous  # read by the server it starts
    store = Store(Settings(data_dir=data, db_url=db))
    token = store.create_token("bench")
    server = RegistryServer(data, db).start()
    try:
        local = threading_local_client(server.base, token)
        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            statuses = list(pool.map(lambda i: local().post("/api/v1/devices",
                                                            json=body(i)).status_code, range(N)))
        elapsed = time.perf_counter() - start
    finally:
        server.stop()
    bad = [s for s in statuses if s != 201]
    count = store.count_devices()
    store.close()
    if bad or count != N:
        raise SystemExit(f"{label}: {len(bad)} non-201 answers, {count} devices stored")
    print(f"{label:13} {N} registrations in {elapsed:6.2f} s  {N / elapsed:7.1f} req/s  "
          f"time/goal {elapsed / GOAL_S:.2f} (goal <= {GOAL_S:.0f} s on SQLite)")
    return elapsed


def threading_local_client(base: str, token: str):  # type: ignore[no-untyped-def]
    import threading

    local = threading.local()

    def get() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base, timeout=60,
                                        headers={"Authorization": f"Bearer {token}"})
        return local.client  # type: ignore[no-any-return]

    return get


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="deelit-bench-"))
    try:
        normal = run("sqlite-NORMAL", tmp / "sqlite-normal", None, args.concurrency, "NORMAL")
        full = run("sqlite-FULL", tmp / "sqlite", None, args.concurrency)
        print(f"synchronous=FULL / NORMAL (baseline): {full / normal:.2f}")
        cluster = PgCluster(durable=True).start()
        try:
            run("postgresql", tmp / "pg", cluster.create_database(), args.concurrency)
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
