"""HTTP API (FastAPI) under /api/v1, plus the station page at /. Every data route needs a token.

Reads need a station token; an agent token (access.TokenScope.agent: what the machines a
station boots carry) may only register devices and post the intake events (403 otherwise).

`create_app(settings)` is the factory the netboot station embeds; `deelit registry serve`
runs the same app under uvicorn.
"""

# No `from __future__ import annotations` here: FastAPI reads these annotations at runtime.
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from provisioner.registry import session as sessions
from provisioner.registry.access import AGENT_LIMITS, TokenScope
from provisioner.registry.cockpit import StationPanel, cockpit_router
from provisioner.registry.errors import RegistryError
from provisioner.registry.labels import Layout, certificate_pdf, labels_pdf
from provisioner.registry.lifecycle import EventType
from provisioner.registry.schemas import (
    NO_NUL,
    BuildOut,
    DeviceIn,
    DeviceOut,
    DeviceWithEvents,
    EventIn,
    EventOut,
    RegisterOut,
)
from provisioner.registry.session import presented_token
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store
from provisioner.registry.tokens import Caller


class SessionIn(BaseModel):
    token: str = Field(min_length=1, max_length=128, pattern=NO_NUL)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WEB = resources.files("provisioner.registry") / "web" / "static"
_bearer = HTTPBearer(auto_error=False,
                     description="per-station token: deelit registry token create STATION "
                                 "(agent-scoped tokens may only register and post intake events)")


