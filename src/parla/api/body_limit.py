"""Requests larger than any route accepts are refused before their body is read: a declared
``Content-Length`` over the limit at once, a chunked body as soon as it passes it (413, JSON
``detail``). Without this, a multipart upload is spooled whole to disk before a route can look
at its size."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parla.api.errors import error_body

MULTIPART_MARGIN = 1024 * 1024
"""Room for a multipart body's other fields and boundaries beside its files."""


class _TooLarge(BaseException):
    """Raised from ``receive`` past the limit. A BaseException: FastAPI turns any Exception met
    while parsing a body into its own 400, and this must reach ``BodyLimit`` to become a 413."""


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, int(declared))
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if started:  # the route answered already; nothing more can be said
                raise
            await self._refuse(send, seen)

    async def _refuse(self, send: Send, size: int) -> None:
        detail = f"the request body is over {size} bytes; the largest accepted is {self.max_bytes} bytes"
        body = json.dumps(error_body(413, detail)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
