"""A device's status follows from its events; this module says which event may follow which.

Two kinds of events: those that move the device to a new stage (status = that event's name),
and notes (inventoried, graded) that update data without changing the stage. A `returned`
device carries the previous family's data: until a `wiped` event, nothing that leads back
to a family (imaged, verified, ready, loaned) is accepted.
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    registered = "registered"
    inventoried = "inventoried"
    graded = "graded"
    wiped = "wiped"
    imaged = "imaged"
    verified = "verified"
    ready = "ready"
    loaned = "loaned"
    returned = "returned"
    repaired = "repaired"
    retired = "retired"


NOTES = frozenset({EventType.inventoried, EventType.graded})

_ANY_WORKSHOP = {EventType.wiped, EventType.repaired, EventType.retired}

# current status -> stage events allowed next
TRANSITIONS: dict[EventType, frozenset[EventType]] = {
    EventType.registered: frozenset(_ANY_WORKSHOP | {EventType.imaged}),
    EventType.wiped: frozenset(_ANY_WORKSHOP | {EventType.imaged}),
    EventType.imaged: frozenset(_ANY_WORKSHOP | {EventType.imaged, EventType.verified}),
    EventType.verified: frozenset(_ANY_WORKSHOP | {EventType.imaged, EventType.ready}),
    EventType.ready: frozenset(_ANY_WORKSHOP | {EventType.imaged, EventType.loaned}),
    EventType.loaned: frozenset({EventType.returned}),
    EventType.returned: frozenset(_ANY_WORKSHOP),
    EventType.repaired: frozenset(_ANY_WORKSHOP | {EventType.imaged, EventType.ready}),
    EventType.retired: frozenset(),
}

# Stages that must not be reached while a returned device is still unwiped.
_NEEDS_CLEAN = frozenset({EventType.imaged, EventType.verified, EventType.ready, EventType.loaned})


class TransitionError(ValueError):
    """An event that the device's current status does not allow."""


def check(status: EventType, needs_wipe: bool, event: EventType) -> tuple[EventType, bool]:
    """Returns (new status, new needs_wipe) after `event`, or raises TransitionError."""
    if event is EventType.registered:
        raise TransitionError("'registered' is recorded by POST /devices, not as an event")
    if status is EventType.retired:
        raise TransitionError("the device is retired; no further events are accepted")
    if event in NOTES:
        if status is EventType.loaned:
            raise TransitionError(f"the device is on loan; record 'returned' before '{event}'")
        return status, needs_wipe
    if event not in TRANSITIONS[status]:
        allowed = ", ".join(sorted(TRANSITIONS[status] | NOTES)) or "nothing"
        raise TransitionError(f"'{status}' cannot be followed by '{event}' (allowed: {allowed})")
    if needs_wipe and event in _NEEDS_CLEAN:
        raise TransitionError(
            f"the device was returned and not wiped since; record 'wiped' before '{event}'"
        )
    if event is EventType.returned:
        needs_wipe = True
    elif event is EventType.wiped:
        needs_wipe = False
    return event, needs_wipe
