"""The web studio at ``/ui/``: the package's static files, served as they are (no build step)."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from parla.api.auth import PUBLIC
from parla.errors import NotFoundError
from parla.ui import STATIC_DIR

router = APIRouter(tags=["Web studio"], include_in_schema=False)

# The page is small and changes with the package: browsers check back each time (ETag/304).
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
# Some systems' mime tables lack or misname these; ES modules must come as JavaScript.
_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def static_file(path: str) -> Path:
    """The file under the static folder that ``path`` names; ``NotFoundError`` for anything
    else (missing, a folder, or outside it through ``..`` or a link)."""
    root = STATIC_DIR.resolve()
    try:
        target = (root / (path or "index.html")).resolve()
        found = target.is_relative_to(root) and target.is_file()
    except (OSError, ValueError):  # a NUL byte, a name too long
        found = False
    if not found:
        raise NotFoundError(f"no such file in the web studio: {path!r}")
    return target


@router.api_route("/ui", methods=["GET", "HEAD"], dependencies=[PUBLIC])
def studio_redirect() -> RedirectResponse:
    # Relative, so that it also works behind a proxy that mounts Parla under a prefix.
    return RedirectResponse("ui/", status_code=307)


@router.api_route("/ui/{path:path}", methods=["GET", "HEAD"], dependencies=[PUBLIC])
def studio(path: str) -> FileResponse:
    target = static_file(path)
    media_type = _TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return FileResponse(target, media_type=media_type, headers=_HEADERS)