def _caller(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Caller:
    store: Store = request.app.state.store
    token = presented_token(request, creds)
    who = store.authenticate(token) if token else None
    if who is None:
        raise HTTPException(401, "a valid token is needed (Authorization: Bearer …); this one "
                            "is missing, unknown, expired or revoked",
                            headers={"WWW-Authenticate": "Bearer"})
    return who


def _station_caller(who: Annotated[Caller, Depends(_caller)]) -> Caller:
    if who.scope != TokenScope.station:
        raise HTTPException(403, f"reading the registry needs a station token; {AGENT_LIMITS}")
    return who


Auth = Annotated[Caller, Depends(_caller)]  # station or agent token
StationAuth = Annotated[Caller, Depends(_station_caller)]  # station token only
Tag = Annotated[str, Path(max_length=64, pattern=NO_NUL)]


class BodyLimit:
    """Answers 413 before the app sees a body larger than the limit (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _too_large(send, self.max_bytes)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _too_large(send, self.max_bytes)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"detail":"request body larger than {limit} bytes"}}'.encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings, store: Store | None = None,
               panel: StationPanel | None = None) -> FastAPI:
    """The registry's API and the cockpit pages; `panel`: a station's board, when one runs."""
    store = store or Store(settings)
    owned = store

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        owned.close()

    # No Swagger UI (it loads its scripts from the internet); the schema needs a token.
    app = FastAPI(title="deelit registry", version="1", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None,
                  description="Devices of the DEEL IT points by asset tag and serial.")
    app.state.store = store
    unauthorised: dict[int | str, dict[str, Any]] = {
        401: {"description": "missing, unknown, expired or revoked token"}}
    station_only: dict[int | str, dict[str, Any]] = {
        **unauthorised, 403: {"description": "an agent token: this route needs a station token"}}

    @app.exception_handler(RegistryError)
    async def _registry_error(_: Request, exc: RegistryError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)

    @app.post("/api/v1/devices", response_model=RegisterOut, status_code=200,
              responses={201: {"model": RegisterOut, "description": "created"},
                         409: {"description": "refused by the device's status"}, **unauthorised})
    def register(body: DeviceIn, who: Auth, response: Response) -> RegisterOut:
        out = store.register(body, who)
        response.status_code = 201 if out.created else 200
        return out

    @app.get("/api/v1/devices", response_model=list[DeviceOut], responses=station_only)
    def list_devices(
        who: StationAuth,
        status: EventType | None = None,
        point: Annotated[str | None, Query(pattern=r"^[A-Z0-9]{2,8}$")] = None,
        batch: Annotated[dt.date | None, Query(description="registration day")] = None,
        serial: Annotated[str | None, Query(max_length=128, pattern=NO_NUL)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 500,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> list[DeviceOut]:
        return store.list_devices(status=status.value if status else None, point=point,
                                  batch=batch, serial=serial, limit=limit, offset=offset)

    @app.get("/api/v1/devices/{asset_tag}", response_model=DeviceWithEvents,
             responses={404: {"description": "unknown asset tag"}, **station_only})
    def get_device(asset_tag: Tag, who: StationAuth) -> DeviceWithEvents:
        return store.get_device(asset_tag)

    @app.post("/api/v1/devices/{asset_tag}/events", response_model=EventOut, status_code=201,
              responses={200: {"model": EventOut, "description": "uid already recorded"},
                         403: {"description": "an agent token and an event that is not "
                                               "an intake event (loaned, returned, …)"},
                         404: {"description": "unknown asset tag"},
                         409: {"description": "illegal transition"}, **unauthorised})
    def add_event(asset_tag: Tag, body: EventIn, who: Auth, response: Response) -> EventOut:
        event, added = store.add_event(asset_tag, body, who)
        response.status_code = 201 if added else 200
        return event

    @app.get("/api/v1/search", response_model=list[DeviceOut], responses=station_only)
    def search(who: StationAuth,
               q: Annotated[str, Query(min_length=1, max_length=128, pattern=NO_NUL,
                                       description="an asset tag, serial or MAC")]
               ) -> list[DeviceOut]:
        """Devices by what is read off a laptop or its sticker, each field matched whole."""
        return store.search(q)

    @app.get("/api/v1/devices/{asset_tag}/label.pdf", response_class=Response,
             responses={200: {"content": {"application/pdf": {}}}, **station_only})
    def label(asset_tag: Tag, who: StationAuth,
              layout: Annotated[Layout, Query()] = "roll62") -> Response:
        """The device's QR asset label (62 mm roll by default, or an A4 sheet)."""
        return Response(labels_pdf([store.get_device(asset_tag)], layout),
                        media_type="application/pdf")

    @app.get("/api/v1/devices/{asset_tag}/certificate.pdf", response_class=Response,
             responses={200: {"content": {"application/pdf": {}}}, **station_only})
    def certificate(asset_tag: Tag, who: StationAuth) -> Response:
        """The wipe certificate of each of the device's `wiped` events."""
        device = store.get_device(asset_tag)
        if not any(e.type == "wiped" for e in device.events):
            raise HTTPException(404, f"{asset_tag} has no wipe on record")
        return Response(certificate_pdf(device), media_type="application/pdf")

    @app.get("/api/v1/labels.pdf", response_class=Response,
             responses={200: {"content": {"application/pdf": {}}}, **station_only})
    def batch_labels(who: StationAuth,
                     batch: Annotated[dt.date | None, Query(description="registration day; "
                                                             "default today")] = None,
                     layout: Annotated[Layout, Query()] = "a4") -> Response:
        """One PDF with the labels of a day's devices (today's batch by default)."""
        devices = store.list_devices(batch=batch or dt.datetime.now(dt.UTC).date(), limit=1000)
        if not devices:
            raise HTTPException(404, "no devices registered that day")
        return Response(labels_pdf(devices, layout), media_type="application/pdf")

    @app.get("/api/v1/builds", response_model=list[BuildOut], responses=station_only)
    def builds(who: StationAuth) -> list[BuildOut]:
        return store.list_builds()

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(who: StationAuth) -> dict[str, Any]:
        return app.openapi()

    @app.post("/api/v1/session", status_code=204, responses=station_only)
    def open_session(body: SessionIn, request: Request, response: Response) -> None:
        """The page trades the token it was opened with for a session cookie (HttpOnly,
        SameSite=Strict, ends with the browser), then drops it from its address."""
        who = store.authenticate(body.token)
        if who is None:
            raise HTTPException(401, "this token is unknown, expired or revoked")
        if who.scope != TokenScope.station:
            raise HTTPException(403, "the page needs a station token")
        sessions.open_session(response, request, body.token)

    @app.delete("/api/v1/session", status_code=204)
    def close_session(response: Response) -> None:
        sessions.close_session(response)

    @app.get("/api/v1/health", include_in_schema=False)
    def health() -> dict[str, bool]:
        return {"ok": True}

    app.include_router(cockpit_router(store, panel))
    app.mount("/static", StaticFiles(directory=str(WEB)), name="static")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
