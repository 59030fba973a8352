"""CLI commands of the agent area: `deelit agent inventory|grade|wipe`, registered by cli.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from provisioner.errors import DeelitError

agent = typer.Typer(
    help="On the laptop: inventory, health grade, certified wipe.", no_args_is_help=True
)
out = Console()
err = Console(stderr=True)
GRADE_STYLE = {"A": "bold green", "B": "green", "C": "yellow", "reject": "bold red"}


def register(app: typer.Typer) -> None:
    """Adds `deelit agent …` to the main app."""
    app.add_typer(agent, name="agent")


@agent.command()
def inventory(
    json_out: Annotated[bool, typer.Option("--json", help="print the registry JSON")] = False,
    dmidecode: Annotated[
        Path | None, typer.Option(help="a saved dmidecode dump instead of this machine")
    ] = None,
) -> None:
    """What this laptop is: serials (placeholders flagged), CPU, RAM, disks, NICs, battery."""
    from provisioner.agent.inventory import collect, from_dmidecode_file

    inv = from_dmidecode_file(dmidecode) if dmidecode else collect()
    if json_out:
        print(inv.model_dump_json(indent=2))
        return
    table = Table(show_header=False, box=None)
    serial = inv.serial or "[red]none usable[/]"
    table.add_row("serial", f"{serial} (from {inv.serial_source})")
    if inv.placeholder_fields:
        table.add_row("placeholders", ", ".join(inv.placeholder_fields))
    table.add_row("maker / model", f"{inv.maker} / {inv.model} {inv.model_version or ''}")
    table.add_row("cpu", f"{inv.cpu.model} ({inv.cpu.cores} cores, {inv.cpu.threads} threads)")
    table.add_row("ram", f"{(inv.ram_bytes or 0) / 2**30:.1f} GiB")
    for d in inv.disks:
        table.add_row(
            f"disk {d.name}",
            f"{d.model} {d.serial} {d.size_bytes / 1e9:.0f} GB "
            f"{d.transport or ''} {'rotational' if d.rotational else 'solid-state'}",
        )
    for n in inv.macs:
        table.add_row(f"nic {n.name}", n.mac + ("" if n.permanent else " (not permanent)"))
    for b in inv.batteries:
        table.add_row(f"battery {b.name}", f"{b.health_percent}% of design, cycles {b.cycle_count}")
    out.print(table)


@agent.command()
def grade(
    json_out: Annotated[bool, typer.Option("--json", help="print the grade as JSON")] = False,
    smartctl_json: Annotated[
        list[Path] | None, typer.Option("--smartctl-json", help="saved `smartctl -a -j` report")
    ] = None,
    smartctl_text: Annotated[
        list[Path] | None, typer.Option("--smartctl-text", help="saved `smartctl -a`/`-x` text")
    ] = None,
    dmidecode: Annotated[Path | None, typer.Option(help="saved `dmidecode` output")] = None,
    battery_uevent: Annotated[
        Path | None, typer.Option(help="saved BAT*/uevent (or `upower -i`) output")
    ] = None,
    thresholds: Annotated[
        Path | None, typer.Option(help="grading thresholds YAML (default: the shipped one)")
    ] = None,
) -> None:
    """Grade A/B/C/reject with every reason: this machine, or saved reports."""
    from provisioner.agent import grade_inputs, health
    from provisioner.agent.thresholds import load_thresholds

    rules = load_thresholds(thresholds) if thresholds else load_thresholds()
    saved = bool(smartctl_json or smartctl_text or battery_uevent)
    if saved or dmidecode:
        if dmidecode is None:
            raise DeelitError("grading saved reports needs --dmidecode FILE (RAM, CPU, serials)")
        if not (smartctl_json or smartctl_text):
            raise DeelitError("grading saved reports needs --smartctl-json or --smartctl-text")
        inputs = grade_inputs.collect_saved(
            smartctl_json or [], smartctl_text or [], dmidecode, battery_uevent
        )
    else:
        inputs = grade_inputs.collect_live()
    result = health.grade_device(*inputs, rules)
    if json_out:
        print(result.model_dump_json(indent=2))
    else:
        style = GRADE_STYLE[result.grade]
        out.print(
            f"grade [{style}]{result.grade}[/] for {result.maker} {result.model} "
            f"({result.serial or 'no serial'})"
        )
        for r in result.reasons:
            out.print(f"  [{GRADE_STYLE[r.grade]}]{r.grade:>6}[/]  {r.component}: {r.message}")


@agent.command()
def wipe(
    device: Annotated[str, typer.Argument(help="whole disk to erase, e.g. /dev/nvme0n1")],
    method: Annotated[
        str, typer.Option(help="auto|nvme-sanitize|nvme-format|ata-erase|overwrite")
    ] = "auto",
    verify: Annotated[
        str,
        typer.Option(
            help="sample|full: read back a sample of the overwrite (first and last MiB, 1% "
            "random) or every block (as long again as the pass)"
        ),
    ] = "sample",
    confirm: Annotated[
        str | None, typer.Option(help="token shown by --dry-run for this very disk")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="show the plan and the token, erase nothing")
    ] = False,
    point: Annotated[
        str, typer.Option(envvar="DEELIT_POINT", help="DEEL IT point (certificate organisation)")
    ] = "",
    technician: Annotated[
        str, typer.Option(envvar="DEELIT_TECHNICIAN", help="technician id (an id, not a name)")
    ] = "",
    cert_dir: Annotated[
        Path, typer.Option(envvar="DEELIT_CERT_DIR", help="where certificates are written")
    ] = Path("/var/lib/deelit/certificates"),
    dmidecode: Annotated[
        Path | None, typer.Option(help="saved dmidecode of the laptop (default: this machine)")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    mountinfo: Annotated[Path, typer.Option(hidden=True)] = Path("/proc/self/mountinfo"),
) -> None:
    """Erase a disk (NIST SP 800-88 Purge or Clear), verify, and write the certificate.

    Exit status 0: wiped, result "passed". 2: the wipe ran and its certificate is written,
    but its result is not a pass ("hidden area not erased" or "unconfirmed"): the disk still
    needs a wipe. 1 (or 3, a frozen drive): it failed, no certificate.
    """
    from provisioner.agent import wipe as wiping
    from provisioner.agent.blockdev import Safety
    from provisioner.agent.certificate import Computer
    from provisioner.agent.inventory import collect, from_dmidecode_file

    computer = Computer()
    if not dry_run:
        try:
            inv = from_dmidecode_file(dmidecode) if dmidecode else collect()
            computer = Computer(maker=inv.maker, model=inv.model, serial=inv.serial)
        except DeelitError as exc:
            if dmidecode:
                raise
            err.print(f"[yellow]warning:[/] laptop identity unknown ({exc})", highlight=False)
    request = wiping.WipeRequest(
        device=device,
        method=method,
        verify=verify,
        confirm=confirm,
        dry_run=dry_run,
        cert_dir=cert_dir,
        organisation=point,
        technician_id=technician,
        computer=computer,
    )
    safety = Safety(mountinfo=mountinfo)
    if dry_run or json_out or not os.isatty(1):
        result = wiping.wipe(request, safety=safety)
    else:
        columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        with Progress(*Progress.get_default_columns()[:1], *columns, console=out) as bar:
            task = bar.add_task(f"wiping {device}", total=None)

            def tick(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = wiping.wipe(request, safety=safety, progress=tick)
    if json_out:
        print(result.model_dump_json(indent=2))
        if not result.dry_run and not result.passed:
            raise typer.Exit(2)
        return
    if result.dry_run:
        out.print(f"{device}: would use [bold]{result.method}[/] (NIST {result.nist_category})")
        for line in result.commands + result.hidden_areas:
            out.print(f"  {line}", highlight=False)
        out.print(f"confirmation token: [bold]{result.token}[/]")
        out.print(
            f"erase with: deelit agent wipe {device} --method {method}"
            + (" --verify full" if verify == "full" else "")
            + f" --confirm {result.token}"
        )
        return
    if result.passed:
        out.print(
            f"[bold green]wiped[/] {device} with {result.method} (NIST {result.nist_category})"
        )
    else:
        out.print(
            f"[bold red]NOT A PASS: {result.result}[/] {device} with {result.method}: the "
            "disk still needs a wipe (NIST none)"
        )
        for line in result.errors:
            out.print(f"  {line}", highlight=False)
    if result.hidden_area and result.hidden_area.status != "not applicable":
        out.print(
            f"hidden area: {result.hidden_area.status} ({result.hidden_area.detail})",
            highlight=False,
        )
    if result.drive_report:
        out.print(f"drive: {result.drive_report}", highlight=False)
    if v := result.verification:
        out.print(
            f"verified: {v.scope} read-back, {v.blocks_sampled} of {v.blocks_total} blocks of "
            f"{v.block_size // 1024} KiB, {v.mismatches} failed",
            highlight=False,
        )
    out.print(f"certificate: {result.certificate}\nsha256: {result.certificate_sha256}")
    if not result.passed:
        raise typer.Exit(2)


@agent.command("run")
def run_station(
    cmdline: Annotated[Path, typer.Option(help="kernel command line to read deelit.* from")]
    = Path("/proc/cmdline"),
    no_reboot: Annotated[bool, typer.Option("--no-reboot", help="stay up when done")] = False,
) -> None:
    """The installer's run: inventory, grade, (wipe), install, verify, report, reboot."""
    from provisioner.agent import station

    cfg = station.load_config(cmdline.read_text(), station.find_stick())
    cfg.reboot = cfg.reboot and not no_reboot
    station.run_agent(cfg)
