"""CLI of the netboot area: `deelit serve`, `deelit demo`, `deelit stick`, registered by cli.py."""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from provisioner.errors import DeelitError
from provisioner.netboot.config import ACTIONS, StationConfig, default_interface, interface_address

if TYPE_CHECKING:
    from provisioner.netboot import demo as dm

err = Console(stderr=True, soft_wrap=True)  # the page URL with its token stays one line


stick_app = typer.Typer(help="The offline installer stick: put the image on, get the queue off.",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Adds `deelit serve`, `deelit demo` and `deelit stick …` to the main app."""
    app.command("serve")(serve)
    app.command("demo")(demo)
    app.add_typer(stick_app, name="stick")


@stick_app.command("prepare")
def stick_prepare(
    stick: Annotated[Path, typer.Argument(help="stick (or image file) written with the "
                                          "installer-usb disk image by deelit flash")],
    image: Annotated[Path, typer.Option(help="build folder of the target disk image")] = Path("out/pupil"),
    action: Annotated[str, typer.Option(help="wipe-install, install or inventory")] = "wipe-install",
    point: Annotated[str | None, typer.Option(help="DEEL IT point code")] = None,
    thresholds: Annotated[Path | None, typer.Option(
        help="grading thresholds YAML for the agent (default: the shipped one)")] = None,
) -> None:
    """Copy the target image and station.json onto the stick, with an empty queue folder."""
    from provisioner.netboot import usb

    if action not in ("wipe-install", "install", "inventory"):
        raise DeelitError(f"--action: {action!r} is not one of wipe-install, install, inventory")
    usb.prepare(stick, image, action=action, point=point, thresholds=thresholds)
    err.print(f"{stick}: image from {image}, action {action}", highlight=False)


@stick_app.command("queue")
def stick_queue(
    stick: Annotated[Path, typer.Argument(help="the stick (or its image file)")],
    dest: Annotated[Path, typer.Argument(help="folder to copy deelit/queue into")],
) -> None:
    """Copy the records queued offline off the stick (then: deelit registry import DEST/queue)."""
    from provisioner.netboot import usb

    found = usb.read_queue(stick, dest)
    err.print(f"{len(found)} queued record(s) in {dest / 'queue'}", highlight=False)


def serve(
    interface: Annotated[str | None, typer.Option(
        help="LAN interface (default: the one with the default route)")] = None,
    image: Annotated[Path, typer.Option(
        help="build folder of the target disk image (NAME.img.zst + NAME.bmap)")] = Path("out/pupil"),
    installer: Annotated[Path, typer.Option(
        help="build folder of the installer's netboot artifacts")] = Path("out/installer"),
    data: Annotated[Path | None, typer.Option(
        help="station data: registry, token, actions (default $DEELIT_DATA or ~/.local/share/deelit)",
        envvar="DEELIT_DATA")] = None,
    http_port: Annotated[int, typer.Option(help="HTTP port for scripts, files and the API")] = 8080,
    action: Annotated[str, typer.Option(
        help="default action for machines the registry does not send elsewhere: "
             "inventory, wipe-install, install, local")] = "wipe-install",
    uefi: Annotated[str, typer.Option(help="iPXE for UEFI: snponly.efi (firmware NIC driver) "
                                      "or ipxe.efi")] = "snponly.efi",
    secure_boot: Annotated[bool, typer.Option(
        "--secure-boot", help="UEFI clients get shim -> signed GRUB -> signed kernel")] = False,
    station: Annotated[str | None, typer.Option(help="station name for the token")] = None,
    thresholds: Annotated[Path | None, typer.Option(
        help="grading thresholds YAML for the agents (default: the shipped one)")] = None,
) -> None:
    """PXE station beside the café's router: proxy-DHCP + TFTP (dnsmasq) + HTTP + registry."""
    from provisioner.netboot import server
    from provisioner.registry.settings import default_data_dir

    if action not in ACTIONS:
        raise DeelitError(f"--action: {action!r} is not one of {', '.join(ACTIONS)}")
    if uefi not in ("snponly.efi", "ipxe.efi"):
        raise DeelitError(f"--uefi: {uefi!r} is not one of snponly.efi, ipxe.efi")
    iface = interface or default_interface()
    address, subnet = interface_address(iface)
    cfg = StationConfig(
        interface=iface, server_ip=address, subnet=subnet, http_port=http_port,
        data_dir=(data or default_data_dir()).absolute(), run_dir=server.run_dir(),
        image_dir=image.absolute(), installer_dir=installer.absolute(),
        default_action=action, uefi_binary=uefi, secure_boot=secure_boot,  # type: ignore[arg-type]
        thresholds=thresholds.absolute() if thresholds else None,
    )

    def ready(token: str) -> None:
        err.print(f"station on {iface} ({address}, proxy-DHCP for {subnet}); "
                  f"page: {cfg.http_base}/station#token={token}", highlight=False)
        print("ready", flush=True)

    server.serve(cfg, on_ready=ready, station=station)


def build_profiles(targets: Sequence[tuple[str, Path]], cache: Path | None = None,
                   on_step: Callable[[str, str, float, bool], None] | None = None) -> None:
    """Builds each (profile, output folder) through the normal pipeline, as `deelit build`
    does: from the build cache when nothing changed (about a second each)."""
    from provisioner import profile as profiles
    from provisioner.build import pipeline
    from provisioner.build.cache import Cache

    store = Cache(cache)
    for name, out in targets:
        prof = profiles.load_profile(name)
        ctx = pipeline.prepare(prof, out.absolute(), store)

        def step(step: str, seconds: float, cached: bool, profile: str = prof.name) -> None:
            if on_step:
                on_step(profile, step, seconds, cached)

        pipeline.run(ctx, step)


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
        help="the image the station installs (a profile with outputs.disk)")] = "ci",
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

    from provisioner.netboot import demo as dm

    fw = dm.check_firmware(firmware)
    the_serial = dm.check_serial(serial) if serial is not None else dm.random_serial()
    limit = dm.check_timeout(timeout)
    port = dm.check_page_port(page_port)
    dm.check_host(fw)
    image_dir = image or Path("out") / profile
    if build:
        _build_for_demo([(profile, image_dir), ("installer", installer)], cache)
    spec = dm.LaptopSpec(serial=the_serial, mac=dm.random_mac(), firmware=fw)
    out = Console(soft_wrap=True, highlight=False)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="deelit-demo-key-") as keydir, \
            Live(console=out, refresh_per_second=2, transient=True) as live, \
            _terminate_as_interrupt():
        pubkey, key = (_ssh_key(Path(keydir)) if keep else (None, None))

        class RichView:
            def line(self, text: str) -> None:
                live.console.print(text, highlight=False, markup=False)

            def update(self, trackers: Sequence[dm.Tracker]) -> None:
                live.update(dm.render(trackers))

        def on_page(session: dm.Session) -> None:
            live.console.print(f"[bold]station page:[/] {session.page_url}", highlight=False)

        def after(session: dm.Session, results: list[dm.Result]) -> None:
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
    err.print(f"done in {dm.clock(time.monotonic() - began)}; everything stopped and removed; "
              f"logs: {logs}", highlight=False)


