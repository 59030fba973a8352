"""What the laptop's own screen asks before its disk is written: the wait for approval, the
countdown a key stops, the stick's typed confirmation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.agent import consent
from provisioner.agent.station import load_config
from provisioner.errors import DeelitError


class FakeScreen:
    """Records what is shown; keys and typed lines come from the test's script."""

    def __init__(self, keys: Iterator[str | None] | None = None,
                 lines: Iterator[str | None] | None = None) -> None:
        self.shown: list[list[str]] = []
        self.keys, self.lines = keys or iter(()), lines or iter(())
        self.waited = 0.0

    def show(self, lines: list[str]) -> None:
        self.shown.append(lines)

    def key(self, timeout: float) -> str | None:
        self.waited += timeout
        return next(self.keys, None)

    def line(self, prompt: str) -> str | None:
        return next(self.lines, None)


WHAT = consent.machine_lines("LENOVO", "20AN", "PF0ABC12", "nvme0n1 256 GB", "B")


def test_an_unknown_machine_waits_until_the_station_answers() -> None:
    answers = iter([OSError("station restarting"), "wait", "wait", "wipe-install"])
    slept: list[float] = []

    def ask() -> str:
        got = next(answers)
        if isinstance(got, Exception):
            raise got
        return got

    screen = FakeScreen()
    assert consent.wait_for_approval(ask, screen, WHAT, every=5, sleep=slept.append) == "wipe-install"
    assert slept == [5, 5, 5]
    text = "\n".join(screen.shown[0])
    assert "WACHT OP GOEDKEURING" in text and "Serienr:   PF0ABC12" in text
    assert "Kwaliteit: B" in text and "nvme0n1 256 GB" in text


def test_countdown_goes_on_unless_a_key_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    times = iter(float(t) for t in range(100))
    monkeypatch.setattr(consent.time, "monotonic", lambda: next(times))
    screen = FakeScreen()
    assert consent.countdown(screen, 5, WHAT, "Deze laptop wordt gewist") is True
    assert screen.shown[0][0] == "DEZE LAPTOP WORDT GEWIST"
    assert any("Druk op een toets om te STOPPEN" in ln for ln in screen.shown[0])
    stopped = FakeScreen(keys=iter([None, " "]))
    assert consent.countdown(stopped, 30, WHAT, "Deze laptop wordt gewist") is False
    assert stopped.shown[-1][0] == "GESTOPT: er is niets gewist."


def test_stick_asks_for_the_serials_last_four() -> None:
    assert consent.confirm_code("PF-0A/BC12", None) == "BC12"
    assert consent.confirm_code(None, "52:54:00:12:34:56") == "3456"
    ask = "Deze laptop wordt gewist"
    assert consent.confirm_on_screen(FakeScreen(lines=iter(["bc12\n"])), "BC12", WHAT, ask)
    assert consent.confirm_on_screen(FakeScreen(lines=iter(["0000\n", "BC12\n"])), "BC12", WHAT, ask)
    assert not consent.confirm_on_screen(FakeScreen(lines=iter(["1\n", "2\n", "3\n", "BC12\n"])),
                                         "BC12", WHAT, ask)
    # a Belgian keyboard's digit row without Shift: what the VM test's keys give on AZERTY
    assert consent.confirm_on_screen(FakeScreen(lines=iter(["b'r\u00e7\n"])), "B4R9", WHAT, ask)
    assert consent.typed("&\u00e9\"'(\u00a7\u00e8!\u00e7\u00e0") == "1234567890"
    assert not consent.confirm_on_screen(FakeScreen(lines=iter(["\n"])), "BC12", WHAT, ask)
    assert not consent.confirm_on_screen(FakeScreen(), "BC12", WHAT, ask)  # nobody can type


def test_agent_settings_for_consent(tmp_path: Path) -> None:
    cfg = load_config("deelit.server=http://10.0.0.2:8080 deelit.action=wait deelit.countdown=15", None)
    assert (cfg.action, cfg.countdown, cfg.batch) == ("wait", 15, False)
    with pytest.raises(DeelitError, match=r"deelit\.countdown='soon'"):
        load_config("deelit.server=http://x deelit.countdown=soon", None)
    (tmp_path / "deelit").mkdir()
    (tmp_path / "deelit" / "station.json").write_text('{"action": "wipe-install", "batch": true}')
    assert load_config("", tmp_path).batch is True
    (tmp_path / "deelit" / "station.json").write_text('{"action": "wipe-install"}')
    assert load_config("", tmp_path).batch is False
