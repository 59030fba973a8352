"""The agent's run on a laptop: inventory -> grade -> (wipe) -> install -> verify -> report -> reboot.

Settings come from the kernel command line (`deelit.server=`, `deelit.token=`, `deelit.action=`,
optional `deelit.disk=`, `deelit.point=`, `deelit.countdown=`, `deelit.reboot=0`), else from
`deelit/station.json` on the stick (offline USB installs, with the image in `deelit/image/` and
the queue in `deelit/queue/`). Progress goes to the station (best effort); the registry record
is delivered by report.py, also when a step fails after something was done to the disk.

Nothing is written to a disk without consent (consent.py): a machine the station does not know
waits for a volunteer's approval with nothing recorded; a station's laptop shows a countdown
any key stops; the stick asks for the serial's last four characters unless it was prepared
for a batch.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.agent import consent, grade_inputs, health
from provisioner.agent import thresholds as grading
from provisioner.agent import wipe as wiping
from provisioner.agent.blockdev import Safety, confirmation_token, disks_in_use, identify
from provisioner.agent.certificate import Computer
from provisioner.agent.install import FileSource, HttpSource, choose_target, install
from provisioner.agent.inventory import Inventory
from provisioner.agent.report import Outcome, Record, Reporter, device_body
from provisioner.agent.smart import DiskHealth
from provisioner.agent.sysrun import run
from provisioner.errors import DeelitError
from provisioner.formats import manifest as fm

ACTIONS = ("inventory", "wipe-install", "install", "local", "auto", "wait")
# A live stick (live-boot medium), a mounted one, or the installer stick booted as a disk.
STICK_MOUNTS = (Path("/run/live/medium"), Path("/media/deelit"), Path("/"))


@dataclass
class AgentConfig:
    action: str = "auto"
    server: str | None = None
    token: str | None = None
    disk: str | None = None
    point: str | None = None
    reboot: bool = True
    stick: Path | None = None  # the folder holding deelit/ on the USB stick
    countdown: int = 0  # seconds shown before a station's laptop is written (0: none)
    batch: bool = False  # a stick prepared for a batch: no typed confirmation
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def queue_dir(self) -> Path | None:
        return self.stick / "deelit" / "queue" if self.stick else None


def parse_cmdline(text: str) -> dict[str, str]:
    out = {}
    for word in shlex.split(text):
        key, sep, value = word.partition("=")
        if key.startswith("deelit.") and sep:
            out[key.removeprefix("deelit.")] = value
    return out


def find_stick(mounts: tuple[Path, ...] = STICK_MOUNTS) -> Path | None:
    return next((m for m in mounts if (m / "deelit" / "station.json").is_file()), None)


def load_config(cmdline: str, stick: Path | None) -> AgentConfig:
    """Kernel command line first; the stick's station.json fills what it does not say."""
    values = parse_cmdline(cmdline)
    if stick is not None:
        saved = json.loads((stick / "deelit" / "station.json").read_text())
        values = {**{k: str(v) for k, v in saved.items()}, **values}
    cfg = AgentConfig(
        action=values.get("action", "auto"), server=values.get("server") or None,
        token=values.get("token") or None, disk=values.get("disk") or None,
        point=values.get("point") or None, reboot=values.get("reboot", "1") not in ("0", "no"),
        stick=stick, extra=values, batch=values.get("batch", "").lower() in ("1", "true"),
    )
    try:
        cfg.countdown = int(values.get("countdown", "0") or 0)
    except ValueError as exc:
        raise DeelitError(f"deelit.countdown={values['countdown']!r}: a number of seconds") from exc
    if cfg.action not in ACTIONS:
        raise DeelitError(f"deelit.action={cfg.action!r}: not one of {', '.join(ACTIONS)}")
    if cfg.server is None and stick is None:
        raise DeelitError("no deelit.server= on the kernel command line and no stick with "
                          "deelit/station.json: nowhere to get the image or send the record")
    return cfg


