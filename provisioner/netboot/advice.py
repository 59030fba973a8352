"""What a volunteer does about a failed machine, in one sentence, from the agent's message.

The agent's messages are English and exact (a path, a status code); a volunteer at a café
table needs the next step. Known failures get a Dutch sentence with its English beside it;
anything else gets the general one, and the agent's own message stays on the card.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Advice:
    nl: str
    en: str


# (words the agent's message contains, lower case) -> the advice; the first match wins.
_KNOWN: tuple[tuple[tuple[str, ...], Advice], ...] = (
    (("security is frozen",), Advice(
        "ATA-beveiliging bevroren: zet de laptop even in slaap en weer aan, daarna opnieuw.",
        "ATA security frozen: suspend the laptop briefly, wake it, then retry.")),
    (("password attempt counter",), Advice(
        "De schijf weigert na te veel pogingen: zet de laptop helemaal uit en weer aan, daarna "
        "opnieuw.", "The drive locked after too many attempts: power the laptop off and on, "
        "then retry.")),
    (("credential was already handed out", "credential for this machine"), Advice(
        "Deze laptop is herstart of een ander toestel gebruikt hetzelfde serienummer: keur hem "
        "opnieuw goed en start hem opnieuw via het netwerk.",
        "This laptop restarted, or another machine uses its serial: approve it again and "
        "restart it from the network.")),
    (("graded reject",), Advice(
        "Afgekeurd (zie de redenen): niet uitlenen; leg hem apart voor herstel of onderdelen.",
        "Rejected (see the reasons): not for loan; set it aside for repair or parts.")),
    (("no internal disk",), Advice(
        "Geen interne schijf gevonden: controleer of er een schijf in zit en of die in het "
        "BIOS zichtbaar is.", "No internal disk found: check that a disk is fitted and "
        "visible in the BIOS.")),
    (("several internal disks",), Advice(
        "Meerdere interne schijven: laat een technicus kiezen welke gewist wordt.",
        "Several internal disks: a technician chooses which one is erased.")),
    (("arrived corrupted", "range request", "http 5", "timed out", "connection"), Advice(
        "Netwerkfout tijdens het kopiëren: controleer de kabel en probeer opnieuw.",
        "Network error while copying: check the cable and retry.")),
    (("sanitize did not finish",), Advice(
        "De schijf werd niet op tijd gewist: probeer opnieuw; lukt het weer niet, laat een "
        "technicus kijken.", "The drive did not finish erasing in time: retry; if it fails "
        "again, ask a technician.")),
)
GENERAL = Advice("Er ging iets mis: probeer opnieuw; lukt het weer niet, geef de laptop aan een "
                 "technicus met de melding hieronder.",
                 "Something went wrong: retry; if it fails again, give the laptop to a "
                 "technician with the message below.")


def advice(message: str) -> Advice:
    text = message.lower()
    for words, known in _KNOWN:
        if any(w in text for w in words):
            return known
    return GENERAL
