"""The page's session: the station token in an HttpOnly, SameSite=Strict cookie.

The page trades the token it was opened with (`#token=…`, or its login form) for this cookie,
so no token stays in an address, a link or the browser's storage, and no other site can make
the browser use it. The API, the station's routes and the cockpit all read a caller's token
here: a bearer token first, else the cookie.
"""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.security import HTTPAuthorizationCredentials

SESSION_COOKIE = "deelit_session"


def presented_token(request: Request,
                    creds: HTTPAuthorizationCredentials | None = None) -> str | None:
    """The bearer token (from FastAPI's HTTPBearer, else the header itself), else the cookie."""
    if creds is not None:
        return creds.credentials
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(SESSION_COOKIE)


def open_session(response: Response, request: Request, token: str) -> None:
    """Sets the cookie; it has no expiry, so it ends with the browser."""
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")


def close_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
