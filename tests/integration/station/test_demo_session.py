"""`deelit demo`'s sess without a laptop: the café comes up in namespaces, the station page
answers on loopback with its token, and everything is gone afterwards, also after an error."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from provisioner.formats import manifest as fm
from provisioner.lab import session

pytestmark = [pytest.mark.root, pytest.mark.slow]


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_session_serves_the_page_on_loopback_and_cleans_up(tmp_path: Path, ci_out: Path,
                                                           installer_out: Path) -> None:
    before = namespaces()
    lines: list[str] = []

    class Collect(session.PrintView):
        def line(self, text: str) -> None:
            lines.append(text)

    with session.Session(ci_out, installer_out, view=Collect(), logs=tmp_path / "logs") as sess:
        assert sess.lan is not None and sess.station is not None
        made = {sess.lan.router_ns, sess.lan.station_ns, sess.lan.lan_ns}
        assert made <= namespaces() - before
        base = f"http://127.0.0.1:{sess.page_port}"
        assert sess.page_url == f"{base}/#token={sess.token}"
        login = httpx.get(f"{base}/", timeout=10)  # the cockpit: its login view, no data
        assert login.status_code == 401 and 'action="/ui/login"' in login.text
        assert httpx.get(f"{base}/station/machines", timeout=10).status_code == 401
        assert sess.board() == []  # no laptop yet, but the token is accepted
        assert httpx.get(f"{base}/station/image", timeout=10).json()["build_id"] == (
            fm.read(ci_out / fm.FILENAME).build_id)
        lan_dir, station = sess.lan.dir, sess.station
    assert not (made & namespaces()) and not lan_dir.exists() and not station.alive()
    assert (tmp_path / "logs" / "station.log").is_file() and (tmp_path / "logs" / "router.log").is_file()
    assert lines and "starting the café" in lines[0]


def test_session_cleans_up_after_an_error_and_a_taken_page_port(tmp_path: Path, ci_out: Path,
                                                                installer_out: Path) -> None:
    made: set[str] = set()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="boom"), session.Session(
                ci_out, installer_out, view=session.PrintView(), page_port=busy) as sess:
            assert sess.lan is not None
            made = {sess.lan.router_ns, sess.lan.station_ns, sess.lan.lan_ns}
            assert sess.page_port not in (0, busy)  # another port, said in a line
            raise RuntimeError("boom")
    assert made and not (made & namespaces())
