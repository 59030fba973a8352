"""`deelit station …`: a volunteer's commands to the running `deelit serve` on this machine.

serve writes its address to DATA/station-url while it runs; its own token (DATA/station-token,
root only) authorises the calls, so these commands work where serve runs and as its user.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from provisioner.errors import DeelitError

URL_FILE = "station-url"
TOKEN_FILE = "station-token"


@dataclass(frozen=True)
class StationClient:
    base: str
    token: str

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> StationClient:
        url_file, token_file = data_dir / URL_FILE, data_dir / TOKEN_FILE
        if not url_file.is_file():
            raise DeelitError(f"{url_file}: missing, so no deelit serve runs with this data "
                              "folder; start it, or name its folder with --data (DEELIT_DATA)")
        try:
            token = token_file.read_text().strip()
        except PermissionError as exc:
            raise DeelitError(f"{token_file}: only its owner may read it; run this as the user "
                              "that runs deelit serve (root)") from exc
        except FileNotFoundError as exc:
            raise DeelitError(f"{token_file}: missing; start deelit serve first") from exc
        return cls(url_file.read_text().strip(), token)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            resp = httpx.request(method, self.base + path, json=body, timeout=15,
                                 headers={"Authorization": f"Bearer {self.token}"})
        except httpx.HTTPError as exc:
            raise DeelitError(f"the station at {self.base} does not answer ({exc}): is deelit "
                              "serve still running?") from exc
        if resp.status_code == 404:
            raise DeelitError(_detail(resp))
        if resp.status_code >= 400:
            raise DeelitError(f"the station refused ({resp.status_code}): {_detail(resp)}")
        return resp.json()


def _detail(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail")
    except ValueError:
        detail = None
    return str(detail or resp.text[:200])
