"""Errors a client caused or can act on. Each maps to an HTTP status with a JSON ``detail``."""

from __future__ import annotations


class ParlaError(Exception):
    status_code = 400

    def __init__(self, detail: str, *, param: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.param = param


class InvalidInputError(ParlaError):
    status_code = 400


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
