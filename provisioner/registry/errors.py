"""Registry failures, each with the HTTP status the API answers them with."""

from __future__ import annotations

from provisioner.errors import DeelitError


class RegistryError(DeelitError):
    http_status = 400


class NotFound(RegistryError):
    http_status = 404


class Conflict(RegistryError):
    """The request contradicts what is recorded (an illegal transition, a reused id)."""

    http_status = 409


class Invalid(RegistryError):
    http_status = 422


class Forbidden(RegistryError):
    """A valid token whose scope does not cover the request (an agent token reading, say)."""

    http_status = 403
