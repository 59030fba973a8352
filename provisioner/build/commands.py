"""CLI of the build area: profiles, build, boot, verify and the build cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from provisioner import profile as profiles
from provisioner.build import pipeline
from provisioner.build import verify as verifier
from provisioner.build.artifacts.disk import parse_size
from provisioner.build.cache import Cache
from provisioner.build.context import BuildContext
from provisioner.errors import DeelitError
from provisioner.formats import manifest as fm
from provisioner.vm import VM, VMSpec

err = Console(stderr=True)
out = Console(soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Adds profiles, show, build, boot, verify and the `cache` sub-app to the main app."""
    app.command("profiles")(list_profiles)
    app.command("show")(show)
    app.command("build")(build)
    app.command("boot")(boot)
    app.command("verify")(verify)
    cache_app = typer.Typer(help="Inspect and prune the build cache.", no_args_is_help=True)
    cache_app.command("list")(cache_list)
    cache_app.command("prune")(cache_prune)
    app.add_typer(cache_app, name="cache")


CacheOpt = Annotated[
    Path | None, typer.Option("--cache", help="cache folder (default $DEELIT_CACHE or ~/.cache/deelit)")
]


def list_profiles() -> None:
    """List the profiles in images/."""
    for name in profiles.list_profiles():
        prof = profiles.load_profile(name)
        out.print(f"[bold]{name:<12}[/] {escape(prof.description)}", highlight=False)


def show(profile: Annotated[str, typer.Argument(help="profile name or YAML path")]) -> None:
    """Print the resolved profile (after `extends`), as YAML."""
    prof = profiles.load_profile(profile)
    out.print(yaml.safe_dump(prof.model_dump(mode="json"), sort_keys=False), highlight=False,
              markup=False)


def build(
    profile: Annotated[str, typer.Argument(help="profile name in images/ or a YAML path")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="output folder (default out/PROFILE)")] = None,
    cache: CacheOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="stream mmdebstrap and Ansible")] = False,
) -> None:
    """Build an image: bootstrap, configure, finalize, artifacts, manifest."""
    prof = profiles.load_profile(profile)
    target = out_dir or Path("out") / prof.name

    seen: list[BuildContext] = []

    def prepared(ctx: BuildContext) -> None:
        seen.append(ctx)
        out.print(f"building [bold]{prof.name}[/] -> {target}  (log: {ctx.log})", highlight=False)

    with err.status("building…") as status:
        def on_step(name: str, seconds: float, cached: bool) -> None:
            note = " [dim](cached)[/]" if cached else ""
            layers = seen[0].cached_layers if seen else []
            if name == "configure" and not cached and layers:
                note = f" [dim]({len(layers)} of {len(prof.roles)} role layers cached)[/]"
            out.print(f"  [green]✓[/] {name:<10} {seconds:7.1f} s{note}", highlight=False)
            status.update(f"after {name}…")
        pipeline.build(prof, target, Cache(cache), verbose=verbose, on_prepared=prepared,
                       on_step=on_step)
    manifest = fm.read(target / fm.FILENAME)
    out.print(f"[bold]{manifest.build_id}[/]: {len(manifest.packages)} packages", highlight=False)
    for art in manifest.artifacts:
        out.print(f"  {art.name:<24} {art.size / 1e6:9.1f} MB  {art.sha256[:16]}", highlight=False)


FirmwareOpt = Annotated[
    str, typer.Option("--firmware", help="bios (SeaBIOS), uefi (OVMF), uefi-secureboot")
]


def _firmware(value: str) -> verifier.Firmware:
    if value not in ("bios", "uefi", "uefi-secureboot"):
        raise DeelitError(f"--firmware: '{value}' is not one of bios, uefi, uefi-secureboot")
    return value  # type: ignore[return-value]


