"""CLI of the netboot area: `deelit serve`, `deelit station` and `deelit stick`, registered by
cli.py."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from provisioner.errors import DeelitError
from provisioner.netboot.config import ACTIONS, StationConfig, default_interface, interface_address
from provisioner.registry.cli_common import DbOpt

if TYPE_CHECKING:
    from provisioner.netboot.station_client import StationClient

err = Console(stderr=True, soft_wrap=True)  # the page URL with its token stays one line


stick_app = typer.Typer(help="The offline installer stick: put the image on, get the queue off.",
                        no_args_is_help=True)


station_app = typer.Typer(help="Approve, refuse and batch-approve machines at the running "
                          "deelit serve on this machine.", no_args_is_help=True)
DataOpt = Annotated[Path | None, typer.Option(
    help="serve's data folder (default $DEELIT_DATA or ~/.local/share/deelit)",
    envvar="DEELIT_DATA")]


def register(app: typer.Typer) -> None:
    """Adds `deelit serve`, `deelit station …` and `deelit stick …` to the main app."""
    app.command("serve")(serve)
    app.add_typer(station_app, name="station")
    app.add_typer(stick_app, name="stick")


def _client(data: Path | None) -> StationClient:
    from provisioner.netboot.station_client import StationClient
    from provisioner.registry.settings import default_data_dir

    return StationClient.from_data_dir(data or default_data_dir())


@station_app.command("waiting")
def station_waiting(data: DataOpt = None) -> None:
    """The machines waiting for approval, and the armed batch."""
    client = _client(data)
    status = client.call("GET", "/station/approvals")
    rows = {r["key"]: r for r in client.call("GET", "/station/machines")}
    batch = status["batch"]
    if batch["armed"]:
        err.print(f"batch approval armed: {_batch_text(batch)}", highlight=False)
    for key in status["waiting"]:
        r = rows.get(key, {})
        print(f"{key}\t{r.get('maker') or '?'} {r.get('model') or '?'}\tgrade "
              f"{r.get('grade') or '?'}\t{r.get('disks') or ''}")
    if not status["waiting"]:
        err.print("no machine is waiting", highlight=False)


KeyArg = Annotated[str | None, typer.Argument(
    help="the machine's serial (or MAC) as the station page shows it, or its asset tag")]
AllOpt = Annotated[bool, typer.Option("--all", help="every machine waiting now")]


@station_app.command("approve")
def station_approve(key: KeyArg = None, all_waiting: AllOpt = False, data: DataOpt = None) -> None:
    """Approve a machine the registry does not know: its disk is then wiped and written."""
    _decide("approve", "approved", key, all_waiting, data)


@station_app.command("refuse")
def station_refuse(key: KeyArg = None, all_waiting: AllOpt = False, data: DataOpt = None) -> None:
    """Refuse a waiting machine: it reboots to its own disk, untouched and unrecorded."""
    _decide("refuse", "refused", key, all_waiting, data)


def _decide(verb: str, done_key: str, key: str | None, all_waiting: bool,
            data: Path | None) -> None:
    if (key is None) == (not all_waiting):
        raise DeelitError("name one machine (its serial or MAC) or give --all, not both")
    done = _client(data).call("POST", f"/station/{verb}",
                              {"key": key} if key else {"all_waiting": True})
    err.print(f"{done_key}: {', '.join(done[done_key]) or 'none was waiting'}", highlight=False)


@station_app.command("batch")
def station_batch(
    approve_for: Annotated[str | None, typer.Option(
        "--for", help="approve every new machine for this long, e.g. 30m, 2h")] = None,
    approve_next: Annotated[int | None, typer.Option(
        "--next", help="approve the next N new machines")] = None,
    off: Annotated[bool, typer.Option("--off", help="end the batch now")] = False,
    data: DataOpt = None,
) -> None:
    """Arm (or end) batch approval: new machines are wiped without asking until it ends."""
    from provisioner.netboot.approvals import check_count, parse_duration

    client = _client(data)
    if off:
        if approve_for or approve_next:
            raise DeelitError("--off ends the batch: give it alone")
        client.call("DELETE", "/station/batch")
        err.print("batch approval ended", highlight=False)
        return
    if approve_for is None and approve_next is None:
        raise DeelitError("give --for 30m, --next 20 (or both), or --off")
    minutes = parse_duration(approve_for).total_seconds() / 60 if approve_for else None
    count = check_count(approve_next) if approve_next is not None else None
    status = client.call("PUT", "/station/batch", {"minutes": minutes, "count": count})
    err.print(f"batch approval armed: {_batch_text(status)}", highlight=False)


def _batch_text(status: dict[str, object]) -> str:
    parts = []
    if status.get("seconds_left") is not None:
        parts.append(f"{int(status['seconds_left']) // 60} min left")  # type: ignore[call-overload]
    if status.get("remaining") is not None:
        parts.append(f"{status['remaining']} machine(s) left")
    return ", ".join(parts)


SignersOpt = Annotated[Path | None, typer.Option(
    help="accept only builds signed by these keys (deelit sign): an OpenSSH public key file or "
         "allowed_signers file; the point's setting", envvar="DEELIT_SIGNERS")]


@stick_app.command("prepare")
def stick_prepare(
    stick: Annotated[Path, typer.Argument(help="stick (or image file) written with the "
                                          "installer-usb disk image by deelit flash")],
    image: Annotated[Path, typer.Option(help="build folder of the target disk image")] = Path("out/pupil"),
    action: Annotated[str, typer.Option(help="wipe-install, install or inventory")] = "wipe-install",
    point: Annotated[str | None, typer.Option(help="DEEL IT point code")] = None,
    thresholds: Annotated[Path | None, typer.Option(
        help="grading thresholds YAML for the agent (default: the shipped one)")] = None,
    batch: Annotated[bool, typer.Option(
        "--batch-no-questions", help="laptops booted from this stick are wiped WITHOUT typing "
        "the serial's last four characters first; label the stick so")] = False,
    signers: SignersOpt = None,
) -> None:
    """Copy the target image and station.json onto the stick, with an empty queue folder.

    A laptop booted from it asks, on its own screen, for its serial's last four characters
    before its disk is wiped or written (unless --batch-no-questions). With --signers (or
    DEELIT_SIGNERS) the image's build folder must be signed by one of them."""
    from provisioner.netboot import usb

    if action not in ("wipe-install", "install", "inventory"):
        raise DeelitError(f"--action: {action!r} is not one of wipe-install, install, inventory")
    if signers is not None:  # before anything is copied onto the stick
        from provisioner.formats import manifest as fm
        from provisioner.formats import release_signature as rs

        disk = [p.name for pattern in ("*.img.zst", "*.bmap") for p in image.glob(pattern)]
        err.print(rs.check(image, signers, require=[fm.FILENAME, *disk]), highlight=False)
    usb.prepare(stick, image, action=action, point=point, thresholds=thresholds, batch=batch)
    err.print(f"{stick}: image from {image}, action {action}", highlight=False)
    if batch:
        err.print("BATCH STICK: every laptop booted from it is wiped without a question. Mark "
                  "it so (a label 'BATCH: WIST ZONDER VRAGEN') and keep it away from other "
                  "machines.", style="bold red", highlight=False)


