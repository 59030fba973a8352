"""Before a disk is written: the approval an unknown machine waits for, the countdown a person
at the laptop can stop, and the stick's typed confirmation.

What the laptop's own screen says is Dutch first (the volunteers' and families' language),
with one English line. `Screen` is what draws and reads keys (screen.py on a laptop; a fake
in the tests).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Protocol

WAIT_EVERY = 5.0  # seconds between two asks to the station while a machine waits


class Screen(Protocol):
    def show(self, lines: list[str]) -> None: ...

    def key(self, timeout: float) -> str | None:
        """One key pressed within `timeout` seconds, else None."""

    def line(self, prompt: str) -> str | None:
        """A typed line (None when nobody can type: no keyboard, no console)."""


def machine_lines(maker: str | None, model: str | None, serial: str | None,
                  disks: str, grade: str | None) -> list[str]:
    return [f"Merk:      {maker or '?'}",
            f"Model:     {model or '?'}",
            f"Serienr:   {serial or 'geen (onbekend)'}",
            f"Schijven:  {disks or 'geen'}",
            f"Kwaliteit: {grade or '?'}"]


def wait_for_approval(ask: Callable[[], str], screen: Screen, what: list[str], *,
                      shown: Callable[[], None] = lambda: None, every: float = WAIT_EVERY,
                      sleep: Callable[[float], None] = time.sleep) -> str:
    """Shows what this machine is and that nothing happens to it until a volunteer approves
    it at the station (then calls `shown`: the station lists it as waiting); asks the station
    until it says something else than "wait"."""
    screen.show(["DEZE LAPTOP WACHT OP GOEDKEURING", "", *what, "",
                 "Er wordt niets gewist of bewaard tot een",
                 "vrijwilliger hem goedkeurt aan het station.",
                 "Niet de bedoeling? Zet de laptop gewoon uit.",
                 "(Waiting for approval at the station: nothing is",
                 " erased or recorded until then.)"])
    shown()
    while True:
        try:
            action = ask()
        except OSError:
            action = "wait"  # the station restarting: keep waiting, keep asking
        if action != "wait":
            return action
        sleep(every)


def countdown(screen: Screen, seconds: int, what: list[str], doing: str) -> bool:
    """`doing` starts in `seconds` unless a key is pressed: True to go on, False if stopped."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        screen.show([doing.upper(), "", *what, "",
                     f"Dit begint over {int(left + 0.999)} seconden.",
                     "Druk op een toets om te STOPPEN.",
                     "(Starts in a moment: press any key to stop.)"])
        if screen.key(min(1.0, left)) is not None:
            screen.show(["GESTOPT: er is niets gewist.", "De laptop gaat uit.",
                         "(Stopped: nothing was erased.)"])
            return False
    return True


# The digit row of a Belgian (AZERTY) keyboard without Shift, as most laptops here have: the
# unshifted keys count as the digits, so a volunteer who forgets Shift is not refused.
AZERTY_DIGITS = str.maketrans("&é\"'(§è!çà", "1234567890")


def typed(answer: str) -> str:
    return answer.strip().translate(AZERTY_DIGITS).upper()


def confirm_code(serial: str | None, mac: str | None) -> str:
    """The last four letters or digits of the serial (else of the MAC) a person types."""
    text = re.sub(r"[^0-9A-Za-z]", "", serial or mac or "")
    return text[-4:].upper()


def confirm_on_screen(screen: Screen, code: str, what: list[str], doing: str,
                      attempts: int = 3) -> bool:
    """The stick's question: type `code` (shown on the screen) to go on."""
    for attempt in range(attempts):
        screen.show([doing.upper(), "", *what, "",
                     f"Typ de laatste vier tekens van het serienummer ({code})",
                     "en druk op Enter om te beginnen. Alleen Enter: stoppen.",
                     "(Type the serial's last four characters to go on.)",
                     *(["Dat klopte niet: nog eens."] if attempt else [])])
        answer = screen.line("> ")
        if answer is None:
            return False
        if typed(answer) == code:
            return True
        if not answer.strip():
            return False
    return False
