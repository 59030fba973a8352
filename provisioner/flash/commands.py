"""CLI of the flash area: `deelit flash`, `deelit flash --list`, `deelit bmap create`."""

from __future__ import annotations

import functools
import json
import os
import stat
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from provisioner.errors import DeelitError
from provisioner.flash import policy, readback, writer
from provisioner.flash.source import Source, open_source
from provisioner.flash.state import FlashResult, TargetState
from provisioner.formats import bmap as bm

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

# rich is imported on first use: `--json` (scripts, the benchmark) never draws anything, and
# importing rich's console, progress and table modules costs a noticeable part of a second
# at start-up on a busy machine.


@functools.cache
def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr)


def _table(title: str) -> Table:
    from rich.table import Table

    return Table(title=title)


def register(app: typer.Typer) -> None:
    """Adds `flash` and the `bmap` sub-app to the main app."""
    app.command("flash")(flash_command)
    bmap_app = typer.Typer(help="Block maps in bmaptool's XML format.", no_args_is_help=True)
    bmap_app.command("create")(bmap_create)
    app.add_typer(bmap_app, name="bmap")


def _size(n: int) -> str:
    from rich import filesize

    return filesize.decimal(n)


def flash_command(
    image: Annotated[Path | None, typer.Argument(help="Raw image or .img.zst")] = None,
    target: Annotated[list[str] | None, typer.Argument(help="Sticks, e.g. /dev/sdb")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before writing")] = False,
    no_verify: Annotated[bool, typer.Option("--no-verify",
                                            help="Skip reading the targets back")] = False,
    bmap: Annotated[Path | None, typer.Option("--bmap", help="Block map (default: beside "
                                              "the image)")] = None,
    to_file: Annotated[bool, typer.Option("--to-file", help="Allow image files as "
                                          "targets")] = False,
    allow_fixed: Annotated[bool, typer.Option("--allow-fixed", help="Allow non-removable "
                                              "disks")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Result as JSON on stdout, no "
                                          "progress")] = False,
    list_: Annotated[bool, typer.Option("--list", help="Show candidate targets")] = False,
    verify_only: Annotated[bool, typer.Option("--verify-only", help="Only compare the "
                                              "targets with the image; write nothing")] = False,
    signers: Annotated[Path | None, typer.Option(
        "--signers", envvar="DEELIT_SIGNERS", help="accept only an image from a build folder "
        "signed by these keys (deelit sign): an OpenSSH public key file or allowed_signers "
        "file; the point's setting")] = None,
) -> None:
    """Write IMAGE to every TARGET at once (only the mapped blocks), then read each back.

    With --signers (or DEELIT_SIGNERS), IMAGE and its map must be files of a build folder
    signed by one of them (SHA256SUMS and SHA256SUMS.sig beside IMAGE)."""
    if list_:
        _list(as_json)
        return
    if image is None or not target:
        raise DeelitError("give an IMAGE and at least one TARGET (see `deelit flash --list`)")
    source = open_source(image, bmap)
    if signers is not None:  # before any target is looked at or written
        _check_signed(source, signers, quiet=as_json)
    if verify_only:
        _verify_only(source, target, as_json)
        return
    try:
        accepted = policy.check(target, image_size=source.bmap.image_size, source=source.path,
                            allow_fixed=allow_fixed, to_file=to_file)
    except policy.TargetRefused as exc:
        if as_json:
            print(json.dumps({"ok": False, "refused": [
                {"target": r.path, "reason": r.reason} for r in exc.refusals]}))
        raise
    if not yes:
        _confirm(source, accepted)
    result = _run(source, accepted, verify=not no_verify, show_progress=not as_json)
    _report(source, result, as_json)


def _check_signed(source: Source, signers: Path, *, quiet: bool) -> None:
    """The image (and the map that says what to write) are listed in the signed SHA256SUMS
    of the build folder they sit in, and that folder is whole."""
    from provisioner.formats import release_signature as rs

    folder = source.path.parent
    names = [source.path.name]
    if source.bmap_path is not None:
        if source.bmap_path.parent.resolve() != folder.resolve():
            raise DeelitError(f"--bmap {source.bmap_path}: not in the signed build folder "
                              f"{folder}; use the map beside the image (leave out --bmap)",
                              exit_code=2)
        names.append(source.bmap_path.name)
    who = rs.check(folder, signers, require=names)
    if not quiet:
        _console(stderr=True).print(who, highlight=False, soft_wrap=True)