class Station:
    """Progress lines to the station's board; failures here never stop the work."""

    def __init__(self, cfg: AgentConfig, log: Callable[[str], None]) -> None:
        self.cfg, self.log, self.key = cfg, log, "unknown"
        self.serial: str | None = None
        # This machine's own credential (registering, intake events), handed out once with an
        # action that may write it; the boot token in cfg only asks and reports progress.
        self.credential: str | None = None

    def progress(self, stage: str, message: str = "", *, percent: float | None = None,
                 asset_tag: str | None = None, facts: Mapping[str, str | None] | None = None
                 ) -> None:
        """`facts`: what the machine is, for the station's card (machine_facts)."""
        self.log(f"[{stage}] {message}" + (f" {percent:.0f}%" if percent is not None else ""))
        if not self.cfg.server or not self.cfg.token:
            return
        body = {"key": self.key, "stage": stage, "message": message[:500], "percent": percent,
                "serial": self.serial, "asset_tag": asset_tag, **(facts or {})}
        req = urllib.request.Request(
            self.cfg.server + "/station/progress", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.cfg.token}"})
        with contextlib.suppress(OSError):  # the board is a convenience; the work goes on
            urllib.request.urlopen(req, timeout=5).close()

    def ask_action(self, serial: str | None, mac: str | None) -> str:
        query = urllib.parse.urlencode({k: v for k, v in (("serial", serial), ("mac", mac)) if v})
        req = urllib.request.Request(f"{self.cfg.server}/station/action?{query}",
                                     headers={"Authorization": f"Bearer {self.cfg.token}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer = json.loads(resp.read())
        if answer.get("credential"):
            self.credential = str(answer["credential"])
        return str(answer["action"])


def _lsblk() -> list[dict[str, object]]:
    rows = json.loads(run(["lsblk", "--json", "-b", "-d", "-o", "NAME,PATH,SIZE,TRAN,RM,TYPE"]).stdout)
    return list(rows.get("blockdevices", []))


def _stick_image(stick: Path) -> FileSource:
    folder = stick / "deelit" / "image"
    images = sorted(folder.glob("*.img.zst")) or sorted(folder.glob("*.img"))
    maps = sorted(folder.glob("*.bmap"))
    if not images or not maps:
        raise DeelitError(f"{folder}: no disk image with its .bmap on the stick")
    return FileSource(images[0], maps[0])


def _build_id(cfg: AgentConfig) -> str | None:
    if cfg.stick is not None and not cfg.server:
        manifest = cfg.stick / "deelit" / "image" / fm.FILENAME
        return fm.read(manifest).build_id if manifest.exists() else None
    with urllib.request.urlopen(f"{cfg.server}/station/image", timeout=30) as resp:
        return str(json.loads(resp.read())["build_id"])


def run_agent(cfg: AgentConfig, *, log: Callable[[str], None] = print,
              safety: Safety | None = None,
              screen: consent.Screen | None = None) -> Outcome | None:
    """One laptop, start to end. Returns the delivery outcome (None when nothing was done:
    'local', refused at the station, stopped at the laptop)."""
    safety = safety or Safety()
    station = Station(cfg, log)
    log(f"[booted] action {cfg.action}; reading SMBIOS, disks, battery")
    inv, disks, batteries = grade_inputs.collect_live()
    station.serial = inv.system_serial
    mac = next((n.mac for n in inv.macs), None)
    station.key = inv.serial or mac or "unknown"  # the station's key: serial, else the MAC
    station.progress("inventory", f"{inv.maker} {inv.model}, {len(inv.disks)} disk(s)")
    action = cfg.action
    if cfg.server:  # the station's word now (and this machine's credential with it)
        action = station.ask_action(inv.system_serial, mac)
    elif action == "auto":
        action = "wipe-install"
    if action == "local":
        station.progress("done", "nothing to do: booting the local disk")
        return None
    station.progress("grade", "checking disk health and battery")
    disks = with_known_sizes(inv, disks)
    grade = health.grade_device(inv, disks, batteries, thresholds(cfg))
    facts = machine_facts(inv, grade, mac)
    station.progress("grade", f"grade {grade.grade}", facts=facts)
    asks = action == "wait" or bool(cfg.server and cfg.countdown) or bool(
        cfg.stick and not cfg.server and not cfg.batch)
    if screen is None and asks:
        from provisioner.agent.screen import VtScreen

        screen = VtScreen(log)
    what = consent.machine_lines(inv.maker, inv.model, inv.serial or inv.system_serial,
                                 disks_text(inv), grade.grade)
    if action == "wait":
        assert screen is not None
        action = consent.wait_for_approval(
            lambda: station.ask_action(inv.system_serial, mac), screen, what,
            shown=lambda: station.progress(
                "waiting", "new to the registry: waits for approval at the station", facts=facts))
        if action not in ACTIONS or action in ("auto", "wait"):
            raise DeelitError(f"the station answered {action!r}: not an action")
        if action == "local":
            screen.show(["GEWEIGERD aan het station: er is niets gewist.",
                         "De laptop start opnieuw van zijn eigen schijf.",
                         "(Refused at the station: nothing was erased.)"])
            station.progress("done", "refused at the station: nothing written or recorded")
            _power(cfg, "reboot")
            return None
        station.progress("grade", f"approved at the station: {action}")
    if cfg.server and station.credential is None:
        station.progress("failed", "no credential for this machine: approve it again")
        raise DeelitError("the station handed this machine's credential out before (a restart, "
                          "or another machine claiming its serial): nothing was written; "
                          "approve it again at the station and restart it")
    if (action in ("wipe-install", "install") and grade.grade != "reject"
            and not _consent(cfg, action, screen, what, inv.serial, mac, station)):
        station.progress("stopped", "stopped at the laptop: nothing written or recorded")
        _power(cfg, "poweroff")
        return None
    if screen is not None:
        end = (("start vanzelf opnieuw", "restarts") if cfg.server
               else ("gaat vanzelf uit: haal dan de stick eruit", "switches off"))
        screen.show(["BEZIG: NIET UITZETTEN", "", *what, "",
                     f"De laptop {end[0]} als hij klaar is.",
                     f"(Working: do not switch off. It {end[1]} by itself when done.)"])
    record = Record(run_id=uuid.uuid4().hex[:20], device=device_body(inv, grade, cfg.point),
                    events=[])
    record.add("inventoried", agent="deelit")
    record.add("graded", grade=record.device["grade"],
               reasons=[f"{r.component}: {r.message}" for r in grade.reasons][:20])
    reporter = Reporter(cfg.server, station.credential or cfg.token, cfg.queue_dir, log=log)
    early = reporter.try_once(Record(run_id=record.run_id, device=record.device,
                                     events=list(record.events)))
    if early is not None:
        station.progress("grade", f"registered as {early.asset_tag}: grade "
                         f"{record.device['grade']}", asset_tag=early.asset_tag)
    failure: Exception | None = None
    try:
        if action in ("wipe-install", "install"):
            if grade.grade == "reject":
                raise DeelitError("graded reject: not imaged (" + "; ".join(
                    r.message for r in grade.reasons if r.grade == "reject") + ")")
            _wipe_and_install(cfg, action, inv_computer(inv), record, station, safety,
                              reporter)
    except Exception as exc:  # the record of what did happen is delivered all the same
        failure = exc
        station.progress("failed", str(exc)[:500])
    station.progress("report", "registering")
    outcome = reporter.deliver(record)
    if failure is not None:
        raise failure if isinstance(failure, DeelitError) else DeelitError(str(failure))
    where = outcome.asset_tag or f"queued at {outcome.queued_at}"
    station.progress("done", f"{where}: {outcome.status or 'queued'}", percent=100.0,
                     asset_tag=outcome.asset_tag)
    if action != "inventory":
        # Offline, the stick would boot again: power off so the volunteer takes it out.
        _power(cfg, "reboot" if cfg.server else "poweroff")
    return outcome


def _power(cfg: AgentConfig, how: str) -> None:
    if cfg.reboot:
        subprocess.run(["systemctl", how], check=False)


def disks_text(inv: Inventory) -> str:
    return ", ".join(f"{d.name} {d.size_bytes / 1e9:.0f} GB" for d in inv.disks)[:300]


def disks_health_text(grade: health.DeviceGrade) -> str:
    """Each graded disk with its health as the grade says it: 'ssd 256 GB: A'."""
    return ", ".join(f"{d.kind} {(d.size_bytes or 0) / 1e9:.0f} GB: {d.grade}"
                     for d in grade.disks)[:300]


def machine_facts(inv: Inventory, grade: health.DeviceGrade, mac: str | None) -> dict[str, str | None]:
    """What the station's card shows of this machine (device data only), short texts."""
    bat = inv.battery
    return {"mac": mac, "maker": (inv.maker or "")[:128] or None,
            "model": (inv.model or "")[:128] or None, "grade": grade.grade,
            "disks": disks_health_text(grade) or disks_text(inv),
            "ram": f"{inv.ram_bytes / (1 << 30):.0f} GiB" if inv.ram_bytes else None,
            "battery": (f"{bat.health_percent:.0f} %" if bat and bat.health_percent is not None
                        else None),
            "reasons": "; ".join(f"{r.component}: {r.message}" for r in grade.reasons)[:500] or None}


def _consent(cfg: AgentConfig, action: str, screen: consent.Screen | None, what: list[str],
             serial: str | None, mac: str | None, station: Station) -> bool:
    """A station's laptop: a countdown any key stops. The stick: the serial's last four
    characters typed, unless it was prepared for a batch."""
    doing = ("Deze laptop wordt gewist en opnieuw ingericht" if action == "wipe-install"
             else "Deze laptop wordt opnieuw ingericht")
    if cfg.server and cfg.countdown > 0:
        assert screen is not None
        station.progress("countdown", f"{action} in {cfg.countdown} s unless stopped at the laptop")
        return consent.countdown(screen, cfg.countdown, what, doing)
    if cfg.stick is not None and not cfg.server and not cfg.batch:
        assert screen is not None
        return consent.confirm_on_screen(screen, consent.confirm_code(serial, mac), what, doing)
    return True


def thresholds(cfg: AgentConfig) -> grading.Thresholds:
    """The point's grading policy when the station or the stick has one, else the shipped one."""
    if cfg.stick is not None and (cfg.stick / "deelit" / "thresholds.yaml").is_file():
        return grading.load_thresholds(cfg.stick / "deelit" / "thresholds.yaml")
    if cfg.server:
        try:
            with urllib.request.urlopen(f"{cfg.server}/station/thresholds.yaml", timeout=30) as r:
                text = r.read()
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise DeelitError(f"the station's grading thresholds: HTTP {exc.code}") from exc
        else:
            with tempfile.NamedTemporaryFile(suffix=".yaml") as f:
                f.write(text)
                f.flush()
                return grading.load_thresholds(Path(f.name))
    return grading.load_thresholds()


def with_known_sizes(inv: Inventory, disks: list[DiskHealth]) -> list[DiskHealth]:
    """Disks without SMART (virtio, some USB bridges) report no capacity there; the kernel
    knows it, and grading must not reject a laptop for a size it cannot read from SMART."""
    sizes = {d.path: d.size_bytes for d in inv.disks}
    return [d if d.size_bytes else d.model_copy(update={"size_bytes": sizes.get(d.source)})
            for d in disks]


def inv_computer(inv: object) -> Computer:
    return Computer(maker=getattr(inv, "maker", None), model=getattr(inv, "model", None),
                    serial=getattr(inv, "serial", None))


def _wipe_and_install(cfg: AgentConfig, action: str, computer: Computer, record: Record,
                      station: Station, safety: Safety, reporter: Reporter) -> None:
    source: HttpSource | FileSource = (HttpSource(cfg.server) if cfg.server
                                       else _stick_image(cfg.stick))  # type: ignore[arg-type]
    build_id = _build_id(cfg)
    image_size = source.block_map().image_size
    target = cfg.disk or choose_target(_lsblk(), image_size, set(disks_in_use(safety)))
    ident = identify(target, safety)
    if action == "wipe-install":
        station.progress("wipe", f"erasing {target}")
        cert_dir = (cfg.stick / "deelit" / "certificates" if cfg.stick
                    else Path("/var/lib/deelit/certificates"))

        wipe_started = time.monotonic()

        def wipe_tick(done: int, total: int) -> None:
            if total and done % (64 << 20) < (4 << 20):
                rate = done / max(time.monotonic() - wipe_started, 1e-3) / 1e6
                station.progress("wipe", f"erasing {target}, {rate:.0f} MB/s",
                                 percent=100 * done / total)

        result = wiping.wipe(wiping.WipeRequest(
            device=target, method="auto", confirm=confirmation_token(ident), cert_dir=cert_dir,
            # The certificate names who erased: the point, and an id (never a person's name).
            organisation=cfg.point or "DEEL IT",
            technician_id=cfg.extra.get("technician") or "deelit-agent",
            computer=computer), safety=safety, progress=wipe_tick)
        text = Path(str(result.certificate)).read_text()
        verdict = str(result.result)
        # The whole certificate goes with the event: the station countersigns and keeps it
        record.add("wiped", certificate_sha256=result.certificate_sha256, method=result.method,
                   nist_category=result.nist_category, tool="deelit agent", result=verdict,
                   verification=(f"read back: {result.verification.scope}"
                                 if result.verification else "-"),
                   disk={"model": ident.model, "serial": ident.serial, "kind": ident.kind},
                   certificate=text)
        # ...and reaches the registry (or the stick's queue) before the disk is written: in
        # netboot mode the certificate file lives in RAM and is gone at the reboot.
        station.progress("wipe", "recording the wipe certificate")
        reporter.deliver(record)
        if not result.passed:
            why = "; ".join(result.errors) or "see the certificate"
            raise DeelitError(f"the wipe of {target} ended '{verdict}', so the disk is not "
                              f"imaged: {why}")
    station.progress("install", f"writing {build_id} to {target}", percent=0.0)
    last = [0.0]

    def tick(done: int, total: int) -> None:
        pct = 100 * done / total
        if pct - last[0] >= 5:
            last[0] = pct
            rate = done / max(time.monotonic() - started, 1e-3) / 1e6
            station.progress("install" if done * 2 <= total else "verify",
                             f"{build_id} -> {target}, {rate:.0f} MB/s", percent=pct)

    started = time.monotonic()
    result_install = install(source, target, safety=safety, progress=tick)
    record.add("imaged", build_id=build_id, device=target, bytes=result_install.bytes_written,
               seconds=round(time.monotonic() - started, 1))
    record.add("verified", build_id=build_id, method="read back, sha256 per mapped range")
    record.add("ready", build_id=build_id)


def main() -> int:
    """Entry point of the installer's systemd unit (python -m provisioner.agent.station)."""
    try:
        cfg = load_config(Path("/proc/cmdline").read_text(), find_stick())
        run_agent(cfg)
        return 0
    except DeelitError as exc:
        print(f"deelit agent: error: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
