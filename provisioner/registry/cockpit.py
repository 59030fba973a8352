"""The volunteer's cockpit: one web app to run a café day from.

Server-rendered Jinja pages; htmx (vendored, web/vendor/) swaps the parts that change, and a
server-sent event stream (/ui/events) tells the page when they did: no polling. A station adds
its board of machines through the StationPanel protocol (netboot/board.py implements it); a
point without a station (`deelit registry serve`) gets the same pages without the board.

Every action here is one the JSON API also has (the station's /station/* routes, the
registry's /api/v1/*): the page calls the same code, never a path of its own.
"""

# No `from __future__ import annotations` here: FastAPI reads these annotations at runtime.
import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from provisioner.registry.access import TokenScope
from provisioner.registry.cockpit_text import TEXT
from provisioner.registry.errors import Conflict, NotFound, RegistryError
from provisioner.registry.lifecycle import EventType
from provisioner.registry.schemas import NO_NUL, EventIn
from provisioner.registry.session import close_session, open_session, presented_token
from provisioner.registry.store import Store
from provisioner.registry.tokens import Caller

LANG_COOKIE = "deelit_lang"
STATUS_CHANGES = (EventType.loaned, EventType.returned, EventType.repaired, EventType.retired)
STREAM_EVERY = 0.5  # seconds between looks at the board and the registry for the live stream
HEARTBEAT = 15.0  # seconds: a comment line keeps proxies and the browser from timing out


class StationPanel(Protocol):
    """What a station adds to the cockpit: its board of machines and a volunteer's actions."""

    @property
    def version(self) -> int: ...
    def machines(self) -> list[dict[str, Any]]: ...
    def batch(self) -> dict[str, Any]: ...
    def counts(self) -> dict[str, int]: ...
    def approve(self, key: str) -> list[str]: ...
    def approve_all(self) -> list[str]: ...
    def refuse(self, key: str) -> list[str]: ...
    def retry(self, key: str) -> bool: ...
    def arm(self, minutes: float | None, count: int | None) -> dict[str, Any]: ...
    def disarm(self) -> dict[str, Any]: ...


templates = Environment(loader=PackageLoader("provisioner.registry", "web/templates"),
                        autoescape=select_autoescape(default=True), trim_blocks=True,
                        lstrip_blocks=True)


