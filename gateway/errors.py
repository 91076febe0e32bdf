"""Errors that reach users: each carries an HTTP status, a stable code and the offending field."""

from __future__ import annotations

from typing import Any


class MediagateError(Exception):
    """Base class for every error a user can see.

    `code` is stable and machine-readable (``room_not_found``), `message` is for humans,
    `field` names the offending input (``regions[2].x``) when there is one.
    """

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None,
                 status: int | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.field = field
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message, "field": self.field}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class BadRequest(MediagateError):
    status = 400
    code = "bad_request"


class ValidationFailed(BadRequest):
    code = "validation_error"


class Unauthorized(MediagateError):
    status = 401
    code = "unauthorized"


class Forbidden(MediagateError):
    status = 403
    code = "forbidden"


class NotFound(MediagateError):
    status = 404
    code = "not_found"


class Conflict(MediagateError):
    status = 409
    code = "conflict"


class PayloadTooLarge(MediagateError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(MediagateError):
    status = 415
    code = "unsupported_media_type"


class Unprocessable(MediagateError):
    status = 422
    code = "unprocessable"


class TooManyRequests(MediagateError):
    status = 429
    code = "too_many_requests"


class NoCapacity(MediagateError):
    status = 503
    code = "no_capacity"


class ConfigError(Exception):
    """A bad configuration, raised at startup. The message names the key and, when known, the line."""

    def __init__(self, message: str, *, key: str | None = None, line: int | None = None,
                 source: str | None = None) -> None:
        place = f"{source}:{line}" if source and line else source or (f"line {line}" if line else "")
        where = ": ".join(part for part in (place, key) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.key = key
        self.line = line
        self.source = source