def _build_for_demo(targets: Sequence[tuple[str, Path]], cache: Path | None) -> None:
    began: dict[str, float] = {}
    ran: dict[str, list[str]] = {}

    with err.status("building what is missing (ci with its disk image, installer)…") as status:
        def on_step(profile: str, step: str, seconds: float, cached: bool) -> None:
            began.setdefault(profile, time.monotonic() - seconds)
            if not cached and step != "manifest":  # the manifest is always written fresh
                ran.setdefault(profile, []).append(step)
                err.print(f"  [green]✓[/] {profile} {step:<10} {seconds:7.1f} s", highlight=False)
            status.update(f"building {profile}: after {step}…")
            if step == "manifest":
                took = time.monotonic() - began[profile]
                what = (f"built ({', '.join(ran[profile])})" if ran.get(profile)
                        else "up to date (from the build cache)")
                err.print(f"[green]✓[/] {profile}: {what}, {took:.1f} s", highlight=False)

        build_profiles(targets, cache, on_step)


def _ssh_key(folder: Path) -> tuple[str | None, Path | None]:
    """A throwaway key for --keep (handed to the laptop as an SMBIOS credential)."""
    key = folder / "id_ed25519"
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deelit-demo", "-f",
                        str(key)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return None, None  # no ssh-keygen: --keep without SSH
    return key.with_suffix(".pub").read_text(), key


def _print_results(console: Console, results: Sequence[dm.Result]) -> None:
    from rich.table import Table

    from provisioner.netboot import demo as dm

    for result in results:
        table = Table(box=None, show_header=False, padding=(0, 2))
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for label, value in dm.summary(result):
            table.add_row(label, value)
        console.print(f"[bold green]imaged[/] {result.spec.serial} ({result.spec.firmware}):",
                      highlight=False)
        console.print(table)