def _list(as_json: bool) -> None:
    cands = policy.candidates()
    if as_json:
        print(json.dumps([{"path": str(c.path), "size": c.size, "model": c.model,
                           "serial": c.serial, "transport": c.transport,
                           "removable": c.removable, "read_only": c.read_only,
                           "mountpoints": c.mountpoints, "usable": c.refusal is None,
                           "refusal": c.refusal} for c in cands], indent=2))
        return
    table = _table("Flash targets")
    for col in ("device", "size", "model", "serial", "bus", "usable"):
        table.add_column(col)
    for c in cands:
        usable = "[green]yes[/]" if c.refusal is None else f"[yellow]no[/]: {c.refusal}"
        table.add_row(str(c.path), _size(c.size), c.model or "", c.serial or "",
                      c.transport or "", usable)
    _console().print(table)


def _confirm(source: Source, accepted: list[policy.Target]) -> None:
    table = _table(f"About to write {source.path.name} "
                   f"({_size(source.bmap.mapped_bytes)} mapped) to:")
    table.add_column("target", overflow="fold")  # the whole path, never an ellipsis
    for col in ("model", "serial", "size"):
        table.add_column(col)
    for t in accepted:
        table.add_row(str(t.path), t.model or "", t.serial or "",
                      _size(t.size) if t.size else "new file")
    _console(stderr=True).print(table)
    if not typer.confirm(f"Everything on these {len(accepted)} target(s) will be lost. Write?",
                         default=False, err=True):
        raise DeelitError("cancelled; nothing was written")


def _run(source: Source, accepted: list[policy.Target], *, verify: bool,
         show_progress: bool) -> FlashResult:
    """Runs the flash in a worker thread so this one can draw progress and catch Ctrl-C."""
    cancel = threading.Event()
    box: dict[str, Any] = {}
    started = threading.Event()

    def on_start(states: list[TargetState]) -> None:
        box["states"] = states
        started.set()

    def work() -> None:
        try:
            box["result"] = writer.flash(source, accepted, verify=verify, cancel=cancel,
                                         on_start=on_start)
        except BaseException as exc:  # handed to the main thread
            box["error"] = exc
        finally:
            started.set()

    th = threading.Thread(target=work, name="flash", daemon=True)
    th.start()
    try:
        started.wait()
        if show_progress and "states" in box:
            _progress(box["states"], th)
        th.join()
    except KeyboardInterrupt:
        cancel.set()
        th.join()
        raise DeelitError("interrupted: the targets are incomplete and will not boot; "
                          "flash them again", exit_code=130) from None
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, KeyboardInterrupt):
            raise DeelitError("interrupted: the targets are incomplete; flash them again",
                              exit_code=130)
        raise exc
    result: FlashResult = box["result"]
    return result


def _progress(states: list[TargetState], th: threading.Thread) -> None:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), TextColumn("[cyan]{task.fields[phase]:>7}"),
               BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=_console(stderr=True), transient=False) as progress:
        tasks: list[tuple[TaskID, TargetState]] = [
            (progress.add_task(s.target.label, total=s.total, phase="write"), s)
            for s in states]
        phases = {tid: "write" for tid, _ in tasks}
        while True:
            alive = th.is_alive()
            for tid, s in tasks:
                if s.phase == "verify" and phases[tid] != "verify":
                    progress.reset(tid, total=s.total)  # new phase: fresh speed and ETA
                phases[tid] = s.phase
                done = s.verified if s.phase == "verify" else s.written
                if s.phase == "done":
                    done = s.total
                progress.update(tid, completed=done, phase=s.phase)
            if not alive:
                break
            time.sleep(0.2)


