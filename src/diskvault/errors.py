"""Base error type. Every package's ``errors.py`` subclasses it.

An error class carries its message template, HTTP status and CLI exit code, so
the API (problem+json) and the CLI (one red line, exit code) render any error
the same way without knowing its type.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DiskvaultError(Exception):
    """Base class: subclasses set ``template``, ``status`` and ``exit_code``."""

    template: ClassVar[str] = "{detail}"
    status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str | None = None, **fields: Any) -> None:
        self.fields = fields
        if detail is not None:
            fields.setdefault("detail", detail)
        try:
            message = self.template.format(**fields)
        except KeyError:
            message = detail or self.template
        self.message = message
        super().__init__(message)

    @property
    def type_slug(self) -> str:
        name = type(self).__name__
        out = [name[0].lower()]
        for ch in name[1:]:
            out.append("-" + ch.lower() if ch.isupper() else ch)
        return "".join(out).removesuffix("-error")

    def problem(self) -> dict[str, Any]:
        """RFC 9457 body; extension members come from ``fields`` minus detail."""
        body: dict[str, Any] = {
            "type": f"urn:diskvault:error:{self.type_slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.message,
        }
        for key, value in self.fields.items():
            if key in body or key == "instance":
                continue  # RFC 9457 members are ours; a template field never overrides them
            if isinstance(value, str | int | float | bool | None | list):
                body[key] = value
        return body


class BadRequest(DiskvaultError):
    status = 400
    exit_code = 2
    title = "Bad request"


class Unauthorized(DiskvaultError):
    template = "{detail}"
    status = 401
    exit_code = 3
    title = "Unauthorized"


class Forbidden(DiskvaultError):
    status = 403
    exit_code = 9
    title = "Forbidden"


class NotFound(DiskvaultError):
    template = "{kind} {id} was not found"
    status = 404
    exit_code = 4
    title = "Not found"


class Conflict(DiskvaultError):
    status = 409
    exit_code = 5
    title = "Conflict"


class Unprocessable(DiskvaultError):
    status = 422
    exit_code = 2
    title = "Unprocessable content"


class PayloadTooLarge(DiskvaultError):
    status = 413
    exit_code = 2
    title = "Payload too large"


class TooManyRequests(DiskvaultError):
    """A limit was reached; ``retry_after`` (seconds) becomes the Retry-After header."""

    status = 429
    exit_code = 6
    title = "Too many requests"


class ServiceUnavailable(DiskvaultError):
    status = 503
    exit_code = 6
    title = "Service unavailable"


class InsufficientStorage(DiskvaultError):
    status = 507
    exit_code = 7
    title = "Insufficient storage"


class ConfigError(DiskvaultError):
    template = "configuration error: {setting}: {detail}"
    status = 500
    exit_code = 78  # EX_CONFIG
    title = "Configuration error"
