"""The station's HTTP service: iPXE scripts, installer and image files, progress, and the
registry API mounted beside them (one port for everything a laptop needs).

The boot scripts carry a boot token (anyone on the network can fetch them): with it a machine
may ask for its action and report progress. Registering and intake events need the machine's
own credential (credentials.py), handed out with its action once it may be written. What the
station page reads and does (the board, approvals, labels, the registry) needs the station token.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from provisioner.netboot import scripts
from provisioner.netboot.approvals import Approvals
from provisioner.netboot.board import Board, StationDesk
from provisioner.netboot.config import StationConfig
from provisioner.netboot.credentials import MachineCredentials
from provisioner.netboot.images import PreparedImage
from provisioner.registry.access import AGENT_LIMITS, TokenScope
from provisioner.registry.api import BodyLimit
from provisioner.registry.api import create_app as registry_app
from provisioner.registry.errors import NotFound
from provisioner.registry.schemas import NO_NUL
from provisioner.registry.session import presented_token
from provisioner.registry.store import Store
from provisioner.registry.tokens import Caller

INSTALLER_FILES = ("vmlinuz", "initrd.img", "filesystem.squashfs")
IMAGE_FILES = ("disk.img", "disk.bmap", "manifest.json")
STAGES = ("pxe", "booted", "inventory", "grade", "waiting", "countdown", "wipe", "install",
          "verify", "report", "done", "failed", "stopped")


# A machine whose card says it is finished keeps that card when it reboots to its own disk.
FINAL_STAGES = ("done", "refused", "stopped")


class ProgressIn(BaseModel):
    key: str = Field(max_length=128, pattern=NO_NUL)
    stage: str = Field(pattern="^(" + "|".join(STAGES) + ")$")
    percent: float | None = Field(default=None, ge=0, le=100)
    message: str = Field(default="", max_length=500, pattern=NO_NUL)
    serial: str | None = Field(default=None, max_length=128)
    asset_tag: str | None = Field(default=None, max_length=64)
    # What a waiting machine is, for the volunteer who approves it (device data only).
    mac: str | None = Field(default=None, max_length=64, pattern=NO_NUL)
    maker: str | None = Field(default=None, max_length=128, pattern=NO_NUL)
    model: str | None = Field(default=None, max_length=128, pattern=NO_NUL)
    grade: str | None = Field(default=None, pattern="^(A|B|C|reject)$")
    disks: str | None = Field(default=None, max_length=300, pattern=NO_NUL)
    ram: str | None = Field(default=None, max_length=32, pattern=NO_NUL)
    battery: str | None = Field(default=None, max_length=64, pattern=NO_NUL)
    reasons: str | None = Field(default=None, max_length=500, pattern=NO_NUL)  # the grade's


class ApprovalIn(BaseModel):
    """One machine by the key the board shows (serial, else MAC), or every waiting one."""

    key: str | None = Field(default=None, min_length=1, max_length=128, pattern=NO_NUL)
    all_waiting: bool = False


class BatchIn(BaseModel):
    minutes: float | None = Field(default=None, gt=0, le=720)
    count: int | None = Field(default=None, gt=0, le=500)


_bearer = HTTPBearer(auto_error=False)


def create_app(cfg: StationConfig, image: PreparedImage | None,
               token: str | Callable[[], str], store: Store | None = None,
               approvals: Approvals | None = None, station: str = "deelit-station") -> FastAPI:
    """`token`: the boot token the boot scripts hand to machines (or what gives the current
    one: serve renews it). Never the station's own token. `station`: the name on the machine
    credentials it issues."""
    store = store or Store(cfg.registry_settings())
    agent_token: Callable[[], str] = token if callable(token) else (lambda: token)
    book = scripts.ActionBook(cfg.data_dir / "actions.json")
    board = Board()
    approvals = approvals or Approvals()
    credentials = MachineCredentials(store, station)
    desk = StationDesk(board, approvals, credentials, store, cfg.default_action)
    app = FastAPI(title="deelit station", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_bytes=cfg.registry_settings().max_body_bytes)
    app.state.board = board
    app.state.approvals = approvals
    app.state.desk = desk

    def caller(request: Request,
               creds: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> Caller:
        token = presented_token(request, creds)  # the page's session cookie, or a bearer token
        who = store.authenticate(token) if token else None
        if who is None:
            raise HTTPException(401, "a valid token is needed",
                                headers={"WWW-Authenticate": "Bearer"})
        return who

    def station_caller(who: Annotated[Caller, Depends(caller)]) -> Caller:
        _station_only(who, "the station board")
        return who

    Auth = Annotated[Caller, Depends(caller)]  # the station's or an agent's token
    StationAuth = Annotated[Caller, Depends(station_caller)]  # the station's own token

    @app.get("/boot.ipxe", response_class=PlainTextResponse)
    def boot_ipxe(serial: Annotated[str | None, Query(max_length=128)] = None,
                  mac: Annotated[str | None, Query(max_length=64)] = None,
                  uuid: Annotated[str | None, Query(max_length=64)] = None,
                  platform: Annotated[str | None, Query(max_length=16)] = None) -> str:
        if serial is None and mac is None:
            return scripts.chain_script(cfg)
        machine = scripts.Machine.from_query(serial, mac, uuid, platform)
        decision = scripts.decide(machine, cfg.default_action, book, store, approvals,
                                   only_approved=cfg.only_approved)
        row = board.find(machine.key)
        if decision.action == "local" and row is not None and row.stage in FINAL_STAGES:
            board.update(machine.key, message=decision.reason)  # done: now it boots its disk
        else:
            board.update(machine.key, stage="pxe", action=decision.action, serial=machine.serial,
                         mac=machine.mac, message=decision.reason)
        return scripts.machine_script(cfg, machine, decision, agent_token())

    @app.get("/station/action")
    def action(who: Auth, serial: Annotated[str | None, Query(max_length=128)] = None,
               mac: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, Any]:
        """The machine's action; with one that registers it (or writes its disk), its own
        credential, the first time only (credentials.py)."""
        machine = scripts.Machine.from_query(serial, mac, None, None)
        decision = scripts.decide(machine, cfg.default_action, book, store, approvals,
                                   only_approved=cfg.only_approved)
        out: dict[str, Any] = {"key": machine.key, "action": decision.action,
                               "reason": decision.reason}
        if decision.action in ("wipe-install", "install", "inventory") and machine.key != "unknown":
            out["credential"] = credentials.issue(machine.key)
            if out["credential"] is None:
                board.update(machine.key, stage="failed", message=(
                    "its credential was already handed out: if this laptop restarted, approve "
                    "it again at the station; if not, another machine claims its serial"))
        return out

    @app.post("/station/progress", status_code=204)
    def progress(body: ProgressIn, who: Auth) -> None:
        board.update(body.key, **body.model_dump(exclude={"key"}))

    @app.get("/station/machines")
    def machines(who: StationAuth) -> list[dict[str, Any]]:
        """The board: every machine this station run has seen, with a failure's advice."""
        return desk.machines()

    @app.get("/station/today")
    def today(who: StationAuth) -> dict[str, int]:
        """Today's counters: ready, busy, waiting, failed, rejected."""
        return desk.counts()

    @app.get("/station/approvals")
    def approval_status(who: StationAuth) -> dict[str, Any]:
        """The armed batch (if any) and the machines waiting for a volunteer."""
        return {"batch": desk.batch(), "waiting": [m.key for m in board.waiting()]}

    @app.post("/station/approve")
    def approve(body: ApprovalIn, who: StationAuth) -> dict[str, Any]:
        """Approve one machine by the key the board shows, its asset tag, or a serial off its
        sticker before it boots; or every waiting one. Its disk is wiped and written when it
        next asks (within seconds), as the registry's rules say for a machine it knows."""
        _one_or_all(body)
        return {"approved": desk.approve_all() if body.all_waiting else desk.approve(body.key or "")}

    @app.post("/station/refuse")
    def refuse(body: ApprovalIn, who: StationAuth) -> dict[str, Any]:
        """Refuse: the machine reboots to its own disk and is never written by this run. A
        machine already at work is left alone (the answer lists nothing)."""
        _one_or_all(body)
        if body.all_waiting:
            return {"refused": [k for m in board.waiting() for k in desk.refuse(m.key)]}
        try:
            return {"refused": desk.refuse(body.key or "")}
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from exc

    @app.post("/station/retry")
    def retry(body: ApprovalIn, who: StationAuth) -> dict[str, Any]:
        """A failed machine, approved again: restarted from the network, it starts over."""
        if body.key is None or body.all_waiting:
            raise HTTPException(422, "name one machine (key)")
        try:
            return {"retried": [body.key] if desk.retry(body.key) else []}
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from exc

    @app.put("/station/batch")
    def arm_batch(body: BatchIn, who: StationAuth) -> dict[str, Any]:
        if body.minutes is None and body.count is None:
            raise HTTPException(422, "give minutes, count or both")
        return desk.arm(body.minutes, body.count)

    @app.delete("/station/batch")
    def disarm_batch(who: StationAuth) -> dict[str, Any]:
        return desk.disarm()

    @app.get("/station/image")
    def image_info() -> dict[str, Any]:
        if image is None:
            raise HTTPException(404, "this station serves no disk image")
        return {"build_id": image.build_id, "profile": image.profile, "size": image.size,
                "mapped_bytes": image.mapped_bytes}

    @app.get("/station/thresholds.yaml")
    def grading_thresholds() -> FileResponse:
        if cfg.thresholds is None:
            raise HTTPException(404, "the agents use the shipped grading thresholds")
        return _file(cfg.thresholds)

    @app.get("/installer/{name}")
    def installer_file(name: str) -> FileResponse:
        if name not in INSTALLER_FILES:
            raise HTTPException(404, f"not an installer file: {name}")
        return _file(cfg.installer_dir / name)

    @app.get("/image/{name}")
    def image_file(name: str) -> FileResponse:
        if image is None or name not in IMAGE_FILES:
            raise HTTPException(404, f"not an image file: {name}")
        return _file(image.folder / name)

    @app.get("/station", include_in_schema=False)
    def page() -> RedirectResponse:
        # the cockpit is the page now; a browser keeps the #token fragment across this redirect
        return RedirectResponse("/", status_code=307)

    registry = registry_app(cfg.registry_settings(), store=store, panel=desk)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(who: StationAuth) -> dict[str, Any]:
        """The station's routes and the registry's beside them, for a station token only."""
        spec = app.openapi()
        other = registry.openapi()
        spec["paths"] = {**other.get("paths", {}), **spec.get("paths", {})}
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(other.get("components", {}).get("schemas", {}))
        return spec

    app.mount("/", registry)
    return app


def _one_or_all(body: ApprovalIn) -> None:
    if body.all_waiting == (body.key is not None):
        raise HTTPException(422, "name one machine (key) or all_waiting, not both")


def _station_only(who: Caller, what: str) -> None:
    if who.scope != TokenScope.station:
        raise HTTPException(403, f"{what} needs the station token; {AGENT_LIMITS}")


class ArtifactResponse(FileResponse):
    """A FileResponse that reads 1 MiB per step instead of Starlette's 64 KiB.

    Every step is a hop to a worker thread and back; with 8 laptops fetching the installer
    at once those hops, not the disk, bound the station (see `bench/station.py`).
    """

    chunk_size = 1 << 20


def _file(path: Path) -> FileResponse:
    if not path.is_file():
        raise HTTPException(404, f"{path.name} is missing at the station")
    # FileResponse answers Range requests (206) itself: agents fetch only the mapped blocks.
    return ArtifactResponse(path, media_type="application/octet-stream")
