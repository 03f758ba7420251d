"""Errors a client caused or can act on. Each maps to an HTTP status with a JSON ``detail``; the
API edge (``api/errors.py``) is the one place that turns them into responses.

    ParlaError                      400  detail + the parameter it is about
    ├── InvalidInputError           400  (paths.PathNotAllowedError; engines.UnknownEngineError)
    ├── NotFoundError               404
    ├── ConflictError               409
    ├── TooLargeError               413
    ├── runtime_config.InvalidConfigError  422
    ├── UpstreamError               502  a language model endpoint failed
    └── ServiceUnavailableError     503  (engines.EngineUnavailableError: missing dependency or weights)

Anything else that escapes is a bug: a 500 with an error id, its details in the log. Lower layers
raise their own plain exceptions (``AudioDecodeError``, ``FetchError``...) where they are generic
tools; the service that calls them says what they mean for the request, as one of the above.
"""

from __future__ import annotations

from typing import Any


class ParlaError(Exception):
    status_code = 400

    def __init__(self, detail: str, *, param: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.param = param

    def within(self, context: str) -> ParlaError:
        """This error, its detail placed in ``context`` ("turn 2", "item 3"); re-raise it as it is
        (type, parameter and traceback kept)."""
        self.detail = f"{context}: {self.detail}"
        self.args = (self.detail,)
        return self


def validation_detail(errors: list[Any], prefix: str = "") -> tuple[str, str | None]:
    """One sentence for pydantic's ``errors()`` (``prefix.field: message; ...``) and the first
    field named, the way every API words a field it refuses."""
    parts = []
    param = None
    for error in errors:
        location = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
        param = param or (location.split(".")[0] if location else None)
        field = ".".join(part for part in (prefix, location) if part) or "body"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{field}: {message}")
    return "; ".join(parts) or "invalid request", param


class InvalidInputError(ParlaError):
    status_code = 400


class AuthenticationError(ParlaError):
    """No key, or one the server does not know (or revoked)."""

    status_code = 401


class PermissionDeniedError(ParlaError):
    """A valid key without the scope the route needs, or another key's data."""

    status_code = 403


class NotFoundError(ParlaError):
    status_code = 404


class ConflictError(ParlaError):
    status_code = 409


class TooLargeError(ParlaError):
    status_code = 413


class ServiceUnavailableError(ParlaError):
    status_code = 503


class UpstreamError(ParlaError):
    """Something Parla depends on (a language model endpoint) failed: a 502 that says what and why."""

    status_code = 502
