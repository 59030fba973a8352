"""Which events may follow which; a returned device must be wiped before it goes out again."""

from __future__ import annotations

import pytest

from provisioner.registry.lifecycle import EventType as E
from provisioner.registry.lifecycle import TransitionError, check


def run(*events: E) -> tuple[E, bool]:
    status, dirty = E.registered, False
    for ev in events:
        status, dirty = check(status, dirty, ev)
    return status, dirty


def test_full_circle() -> None:
    assert run(E.graded, E.wiped, E.imaged, E.verified, E.ready, E.loaned, E.returned,
               E.wiped, E.imaged, E.verified, E.ready) == (E.ready, False)


@pytest.mark.parametrize("after_return", [E.imaged, E.ready, E.loaned, E.verified])
def test_returned_device_needs_a_wipe(after_return: E) -> None:
    with pytest.raises(TransitionError):
        run(E.imaged, E.verified, E.ready, E.loaned, E.returned, after_return)


def test_repair_after_return_keeps_the_wipe_requirement() -> None:
    status, dirty = run(E.imaged, E.verified, E.ready, E.loaned, E.returned, E.repaired)
    assert dirty
    with pytest.raises(TransitionError, match="wiped"):
        check(status, dirty, E.imaged)


def test_notes_do_not_change_status() -> None:
    assert run(E.imaged, E.graded, E.inventoried) == (E.imaged, False)


@pytest.mark.parametrize(("events", "bad"), [
    ((E.imaged, E.verified, E.ready, E.loaned), E.imaged),
    ((E.imaged, E.verified, E.ready, E.loaned), E.graded),
    ((), E.verified),
    ((), E.ready),
    ((E.retired,), E.wiped),
    ((E.retired,), E.graded),
    ((), E.registered),
    ((), E.returned),
])
def test_illegal(events: tuple[E, ...], bad: E) -> None:
    status, dirty = run(*events)
    with pytest.raises(TransitionError):
        check(status, dirty, bad)