def _since(iso: str | None, now: dt.datetime) -> str:
    """'3 min', '1 u 05' from an ISO time to now."""
    if not iso:
        return "-"
    seconds = max(0, int((now - dt.datetime.fromisoformat(iso)).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} u {seconds % 3600 // 60:02d}"


def _time_left(row: dict[str, Any], now: dt.datetime) -> str | None:
    """From the current stage's start and its percentage: the rest at the same pace."""
    percent, since = row.get("percent"), row.get("stage_since")
    if not percent or percent >= 100 or not since:
        return None
    spent = (now - dt.datetime.fromisoformat(since)).total_seconds()
    return _since((now - dt.timedelta(seconds=spent * (100 - percent) / percent)).isoformat(),
                  now) if spent >= 10 else None  # too early to tell


def _size(n: int | None) -> str:
    if not n:
        return "-"
    return f"{n / 1e9:.0f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _memory(n: int | None) -> str:
    return f"{n / (1 << 30):.0f} GiB" if n else "-"


templates.filters["size"] = _size
templates.filters["memory"] = _memory


def cockpit_router(store: Store, panel: StationPanel | None) -> APIRouter:
    """The pages at /, the fragments and actions under /ui/: all need the station token (its
    session cookie, or a bearer token); without one, the login view and no data."""
    router = APIRouter(include_in_schema=False)

    def who(request: Request) -> Caller | None:
        token = presented_token(request)
        caller = store.authenticate(token) if token else None
        return caller if caller is not None and caller.scope == TokenScope.station else None

    def lang(request: Request) -> str:
        return "en" if request.cookies.get(LANG_COOKIE) == "en" else "nl"

    def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        now = dt.datetime.now(dt.UTC)
        context.setdefault("back", request.url.path)
        html = templates.get_template(name).render(
            lang=lang(request), t=TEXT[lang(request)], station=panel is not None, now=now,
            since=lambda iso: _since(iso, now), time_left=lambda row: _time_left(row, now),
            **context)
        return HTMLResponse(html, status_code=status)

    def login(request: Request, error: str | None = None) -> Response:
        if request.headers.get("hx-request"):  # a fragment: the whole page goes to the login
            return Response(status_code=401, headers={"HX-Redirect": "/"})
        return render(request, "login.html.j2", 401, error=error, back="/")

    def board_context() -> dict[str, Any]:
        if panel is None:
            today = store.list_devices(batch=dt.datetime.now(dt.UTC).date(), limit=1000)
            return {"counts": {s: sum(d.status == s for d in today) for s in
                               ("registered", "wiped", "ready", "loaned", "returned")},
                    "machines": [], "batch": None, "today": today}
        machines = sorted(panel.machines(), key=lambda m: m["first_seen"], reverse=True)
        return {"counts": panel.counts(), "machines": machines, "batch": panel.batch(),
                "today": []}

    def board(request: Request, error: str | None = None) -> HTMLResponse:
        return render(request, "board.html.j2", error=error, **board_context())

    def after_action(request: Request, error: str | None = None) -> Response:
        if request.headers.get("hx-request"):
            return board(request, error)
        return RedirectResponse("/", status_code=303)

    @router.get("/", response_class=HTMLResponse)
    def home(request: Request) -> Response:
        if who(request) is None:
            return login(request)
        return render(request, "cockpit.html.j2", **board_context())

    @router.post("/ui/login")
    def log_in(request: Request, token: Annotated[str, Form(max_length=128)]) -> Response:
        caller = store.authenticate(token.strip())
        if caller is None or caller.scope != TokenScope.station:
            return login(request, "token")
        response = RedirectResponse("/", status_code=303)
        open_session(response, request, token.strip())
        return response

    @router.post("/ui/logout")
    def log_out() -> Response:
        response = RedirectResponse("/", status_code=303)
        close_session(response)
        return response

    @router.get("/ui/lang/{code}")
    def set_language(code: Annotated[str, PathParam(pattern="^(nl|en)$")],
                     back: Annotated[str, Query(max_length=300, pattern=NO_NUL)] = "/") -> Response:
        # only a path on this site: never a redirect to somewhere else
        # ("/\\host" is "//host" to a browser)
        target = back if back.startswith("/") and back[1:2] not in ("/", "\\") else "/"
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(LANG_COOKIE, code, samesite="strict", path="/",
                            max_age=365 * 24 * 3600)
        return response

    @router.get("/ui/board", response_class=HTMLResponse)
    def board_fragment(request: Request) -> Response:
        if who(request) is None:
            return login(request)
        return board(request)

    @router.get("/ui/events")
    async def events(request: Request) -> Response:
        """`board` whenever the station's board or the registry's events move."""
        if who(request) is None:
            return Response(status_code=401)

        async def stream() -> AsyncIterator[str]:
            seen, quiet = None, 0.0
            yield "retry: 2000\n\n"
            while not await request.is_disconnected():
                now = (panel.version if panel else 0, await asyncio.to_thread(store.last_event_id))
                if now != seen:
                    if seen is not None:
                        yield f"event: board\ndata: {now[0]}-{now[1]}\n\n"
                    seen, quiet = now, 0.0
                elif quiet >= HEARTBEAT:
                    yield ": still here\n\n"
                    quiet = 0.0
                await asyncio.sleep(STREAM_EVERY)
                quiet += STREAM_EVERY

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    def station_action(request: Request, act: Any) -> Response:
        if who(request) is None:
            return login(request)
        if panel is None:
            return after_action(request, "no-station")
        try:
            act(panel)
        except RegistryError as exc:
            return after_action(request, str(exc))
        return after_action(request)

    Key = Annotated[str, PathParam(max_length=128, pattern=NO_NUL)]

    @router.post("/ui/machines/{key}/approve")
    def approve(request: Request, key: Key) -> Response:
        return station_action(request, lambda p: p.approve(key))

    @router.post("/ui/machines/{key}/refuse")
    def refuse(request: Request, key: Key) -> Response:
        return station_action(request, lambda p: p.refuse(key))

    @router.post("/ui/machines/{key}/retry")
    def retry(request: Request, key: Key) -> Response:
        return station_action(request, lambda p: p.retry(key))

    @router.post("/ui/approve-all")
    def approve_all(request: Request) -> Response:
        return station_action(request, lambda p: p.approve_all())

    @router.post("/ui/batch")
    def arm(request: Request,
            minutes: Annotated[float | None, Form(gt=0, le=720)] = None,
            count: Annotated[int | None, Form(gt=0, le=500)] = None) -> Response:
        if minutes is None and count is None:
            return after_action(request, "batch")
        return station_action(request, lambda p: p.arm(minutes, count))

    @router.post("/ui/batch/off")
    def disarm(request: Request) -> Response:
        return station_action(request, lambda p: p.disarm())

    @router.get("/ui/devices", response_class=HTMLResponse)
    def search(request: Request,
               q: Annotated[str, Query(max_length=128, pattern=NO_NUL)] = "") -> Response:
        if who(request) is None:
            return login(request)
        found = store.search(q)
        if len(found) == 1:
            return RedirectResponse(f"/ui/devices/{found[0].asset_tag}", status_code=303)
        return render(request, "search.html.j2", 404 if q and not found else 200, q=q,
                      found=found)

    Tag = Annotated[str, PathParam(max_length=64, pattern=NO_NUL)]

    def device_page(request: Request, tag: str, status: int = 200,
                    error: str | None = None) -> Response:
        try:
            device = store.get_device(tag)
        except NotFound:
            return render(request, "search.html.j2", 404, q=tag, found=[])
        return render(request, "device.html.j2", status, device=device, error=error,
                      changes=[e.value for e in STATUS_CHANGES],
                      wiped=any(e.type == "wiped" for e in device.events))

    @router.get("/ui/devices/{tag}", response_class=HTMLResponse)
    def device(request: Request, tag: Tag) -> Response:
        if who(request) is None:
            return login(request)
        return device_page(request, tag)

    @router.post("/ui/devices/{tag}/status")
    def change_status(request: Request, tag: Tag,
                      status: Annotated[EventType, Form()],
                      technician: Annotated[str, Form(min_length=1, max_length=64,
                                                      pattern=r"^[A-Za-z0-9._-]+$")],
                      shown: Annotated[EventType, Form()]) -> Response:
        caller = who(request)
        if caller is None:
            return login(request)
        if status not in STATUS_CHANGES:
            return device_page(request, tag, 422, f"{status.value}: not a status a volunteer sets")
        try:
            store.add_event(tag, EventIn(type=status, technician=technician, if_status=shown),
                            caller)
        except (Conflict, NotFound) as exc:
            return device_page(request, tag, exc.http_status, str(exc))
        return RedirectResponse(f"/ui/devices/{tag}", status_code=303)

    return router
