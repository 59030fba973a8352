"""Each machine's own credential: a `machine` token bound to its serial (else MAC), handed out
once, when the station first sends it to be written (approved, or returned per the registry).

Anyone on the LAN can ask the station for any serial's action with the boot token; the first
ask after the decision gets the credential, a second one gets none. A laptop that restarted
mid-way (or an impostor that asked first) is then stopped and shown on the board, and a
volunteer's new approval hands out a fresh one. The station cannot tell a laptop from a machine
on the LAN claiming its serial; this keeps what a leaked credential can do to one device, and
makes a second claimant visible instead of silent.
"""

from __future__ import annotations

import datetime as dt
import threading

from provisioner.registry.access import TokenScope
from provisioner.registry.store import Store

LIFETIME = dt.timedelta(hours=24)  # a slow wipe, then a report that retries


class MachineCredentials:
    def __init__(self, store: Store, station: str, lifetime: dt.timedelta = LIFETIME) -> None:
        self.store, self.station, self.lifetime = store, station, lifetime
        self._lock = threading.Lock()
        self._issued: set[str] = set()

    def issue(self, key: str) -> str | None:
        """A new credential for the machine `key` (serial or MAC), or None if one was already
        handed out for it in this run."""
        key = key.strip().lower()
        with self._lock:
            if key in self._issued:
                return None
            self._issued.add(key)
        return self.store.create_token(
            self.station, scope=TokenScope.machine, machine=key, expires_in=self.lifetime,
            note=f"{self.station}: credential of machine {key}")

    def reset(self, *keys: str | None) -> None:
        """A volunteer approved it (again): its next ask gets a fresh credential."""
        with self._lock:
            self._issued -= {k.strip().lower() for k in keys if k}
