"""CLI of the build area: profiles, build, boot, verify and the build cache."""

from __future__ import annotations

import tempfile
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
from provisioner.build import verify_report as vr
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
    # arguments after `--` reach pytest (ctx.args)
    app.command("verify", context_settings={"allow_extra_args": True,
                                            "ignore_unknown_options": True})(verify)
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
    sign: Annotated[Path | None, typer.Option(
        "--sign", help="then sign SHA256SUMS with this OpenSSH key (as `deelit sign`)")] = None,
) -> None:
    """Build an image: bootstrap, configure, finalize, artifacts, manifest."""
    from provisioner.formats import release_signature

    prof = profiles.load_profile(profile)
    if sign is not None:  # before an hour of building, not after
        release_signature.usable_key(sign)
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
    if sign is not None:
        sig = release_signature.sign(target, sign)
        kind, fingerprint = release_signature.signature_key(sig)
        out.print(f"signed: {sig} ({kind} key {fingerprint})", highlight=False)


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
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(
        help="a build folder (out/NAME, or a copy of one), or a profile name (its out/NAME)")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="with a profile name: its build folder")
    ] = None,
    firmware: FirmwareOpt = "bios",
    boot_it: Annotated[bool, typer.Option("--boot/--no-boot", help="also check the booted image")] = True,
    signer: Annotated[Path | None, typer.Option(
        "--signer", help="refuse the build unless SHA256SUMS.sig is by one of these keys (a "
                         "public key file or an OpenSSH allowed_signers file)")] = None,
    junit_xml: Annotated[Path | None, typer.Option(
        "--junit-xml", help="write a JUnit XML report (one test suite per phase)")] = None,
    json_file: Annotated[Path | None, typer.Option(
        "--json", help="write a JSON summary (phases, counts, exit status)")] = None,
) -> None:
    """Check a build's artifacts: files against the manifest, the role suites on the tree
    unpacked from its squashfs, then on its booted disk image (or netboot files). Exit 0:
    all passed; 1: a check failed; 2: unusable input. Arguments after -- go to pytest."""
    outcome = vr.Outcome(target)
    extra = list(ctx.args)
    try:
        with tempfile.TemporaryDirectory(prefix="deelit-verify-report-") as tmp:
            _verify_phases(target, out_dir, _firmware(firmware), boot_it, signer, extra,
                           outcome, Path(tmp))
            vr.write(outcome, junit_xml, json_file)
    except DeelitError as exc:
        outcome.phases.append(vr.Phase("input", exit=vr.UNUSABLE, message=str(exc)))
        vr.write(outcome, junit_xml, json_file)
        raise DeelitError(str(exc), exit_code=vr.UNUSABLE) from None
    for p in outcome.phases:
        out.print(f"  {p.name:24} {'passed' if p.exit == 0 else 'FAILED' if p.exit == 1 else 'unusable'}"
                  f"  ({p.tests} tests, {p.failures} failed, {p.errors} errors, {p.skipped} skipped)",
                  highlight=False)
    raise typer.Exit(outcome.exit)


def _verify_phases(target: str, out_dir: Path | None, firmware: verifier.Firmware,
                   boot_it: bool, signer: Path | None, extra: list[str], outcome: vr.Outcome,
                   tmp: Path) -> None:
    given = Path(target)
    if given.is_dir():
        folder = given.absolute()
    elif "/" in target or target.startswith("."):
        raise DeelitError(f"{target}: no such build folder")
    else:
        folder = (out_dir or Path("out") / profiles.load_profile(target).name).absolute()
    build = verifier.load_build(folder)
    outcome.profile, outcome.build_id = build.profile.name, build.manifest.build_id
    signed = ""
    if signer is not None:
        from provisioner.formats import release_signature

        signed = "; " + release_signature.check(folder, signer, require=[fm.FILENAME])
        out.print(signed[2:], highlight=False)
    outcome.phases.append(vr.Phase("checksums", exit=vr.PASSED, message=(
        f"{len(build.manifest.artifacts)} files as listed{signed}")))
    out.print(f"[bold]verify {build.profile.name}[/] ({build.manifest.build_id}): "
              f"{len(build.manifest.artifacts)} files match {fm.FILENAME}; tree (chroot)",
              highlight=False)
    junit = tmp / "tree.xml"
    code = verifier.verify_tree(build, extra, junit)
    outcome.phases.append(vr.Phase("tree", exit=vr.exit_status(code), junit=junit))
    if boot_it:
        console_log = folder.parent / f"{folder.name}-console.log"
        out.print(f"[bold]verify {build.profile.name}[/]: booted "
                  f"{verifier.boot_artifact(build).name} ({firmware}; console: {console_log})",
                  highlight=False)
        junit = tmp / "booted.xml"
        code = verifier.verify_booted(build, firmware, console_log, extra, junit)
        outcome.phases.append(vr.Phase(f"booted-{firmware}", exit=vr.exit_status(code),
                                       junit=junit))


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