@stick_app.command("queue")
def stick_queue(
    stick: Annotated[Path, typer.Argument(help="the stick (or its image file)")],
    dest: Annotated[Path, typer.Argument(help="folder to copy deelit/queue into")],
) -> None:
    """Copy the records queued offline off the stick (then: deelit registry import DEST/queue)."""
    from provisioner.netboot import usb

    found = usb.read_queue(stick, dest)
    err.print(f"{len(found)} queued record(s) in {dest / 'queue'}", highlight=False)


def _check_signed(image: Path, installer: Path, signers: Path, *, secure_boot: bool) -> None:
    """Both build folders are signed by a trusted key and whole, and their signed lists cover
    every file serve may hand out: any disk image or map the folder holds, each installer file."""
    from provisioner.formats import manifest as fm
    from provisioner.formats import release_signature as rs
    from provisioner.netboot.dnsmasq import INSTALLER_GRUB_NET, INSTALLER_SHIM
    from provisioner.netboot.http import INSTALLER_FILES

    disk = [p.name for pattern in ("*.img.zst", "*.img", "*.bmap") for p in image.glob(pattern)]
    boot = (INSTALLER_SHIM, INSTALLER_GRUB_NET) if secure_boot else ()
    for folder, names in ((image, [fm.FILENAME, *disk]), (installer, [*INSTALLER_FILES, *boot])):
        err.print(rs.check(folder, signers, require=names), highlight=False)


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
    db: DbOpt = None,
    point: Annotated[str | None, typer.Option(
        help="point code for new asset tags, e.g. MEC", envvar="DEELIT_POINT")] = None,
    approve_for: Annotated[str | None, typer.Option(
        help="approve every machine new to the registry for this long from the start, e.g. 30m "
             "(else each waits for `deelit station approve` or the page)")] = None,
    approve_next: Annotated[int | None, typer.Option(
        help="approve the next N machines new to the registry")] = None,
    countdown: Annotated[int, typer.Option(
        help="seconds a laptop shows what will happen to its disk, any key stopping it")] = 15,
    beside_another_pxe_server: Annotated[bool, typer.Option(
        "--beside-another-pxe-server", help="start although another PXE server answers on the "
        "LAN; then act only on machines approved here (deelit station approve SERIAL, a "
        "batch), known or not, and send every other one to its own disk")] = False,
    signers: SignersOpt = None,
) -> None:
    """PXE station beside the café's router: proxy-DHCP + TFTP (dnsmasq) + HTTP + registry.

    A machine the registry does not know is only inventoried and graded, and waits until a
    volunteer approves it (`deelit station approve`, the page, or --approve-for/--approve-next).
    With --signers (or DEELIT_SIGNERS), both build folders must be signed by one of them.
    """
    from provisioner.netboot import server
    from provisioner.netboot.approvals import check_count, parse_duration
    from provisioner.registry.cli_common import settings
    from provisioner.registry.settings import default_data_dir

    span = parse_duration(approve_for) if approve_for is not None else None
    count = check_count(approve_next) if approve_next is not None else None
    if not 5 <= countdown <= 600:
        raise DeelitError(f"--countdown {countdown}: between 5 and 600 seconds")
    if action not in ACTIONS:
        raise DeelitError(f"--action: {action!r} is not one of {', '.join(ACTIONS)}")
    if uefi not in ("snponly.efi", "ipxe.efi"):
        raise DeelitError(f"--uefi: {uefi!r} is not one of snponly.efi, ipxe.efi")
    if signers is not None:  # before anything starts or is written
        _check_signed(image, installer, signers, secure_boot=secure_boot)
    registry = settings(data or default_data_dir(), db, default_point=point)
    iface = interface or default_interface()
    address, subnet = interface_address(iface)
    cfg = StationConfig(
        interface=iface, server_ip=address, subnet=subnet, http_port=http_port,
        data_dir=(data or default_data_dir()).absolute(), run_dir=server.run_dir(),
        image_dir=image.absolute(), installer_dir=installer.absolute(),
        default_action=action, uefi_binary=uefi, secure_boot=secure_boot,  # type: ignore[arg-type]
        thresholds=thresholds.absolute() if thresholds else None,
        db_url=registry.db_url, point=registry.default_point, countdown=countdown,
        only_approved=beside_another_pxe_server,
    )
    if beside_another_pxe_server:
        err.print("not looking for another PXE server (--beside-another-pxe-server): this "
                  "station acts only on machines approved here", highlight=False)

    from provisioner.formats import signed_certificate as sc

    def ready(token: str) -> None:
        err.print(f"registry: {registry.url.split('@')[-1]}, point {registry.default_point}",
                  highlight=False)
        err.print(f"station on {iface} ({address}, proxy-DHCP for {subnet}); "
                  f"page: {cfg.http_base}/#token={token}", highlight=False)
        key = sc.public_line(sc.load_or_make_key(cfg.data_dir).public_key())
        err.print(f"wipe certificates are countersigned by station key {sc.key_id(key)} "
                  f"(export it: deelit certificate station-key -o station.pub)", highlight=False)
        if span is not None or count is not None:
            err.print("BATCH APPROVAL: machines new to the registry are wiped without asking "
                      f"({approve_for or ''}{' / ' if span and count else ''}"
                      f"{f'next {count}' if count else ''}); end it: deelit station batch --off",
                      highlight=False)
        print("ready", flush=True)

    server.serve(cfg, on_ready=ready, station=station, batch=(span, count))
