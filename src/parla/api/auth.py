"""Who may call a route: each route declares the one scope it needs, as a dependency in its
decorator (``dependencies=[SPEAK]``) or its router's, and nowhere else.

A key comes as ``Authorization: Bearer KEY`` (what the OpenAI SDK sends for ``api_key=``), as
``X-API-Key: KEY``, or in the ``parla_api_key`` cookie the web studio sets for the browser's
session (an ``<audio src>``, a download link or a WebSocket cannot carry a header; the cookie is
``SameSite=Strict``, so another site's page cannot make the browser send it). A WebSocket may also
give ``?api_key=``, since browsers' WebSocket API sets no headers.

No key: 401; a key without the scope: 403; both in every API's error shape (``detail`` and the
OpenAI ``error`` object). While no key exists, or with ``PARLA_AUTH=off``, everyone is allowed
everything, which ``startup_problem`` permits only on a loopback address.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Security
from fastapi.params import Depends as DependsParam
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from parla.errors import AuthenticationError, ParlaError, PermissionDeniedError
from parla.offload import offload
from parla.services.keys import OPEN, Principal, Scope, acting_for
from parla.settings import Settings

COOKIE = "parla_api_key"
SCOPE_FIELD = "x-parla-scope"
"""The OpenAPI operation field that names the scope a route needs."""

_bearer = HTTPBearer(auto_error=False, description="An API key made with `parla keys create`.")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The same key, in its own header.")


def _secret(connection: HTTPConnection, bearer: HTTPAuthorizationCredentials | None, header: str | None) -> str:
    if bearer is not None:
        return bearer.credentials
    if header:
        return header
    return connection.cookies.get(COOKIE, "")


async def _principal(connection: HTTPConnection, secret: str) -> Principal:
    services = connection.app.state.services
    if services.settings.auth == "off" or not await offload(services.keys.required):
        return OPEN
    if not secret:
        raise AuthenticationError(
            "an API key is needed: send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY' "
            "(an administrator makes one with `parla keys create`)"
        )
    principal: Principal | None = await offload(services.keys.authenticate, secret)
    if principal is None:
        raise AuthenticationError("this API key is not valid: unknown or revoked")
    return principal


async def authorize(
    connection: HTTPConnection,
    scopes: SecurityScopes,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> Principal:
    """The caller, once allowed the route's scope (else 401/403); kept on ``request.state.principal``."""
    (needed,) = (Scope(name) for name in scopes.scopes)
    if needed is Scope.PUBLIC:
        return OPEN
    principal = await _principal(connection, _secret(connection, bearer, header))
    if not principal.allows(needed):
        granted = ", ".join(sorted(principal.scopes)) or "none"
        raise PermissionDeniedError(f"this API key lacks the '{needed}' scope this needs (it has: {granted})")
    return await _acting(connection, principal)


async def _acting(connection: HTTPConnection, principal: Principal) -> Principal:
    """Count the request against the key's rate, then let the services see who it is for."""
    await offload(connection.app.state.services.speech.usage.admit_request, principal)
    connection.state.principal = principal
    acting_for.set(principal)  # the request's own context: the endpoint and its threads see it
    return principal


def requires(scope: Scope) -> DependsParam:
    dependency: DependsParam = Security(authorize, scopes=[scope.value])
    return dependency


PUBLIC = requires(Scope.PUBLIC)
SPEAK = requires(Scope.SPEAK)
VOICES = requires(Scope.VOICES)
ADMIN = requires(Scope.ADMIN)


async def authorize_websocket(connection: HTTPConnection, scope: Scope) -> Principal:
    """``authorize`` for a WebSocket (its key also in ``?api_key=``); raises the same errors, which
    the route turns into a close with code 1008 (policy violation) and the reason."""
    auth = connection.headers.get("authorization", "")
    secret = (
        auth[7:].strip()
        if auth.lower().startswith("bearer ")
        else connection.headers.get("x-api-key") or connection.query_params.get("api_key") or ""
    )
    principal = await _principal(connection, secret or connection.cookies.get(COOKIE, ""))
    if not principal.allows(scope):
        raise PermissionDeniedError(f"this API key lacks the '{scope}' scope this needs")
    return await _acting(connection, principal)


async def accept_authorized(websocket: WebSocket, scope: Scope) -> bool:
    """Accept a WebSocket and check its key: False (and closed with 1008, policy violation, the
    WebSocket's 401/403, its reason the error's detail) when it may not go on."""
    await websocket.accept()
    try:
        await authorize_websocket(websocket, scope)
    except ParlaError as exc:
        await websocket.close(code=1008, reason=exc.detail[:120])
        return False
    return True


def mark_scopes(app: FastAPI) -> None:
    """Name each operation's scope in the OpenAPI document (``x-parla-scope``), from the security
    requirement ``requires`` added, and drop the requirement from public ones (no lock in /docs)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                needed = {
                    name
                    for requirement in operation.get("security", [])
                    for name in next(iter(requirement.values()), [])
                }
                if len(needed) == 1:
                    (operation[SCOPE_FIELD],) = needed
                    if needed == {Scope.PUBLIC.value}:
                        operation.pop("security")
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def startup_problem(settings: Settings, keys_exist: bool) -> str | None:
    """Why the server must not start: bound beyond this machine with no key to ask for."""
    if settings.auth == "off" or keys_exist or is_loopback(settings.host):
        return None
    return (
        f"Parla would listen on {settings.host}, beyond this machine, and no API key exists, so anyone "
        "who can reach the port could use and delete everything. Create a key first "
        "(`parla keys create --name admin --scopes admin`), or bind to 127.0.0.1, or set PARLA_AUTH=off "
        "if something in front of Parla authenticates."
    )
