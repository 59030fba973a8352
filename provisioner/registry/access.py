"""What a token may do: its scope, and how long it lives.

`station` tokens (the default; every token made before scopes existed is one) may do
everything. `agent` tokens are what a station hands to the machines it boots: they travel in
boot scripts and kernel command lines that anyone on the network can read, so they may only
register a device and append the intake events the agent sends; nothing that reads the
registry, and no lifecycle event that belongs to people (loaned, returned, repaired, retired).
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


# What provisioner/agent/station.py records (Record.add): nothing else may an agent token post.
AGENT_EVENTS = frozenset({EventType.inventoried, EventType.graded, EventType.wiped,
                          EventType.imaged, EventType.verified, EventType.ready})

AGENT_LIMITS = ("an agent token (the one a station hands to the machines it boots) may only "
                "register devices and post the intake events "
                f"({', '.join(sorted(AGENT_EVENTS))})")


def check_event(scope: TokenScope, event: EventType) -> None:
    if scope == TokenScope.agent and event not in AGENT_EVENTS:
        raise Forbidden(f"'{event}' needs a station token; {AGENT_LIMITS}")


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
