"""CLI of the lab: `deelit demo`, the café played on this machine, registered by cli.py."""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from provisioner.errors import DeelitError

if TYPE_CHECKING:
    from provisioner.lab import session as dm
    from provisioner.lab import watch as wt

err = Console(stderr=True, soft_wrap=True)  # the page URL with its token stays one line


def register(app: typer.Typer) -> None:
    """Adds `deelit demo` to the main app."""
    app.command("demo")(demo)


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (terminal closed) clean up like Ctrl-C does."""
    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def demo(
    firmware: Annotated[str, typer.Option(help="the virtual laptop's firmware: bios (SeaBIOS) "
                                          "or uefi (OVMF)")] = "bios",
    serial: Annotated[str | None, typer.Option(
        help="its SMBIOS serial (default: a made-up DEMO-XXXXXX)")] = None,
    keep: Annotated[bool, typer.Option(
        "--keep", help="when imaged, leave station, page and laptop running (with SSH) "
        "until Ctrl-C")] = False,
    profile: Annotated[str, typer.Option(
        help="the image the station installs (a profile with outputs.disk): pupil, the family "
             "laptop, ends at its first-boot dialog; ci is the quick variant")] = "pupil",
    image: Annotated[Path | None, typer.Option(help="its build folder (default out/PROFILE)")] = None,
    installer: Annotated[Path, typer.Option(
        help="build folder of the installer (built from the installer profile)")] = Path("out/installer"),
    build: Annotated[bool, typer.Option(
        "--build/--no-build", help="build what is missing first (the cache makes a no-change "
        "build about a second)")] = True,
    page_port: Annotated[int, typer.Option(
        help="loopback port for the station page (taken: another one; 0: any)")] = 8080,
    timeout: Annotated[float, typer.Option(help="minutes from power-on to the disk boot")] = 60,
    logs: Annotated[Path, typer.Option(help="where the console, station and router logs are kept")]
        = Path("out/demo"),
    cache: Annotated[Path | None, typer.Option(
        help="build cache (default $DEELIT_CACHE or ~/.cache/deelit)")] = None,
) -> None:
    """The imaging station end to end here: a private café network, `deelit serve`, one
    virtual laptop PXE-booted, wiped, imaged and registered; progress here and on the page."""
    from rich.live import Live

    from provisioner.lab import session as dm
    from provisioner.lab import watch as wt

    fw = dm.check_firmware(firmware)
    the_serial = dm.check_serial(serial) if serial is not None else dm.random_serial()
    limit = dm.check_timeout(timeout)
    port = dm.check_page_port(page_port)
    dm.check_host(fw)
    image_dir = image or Path("out") / profile
    if build:
        _build_for_demo([(profile, image_dir), ("installer", installer)], cache)
    spec = wt.LaptopSpec(serial=the_serial, mac=dm.random_mac(), firmware=fw)
    out = Console(soft_wrap=True, highlight=False)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="deelit-demo-key-") as keydir, \
            Live(console=out, refresh_per_second=2, transient=True) as live, \
            _terminate_as_interrupt():
        pubkey, key = (_ssh_key(Path(keydir)) if keep else (None, None))

        class RichView:
            def line(self, text: str) -> None:
                live.console.print(text, highlight=False, markup=False)

            def update(self, trackers: Sequence[wt.Tracker]) -> None:
                live.update(wt.render(trackers))

        def on_page(session: dm.Session) -> None:
            live.console.print(f"[bold]station page:[/] {session.page_url}", highlight=False)

        def after(session: dm.Session, results: list[wt.Result]) -> None:
            live.update("")
            _print_results(live.console, results)
            if not keep:
                return
            if key is not None:
                try:
                    ssh = session.ssh_port(session.trackers[0], 600)
                    live.console.print(
                        f"SSH: ssh -i {key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                        f"-p {ssh} root@127.0.0.1", highlight=False)
                except DeelitError as exc:
                    live.console.print(f"no SSH to the installed system: {exc}", highlight=False)
            live.console.print(f"kept running: station page {session.page_url}; Ctrl-C stops and "
                               "removes everything", highlight=False)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                live.console.print("stopping…", highlight=False)

        try:
            dm.run([spec], image_dir, installer, view=RichView(), logs=logs.absolute(),
                   page_port=port, ssh_pubkey=pubkey, timeout=limit, on_page=on_page, after=after)
        except KeyboardInterrupt:
            raise DeelitError("interrupted: QEMU, the station, the router and the namespaces are "
                              f"stopped and removed (logs: {logs})", exit_code=130) from None
    err.print(f"done in {wt.clock(time.monotonic() - began)}; everything stopped and removed; "
              f"logs: {logs}", highlight=False)


def _build_for_demo(targets: Sequence[tuple[str, Path]], cache: Path | None) -> None:
    """Each (profile, output folder) through the build area's own entry point, as `deelit
    build` does: from the build cache when nothing changed (about a second each)."""
    from provisioner import profile as profiles
    from provisioner.build import pipeline
    from provisioner.build.cache import Cache

    store = Cache(cache)
    names = " and ".join(name for name, _ in targets)
    with err.status(f"building what is missing ({names})…") as status:
        for name, out in targets:
            prof = profiles.load_profile(name)
            began, ran = time.monotonic(), list[str]()

            def on_step(step: str, seconds: float, cached: bool, profile: str = prof.name,
                        ran: list[str] = ran) -> None:
                if not cached and step != "manifest":  # the manifest is always written fresh
                    ran.append(step)
                    err.print(f"  [green]✓[/] {profile} {step:<10} {seconds:7.1f} s", highlight=False)
                status.update(f"building {profile}: after {step}…")

            pipeline.build(prof, out, store, on_step=on_step)
            what = f"built ({', '.join(ran)})" if ran else "up to date (from the build cache)"
            err.print(f"[green]✓[/] {prof.name}: {what}, {time.monotonic() - began:.1f} s",
                      highlight=False)


def _ssh_key(folder: Path) -> tuple[str | None, Path | None]:
    """A throwaway key for --keep (handed to the laptop as an SMBIOS credential)."""
    key = folder / "id_ed25519"
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deelit-demo", "-f",
                        str(key)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return None, None  # no ssh-keygen: --keep without SSH
    return key.with_suffix(".pub").read_text(), key


def _print_results(console: Console, results: Sequence[wt.Result]) -> None:
    from rich.table import Table

    from provisioner.lab import watch as wt

    for result in results:
        table = Table(box=None, show_header=False, padding=(0, 2))
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for label, value in wt.summary(result):
            table.add_row(label, value)
        console.print(f"[bold green]imaged[/] {result.spec.serial} ({result.spec.firmware}):",
                      highlight=False)
        console.print(table)