def boot(
    artifact_dir: Annotated[Path, typer.Argument(
        help="a build's output folder (e.g. out/ci) or a disk image (NAME.img.zst or raw)")],
    firmware: FirmwareOpt = "bios",
    media: Annotated[str, typer.Option(help="http (live-boot fetch=) or local (a disk)")] = "http",
    memory: Annotated[int, typer.Option(help="MiB of RAM")] = 2048,
    ssh_port: Annotated[int | None, typer.Option(help="host port forwarded to the guest's 22")] = None,
    ssh_key: Annotated[Path | None, typer.Option(help="public key handed over as boot credential")] = None,
    serial: Annotated[str | None, typer.Option(help="SMBIOS system serial of the virtual laptop")] = None,
    accel: Annotated[str, typer.Option(help="tcg (works everywhere) or kvm")] = "tcg",
    disk: Annotated[bool, typer.Option(
        "--disk", help="boot the folder's disk image (NAME.img.zst) instead of netboot")] = False,
    disk_size: Annotated[str | None, typer.Option(
        help="virtual disk size for a disk image, e.g. 20GiB (default: the image's)")] = None,
) -> None:
    """Boot an artifact in QEMU with the serial console on this terminal (Ctrl-a x quits).

    A disk image boots as a fresh virtual laptop (a qcow2 overlay): the artifact never changes.
    """
    if media not in ("http", "local"):
        raise DeelitError(f"--media: '{media}' is not one of http, local")
    artifact = _disk_image(artifact_dir) if disk else artifact_dir
    size = None
    if disk_size is not None:
        try:
            size = parse_size(disk_size)
        except ValueError as exc:
            raise DeelitError(f"--disk-size: {exc}") from None
    spec = VMSpec(
        artifact=artifact, firmware=_firmware(firmware), media=media,  # type: ignore[arg-type]
        disk_size=size,
        memory_mib=memory, ssh_port=ssh_port, accel=accel, smbios_serial=serial,
        ssh_pubkey=ssh_key.read_text() if ssh_key else None,
    )
    with VM(spec) as vm:
        err.print(f"SSH: ssh -p {vm.ssh_port} root@127.0.0.1  (quit QEMU: Ctrl-a x)")
        raise typer.Exit(vm.wait())


def _disk_image(folder: Path) -> Path:
    if folder.is_file():
        return folder
    found = sorted(folder.glob("*.img.zst"))
    if len(found) != 1:
        raise DeelitError(f"{folder}: --disk needs exactly one NAME.img.zst there (found "
                          f"{len(found)}); build a profile with outputs.disk, or name the image")
    return found[0]


def verify(
    profile: Annotated[str, typer.Argument(help="profile name in images/ or a YAML path")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="the build's folder (default out/PROFILE)")
    ] = None,
    cache: CacheOpt = None,
    firmware: FirmwareOpt = "bios",
    boot_it: Annotated[bool, typer.Option("--boot/--no-boot", help="also check the booted image")] = True,
) -> None:
    """Run the profile's testinfra suites on the built tree, then on the booted image."""
    prof = profiles.load_profile(profile)
    folder = (out_dir or Path("out") / prof.name).absolute()
    out.print(f"[bold]verify {prof.name}[/]: built tree (chroot)", highlight=False)
    code = verifier.verify_tree(prof, folder, Cache(cache))
    if boot_it:
        console_log = folder.parent / f"{folder.name}-console.log"
        out.print(f"[bold]verify {prof.name}[/]: booted ({firmware}; console: {console_log})",
                  highlight=False)
        code = verifier.verify_booted(prof, folder, _firmware(firmware), console_log) or code
    raise typer.Exit(code)


def cache_list(cache: CacheOpt = None) -> None:
    """List cache entries: kind, key, profile, size, last use."""
    import datetime as dt

    table = Table("kind", "key", "profile", "size", "last used")
    for entry in Cache(cache).entries():
        used = dt.datetime.fromtimestamp(entry.last_used).strftime("%Y-%m-%d %H:%M")
        table.add_row(entry.kind, entry.key[:16], str(entry.meta.get("profile", "")),
                      f"{entry.size / 1e6:.0f} MB", used)
    out.print(table)


def cache_prune(
    cache: CacheOpt = None,
    older_than: Annotated[float | None, typer.Option(help="only entries unused this many days")] = None,
) -> None:
    """Remove cache entries (all, or those unused for --older-than days)."""
    removed = Cache(cache).prune(older_than)
    out.print(f"removed {len(removed)} entries")