def _state_json(s: TargetState) -> dict[str, Any]:
    t = s.target
    return {"target": str(t.path), "model": t.model, "serial": t.serial, "size": t.size,
            "ok": s.ok, "verified": s.verified_ok, "error": s.error,
            "bytes_written": s.written, "write_seconds": round(s.write_seconds, 3),
            "verify_seconds": round(s.verify_seconds, 3),
            "mismatched_ranges": [f"{a}-{b}" for a, b in s.mismatches]}


def _report(source: Source, result: FlashResult, as_json: bool) -> None:
    """The summary table or the JSON result; exit 1 when any target failed."""
    if as_json:
        print(json.dumps(_result_json(source, result), indent=2))
    else:
        _summary(source, result)
    if not result.ok:
        raise typer.Exit(1)


def _result_json(source: Source, result: FlashResult) -> dict[str, Any]:
    return {"ok": result.ok, "image": str(source.path),
            "bmap": str(source.bmap_path) if source.bmap_path else None,
            "image_size": source.bmap.image_size, "mapped_bytes": source.bmap.mapped_bytes,
            "verified": result.verify, "source_error": result.source_error,
            "targets": [_state_json(s) for s in result.states]}


def _summary(source: Source, result: FlashResult) -> None:
    table = _table(f"{source.path.name}: {_size(source.bmap.mapped_bytes)} mapped of "
                   f"{_size(source.bmap.image_size)}")
    table.add_column("target", overflow="fold")
    for col in ("model", "serial", "result", "write", "verify"):
        table.add_column(col)
    for s in result.states:
        if s.error:
            verdict = f"[red]FAILED[/]: {s.error}"
        elif s.verified_ok:
            verdict = "[green]ok, verified[/]"
        else:
            verdict = "[yellow]written, NOT verified[/]"
        rate = s.written / s.write_seconds / 1e6 if s.write_seconds else 0.0
        table.add_row(str(s.target.path), s.target.model or "", s.target.serial or "",
                      verdict, f"{s.write_seconds:.1f} s ({rate:.0f} MB/s)",
                      f"{s.verify_seconds:.1f} s" if s.verified_ok is not None else "-")
    _console().print(table)
    if result.source_error:
        _console().print(f"[red]source image problem:[/] {result.source_error}")
    if not result.verify:
        _console().print("[yellow]--no-verify: the targets were not read back; they are not "
                  "verified.[/]")


def _verify_only(source: Source, paths: list[str], as_json: bool) -> None:
    accepted = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as exc:
            raise DeelitError(f"{p}: {exc.strerror}") from exc
        if not (stat.S_ISBLK(st.st_mode) or stat.S_ISREG(st.st_mode)):
            raise DeelitError(f"{p} is neither a block device nor a file")
        accepted.append(policy.Target(path=Path(p), is_file=stat.S_ISREG(st.st_mode),
                                  size=st.st_size))
    states = readback.verify(source, accepted)
    result = FlashResult(states, verify=True)
    _report(source, result, as_json)


def bmap_create(
    image: Annotated[Path, typer.Argument(help="Raw (uncompressed) image")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the "
                                                "map ('-': stdout; default: NAME.bmap "
                                                "beside the image)")] = None,
) -> None:
    """Make the block map of a raw image in bmaptool's format (SHA-256 per range)."""
    if image.name.endswith(".zst"):
        raise DeelitError(f"{image} is compressed; make the map from the raw image before "
                          f"compressing it")
    if not image.is_file():
        raise DeelitError(f"image {image} does not exist or is not a regular file")
    block_map = bm.create(image)
    if output is not None and str(output) == "-":
        sys.stdout.write(block_map.to_xml())
        return
    if output is None:
        stem = image.name[:-4] if image.name.endswith(".img") else image.name
        output = image.with_name(stem + ".bmap")
    block_map.write(output)
    pct = 100 * block_map.mapped_bytes / block_map.image_size if block_map.image_size else 0
    _console(stderr=True).print(f"wrote {output}: {len(block_map.ranges)} ranges, "
              f"{_size(block_map.mapped_bytes)} mapped ({pct:.1f} %) of "
              f"{_size(block_map.image_size)}")
