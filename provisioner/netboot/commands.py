"""CLI of the netboot area: `deelit serve` and `deelit stick`, registered by cli.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from provisioner.errors import DeelitError
from provisioner.netboot.config import ACTIONS, StationConfig, default_interface, interface_address
from provisioner.registry.cli_common import DbOpt

err = Console(stderr=True, soft_wrap=True)  # the page URL with its token stays one line


stick_app = typer.Typer(help="The offline installer stick: put the image on, get the queue off.",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Adds `deelit serve` and `deelit stick …` to the main app."""
    app.command("serve")(serve)
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
    db: DbOpt = None,
    point: Annotated[str | None, typer.Option(
        help="point code for new asset tags, e.g. MEC", envvar="DEELIT_POINT")] = None,
) -> None:
    """PXE station beside the café's router: proxy-DHCP + TFTP (dnsmasq) + HTTP + registry."""
    from provisioner.netboot import server
    from provisioner.registry.cli_common import settings
    from provisioner.registry.settings import default_data_dir

    if action not in ACTIONS:
        raise DeelitError(f"--action: {action!r} is not one of {', '.join(ACTIONS)}")
    if uefi not in ("snponly.efi", "ipxe.efi"):
        raise DeelitError(f"--uefi: {uefi!r} is not one of snponly.efi, ipxe.efi")
    registry = settings(data or default_data_dir(), db, default_point=point)
    iface = interface or default_interface()
    address, subnet = interface_address(iface)
    cfg = StationConfig(
        interface=iface, server_ip=address, subnet=subnet, http_port=http_port,
        data_dir=(data or default_data_dir()).absolute(), run_dir=server.run_dir(),
        image_dir=image.absolute(), installer_dir=installer.absolute(),
        default_action=action, uefi_binary=uefi, secure_boot=secure_boot,  # type: ignore[arg-type]
        thresholds=thresholds.absolute() if thresholds else None,
        db_url=registry.db_url, point=registry.default_point,
    )

    def ready(token: str) -> None:
        err.print(f"registry: {registry.url.split('@')[-1]}, point {registry.default_point}",
                  highlight=False)
        err.print(f"station on {iface} ({address}, proxy-DHCP for {subnet}); "
                  f"page: {cfg.http_base}/station#token={token}", highlight=False)
        print("ready", flush=True)

    server.serve(cfg, on_ready=ready, station=station)
