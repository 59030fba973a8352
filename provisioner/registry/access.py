"""What a token may do: its scope, and how long it lives.

`station` tokens (the default; every token made before scopes existed is one) may do
everything. `agent` tokens (made by hand for tools that leave the station) may only register a
device and append the intake events the agent sends; nothing that reads the registry, and no
lifecycle event that belongs to people (loaned, returned, repaired, retired).

What a station hands out is narrower. Its `boot` token travels in boot scripts and kernel
command lines that anyone on the network can read: it may ask the station for a machine's
action and report progress (and so inventory and grade) to the station's board, and nothing in
the registry. A machine the station approved (or the registry sends to be wiped) gets its own
`machine` token, bound to its serial or MAC: the agent's rights, for that one device only.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum

from provisioner.registry.errors import Forbidden, Invalid
from provisioner.registry.lifecycle import EventType


class TokenScope(StrEnum):
    station = "station"
    agent = "agent"
    boot = "boot"
    machine = "machine"


# What provisioner/agent/station.py records (Record.add): nothing else may an agent token post.
AGENT_EVENTS = frozenset({EventType.inventoried, EventType.graded, EventType.wiped,
                          EventType.imaged, EventType.verified, EventType.ready})

AGENT_LIMITS = ("an agent token (the one a station hands to the machines it boots) may only "
                "register devices and post the intake events "
                f"({', '.join(sorted(AGENT_EVENTS))})")


BOOT_LIMITS = ("a station's boot token (in every boot script: anyone on the LAN can read it) "
               "may only ask for a machine's action and report progress; registering and "
               "intake events need the machine's own credential (issued when it is approved), "
               "everything else a station token")


def check_event(scope: TokenScope, event: EventType) -> None:
    if scope == TokenScope.boot:
        raise Forbidden(BOOT_LIMITS)
    if scope in (TokenScope.agent, TokenScope.machine) and event not in AGENT_EVENTS:
        raise Forbidden(f"'{event}' needs a station token; {AGENT_LIMITS}")


def check_machine(scope: TokenScope, bound: str | None, serial: str | None,
                  macs: list[str]) -> None:
    """A `machine` token acts for the device with its serial or MAC only; `boot` for none."""
    if scope == TokenScope.boot:
        raise Forbidden(BOOT_LIMITS)
    if scope != TokenScope.machine:
        return
    keys = {k.lower() for k in (serial, *macs) if k}
    if not bound or bound.lower() not in keys:
        raise Forbidden(f"this machine credential is for {bound!r} only, not this device")


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> dt.timedelta:
    """'90s', '30m', '24h', '7d', '2w' -> timedelta (a positive whole number and one unit)."""
    match = _DURATION.match(text.lower())
    if match is None or int(match.group(1)) == 0:
        raise Invalid(f"duration {text!r}: use a positive whole number with s, m, h, d or w, "
                      "e.g. 24h or 30d")
    try:
        return dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError as exc:
        raise Invalid(f"duration {text!r} is too long") from exc
