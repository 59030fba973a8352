"""Tokens of the registry: who a request comes from and what it may do.

A token is shown once, when made; the database keeps its SHA-256 and a short prefix to name
it by. `TokenStore` holds the token operations the `Store` offers (a mixin over its database).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from provisioner.registry.access import TokenScope
from provisioner.registry.db import Database
from provisioner.registry.errors import Invalid
from provisioner.registry.models import Token
from provisioner.registry.settings import POINT_RE

TOKEN_PREFIX = "dlt_"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class TokenInfo:
    station: str
    point: str | None
    prefix: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    note: str | None
    scope: TokenScope = TokenScope.station
    expires_at: dt.datetime | None = None
    machine: str | None = None  # the serial or MAC a `machine` token is bound to

    def live(self, now: dt.datetime | None = None) -> bool:
        """Neither revoked nor expired."""
        return self.revoked_at is None and (self.expires_at is None
                                            or self.expires_at > (now or utcnow()))


@dataclass
class Caller:
    """Who a request comes from: a station, the point its token belongs to, and what the
    token may do (access.TokenScope: a station's own token, or the agents' narrow one)."""

    station: str
    point: str | None = None
    scope: TokenScope = TokenScope.station
    machine: str | None = None  # a `machine` token's serial or MAC
    # how the request came: named in the countersignature of a wipe certificate
    channel: str | None = None


class TokenStore:
    """Making, listing, revoking and checking tokens."""

    db: Database

    def create_token(self, station: str, *, point: str | None = None, note: str | None = None,
                     scope: TokenScope | str = TokenScope.station,
                     expires_in: dt.timedelta | None = None, machine: str | None = None) -> str:
        """A new token (shown only now: the database keeps its SHA-256). `scope` station may do
        everything, agent only what access.AGENT_EVENTS allows; `expires_in` ends it on its own."""
        if point is not None and not POINT_RE.match(point):
            raise Invalid(f"point code {point!r} must be 2-8 capital letters or digits")
        try:
            scope = TokenScope(scope)
        except ValueError as exc:
            raise Invalid(f"token scope {scope!r}: use one of "
                          f"{', '.join(s.value for s in TokenScope)}") from exc
        if (scope == TokenScope.machine) != bool(machine) or len(machine or "") > 128:
            raise Invalid("a machine token is bound to one machine (its serial or MAC), and only "
                          "a machine token is")
        now = utcnow()
        expires_at = None
        if expires_in is not None:
            if expires_in <= dt.timedelta(0):
                raise Invalid("a token's lifetime must be positive")
            try:
                expires_at = now + expires_in
            except OverflowError as exc:
                raise Invalid(f"token lifetime {expires_in} is too long") from exc
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.db.write() as s:
            s.add(Token(station=station, point=point, token_sha256=_sha(token),
                        prefix=token[:12], note=note, created_at=now, scope=scope.value,
                        expires_at=expires_at, machine=machine))
        return token

    def list_tokens(self) -> list[TokenInfo]:
        with self.db.read() as s:
            return [_token_info(t) for t in s.scalars(select(Token).order_by(Token.id))]

    def token_info(self, token: str) -> TokenInfo | None:
        """What is recorded about a token (live or not), looked up by the token itself."""
        with self.db.read() as s:
            row = s.scalar(select(Token).where(Token.token_sha256 == _sha(token)))
            return _token_info(row) if row else None

    def revoke_token(self, token: str) -> bool:
        """Revokes one token by its value; False when it is unknown or already revoked."""
        with self.db.write() as s:
            row = s.scalar(select(Token).where(Token.token_sha256 == _sha(token),
                                               Token.revoked_at.is_(None)))
            if row is None:
                return False
            row.revoked_at = utcnow()
            return True

    def revoke_tokens(self, station: str, *, prefix: str | None = None) -> int:
        """Revokes the station's live tokens (only the one starting with `prefix`, if given)."""
        with self.db.write() as s:
            stmt = select(Token).where(Token.station == station, Token.revoked_at.is_(None))
            if prefix:
                stmt = stmt.where(Token.prefix == prefix[:12])
            rows = list(s.scalars(stmt))
            for row in rows:
                row.revoked_at = utcnow()
            return len(rows)

    def authenticate(self, token: str) -> Caller | None:
        """The caller a live token stands for; None for unknown, revoked or expired tokens."""
        info = self.token_info(token)
        if info is None or not info.live():
            return None
        return Caller(info.station, info.point, info.scope, info.machine)


def _token_info(t: Token) -> TokenInfo:
    return TokenInfo(t.station, t.point, t.prefix, t.created_at, t.revoked_at, t.note,
                     TokenScope(t.scope), t.expires_at, t.machine)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
