"""API keys: who may call the server, and what for.

A key is ``parla_`` and 43 random URL-safe characters (256 bits); the database keeps its SHA-256 (a
slow password hash buys nothing for a random secret of that length, and a lookup by hash costs one
indexed query) and its first characters, to recognise it in a list. Scopes: ``speak`` (generate,
transcribe, read voices), ``voices`` (create and change voices and characters), ``admin``
(everything, including others' data, config, clean-up, keys and engines). ``admin`` implies the
others.

Keys are required as soon as one exists (revoked ones count: revoking every key does not open the
server again); before that, everything works without one, which ``parla serve`` allows only on a
loopback address (``parla.api.auth.startup_problem``).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ColumnElement, exists, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from parla.errors import ConflictError, InvalidInputError, NotFoundError, validation_detail
from parla.settings import KeyLimits
from parla.store.db import Database
from parla.store.models import ApiKey, utcnow

KEY_PREFIX = "parla_"
CACHE_S = 5.0
"""How long a key's check is reused before the database is asked again."""
MAX_CACHED = 10_000
SHOWN_CHARS = 12
"""Characters of a key kept in clear (``parla_`` and six of the secret) to tell keys apart."""


class Scope(StrEnum):
    PUBLIC = "public"
    """No key needed: health checks and the web studio's page itself."""
    SPEAK = "speak"
    VOICES = "voices"
    ADMIN = "admin"


GRANTABLE = (Scope.SPEAK, Scope.VOICES, Scope.ADMIN)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key, or nobody in particular while no key exists (then everything is allowed)."""

    key_id: str | None
    name: str
    scopes: frozenset[Scope]
    limits: Mapping[str, float] = field(default_factory=dict)
    """The key's own limits (``KeyLimits`` fields), over the settings' defaults."""

    def allows(self, scope: Scope) -> bool:
        return scope is Scope.PUBLIC or Scope.ADMIN in self.scopes or scope in self.scopes

    @property
    def is_admin(self) -> bool:
        return Scope.ADMIN in self.scopes


OPEN = Principal(key_id=None, name="anyone (no keys exist)", scopes=frozenset(GRANTABLE))
"""Every request while no key has been created."""

acting_for: ContextVar[Principal] = ContextVar("parla_acting_for", default=OPEN)
"""Who the work under way is done for: set by ``parla.api.auth`` for a request, and seen by the
services it calls (the usage limits charge it), in worker threads too (``asyncio.to_thread``
copies it)."""


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    limits: dict[str, float]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> KeyInfo:
        return cls(
            row.id,
            row.name,
            row.prefix,
            tuple(row.scopes),
            dict(row.limits or {}),
            row.created_at,
            row.last_used_at,
            row.revoked_at,
        )


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def parse_scopes(raw: str | list[str]) -> list[Scope]:
    """``"speak,voices"`` (or a list) as scopes; an unknown one is refused, naming those there are."""
    names = [part.strip().lower() for part in (raw.split(",") if isinstance(raw, str) else raw) if part.strip()]
    if not names:
        raise InvalidInputError(f"give at least one scope: {', '.join(GRANTABLE)}", param="scopes")
    scopes = []
    for name in names:
        try:
            scope = Scope(name)
        except ValueError:
            scope = None
        if scope not in GRANTABLE:
            raise InvalidInputError(f"unknown scope {name!r}: the scopes are {', '.join(GRANTABLE)}", param="scopes")
        scopes.append(scope)
    return list(dict.fromkeys(scopes))


def checked_limits(limits: Mapping[str, float]) -> dict[str, float]:
    """Limits as ``KeyLimits`` fields; an unknown name or a negative value is refused."""
    try:
        checked = KeyLimits.model_validate(dict(limits))
    except ValidationError as exc:
        raise InvalidInputError(validation_detail(exc.errors(), "limits")[0], param="limits") from None
    unknown = set(limits) - set(KeyLimits.model_fields)
    if unknown:
        raise InvalidInputError(
            f"unknown limit {sorted(unknown)[0]!r}: the limits are {', '.join(KeyLimits.model_fields)}", param="limits"
        )
    return {name: float(getattr(checked, name)) for name in limits}


class KeyService:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._required = False  # once keys exist they stay required: no need to ask again
        self._cache: dict[str, tuple[Principal | None, float]] = {}

    def required(self) -> bool:
        """Whether requests need a key: some key was ever created."""
        if not self._required:
            with self._db.session() as session:
                self._required = bool(session.scalar(select(exists().where(ApiKey.id.is_not(None)))))
        return self._required

    def create(
        self, name: str, scopes: str | list[str], limits: Mapping[str, float] | None = None
    ) -> tuple[KeyInfo, str]:
        """A new key: its description and the secret, which is not kept and cannot be shown again."""
        name = name.strip()
        if not name or len(name) > 100:
            raise InvalidInputError("a key needs a name of 1 to 100 characters", param="name")
        granted = parse_scopes(scopes)
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKey(
            name=name,
            prefix=secret[:SHOWN_CHARS],
            secret_hash=hash_secret(secret),
            scopes=list(granted),
            limits=checked_limits(limits or {}),
        )
        try:
            with self._db.session() as session:
                session.add(row)
                session.flush()
                info = KeyInfo.of(row)
        except IntegrityError:
            raise ConflictError(f"a key named {name!r} exists already", param="name") from None
        self._required = True
        return info, secret

    def list(self) -> list[KeyInfo]:
        with self._db.session() as session:
            return [KeyInfo.of(row) for row in session.scalars(select(ApiKey).order_by(ApiKey.created_at))]

    def set_limits(self, name_or_prefix: str, limits: Mapping[str, float]) -> KeyInfo:
        """Change a key's own limits (those given; a negative value returns one to the default)."""
        changes = dict(limits)
        with self._db.session() as session:
            row = self._find(session, name_or_prefix)
            merged = {**(row.limits or {}), **changes}
            row.limits = checked_limits({k: v for k, v in merged.items() if v >= 0})
            session.flush()
            self._cache.pop(row.secret_hash, None)
            return KeyInfo.of(row)

    @staticmethod
    def _find(session: Session, name_or_prefix: str) -> ApiKey:
        rows = list(
            session.scalars(select(ApiKey).where((ApiKey.name == name_or_prefix) | (ApiKey.prefix == name_or_prefix)))
        )
        if not rows:
            raise NotFoundError(f"no key is named or starts with {name_or_prefix!r}")
        if len(rows) > 1:
            raise ConflictError(f"{name_or_prefix!r} matches {len(rows)} keys: give the name")
        return rows[0]

    def revoke(self, name_or_prefix: str) -> KeyInfo:
        """Revoke a key named, or whose shown prefix is, ``name_or_prefix``."""
        with self._db.session() as session:
            row = self._find(session, name_or_prefix)
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            session.flush()
            self._cache.pop(row.secret_hash, None)
            return KeyInfo.of(row)

    def authenticate(self, secret: str) -> Principal | None:
        """The key's principal, or None for a key that is unknown or revoked. Answers are reused for
        ``CACHE_S`` (no query per request; a revocation made by another process counts within that
        time), and each look-up notes when the key was last used."""
        if not secret.startswith(KEY_PREFIX):
            return None
        digest = hash_secret(secret)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        with self._db.session() as session:
            row = session.scalar(select(ApiKey).where(ApiKey.secret_hash == digest))
            principal = None
            if row is not None and row.revoked_at is None:
                row.last_used_at = utcnow()
                principal = Principal(
                    key_id=row.id,
                    name=row.name,
                    scopes=frozenset(Scope(s) for s in row.scopes),
                    limits=dict(row.limits or {}),
                )
        if len(self._cache) > MAX_CACHED:
            self._cache.clear()  # guessed keys must not grow it without bound
        self._cache[digest] = (principal, now + CACHE_S)
        return principal


# -- ownership ----------------------------------------------------------------------------------


def caller_key_id() -> str | None:
    """The key the work is done for, to record as the owner of what it makes (None: no key)."""
    return acting_for.get().key_id


def sees_everything(principal: Principal | None = None) -> bool:
    """Admin keys, and everyone while no key exists, see every row; other keys their own."""
    principal = principal or acting_for.get()
    return principal.key_id is None or principal.is_admin


def visible(owner_column: Any) -> ColumnElement[bool]:
    """A WHERE condition: the rows of ``owner_column``'s table the caller may see."""
    principal = acting_for.get()
    return true() if sees_everything(principal) else owner_column == principal.key_id


def may_see(owner_key_id: str | None) -> bool:
    """Whether the caller may see (and so change or delete) a row owned by ``owner_key_id``: one
    owned by another key, or by the admins, is as good as absent (a 404, which tells nothing)."""
    principal = acting_for.get()
    return sees_everything(principal) or owner_key_id == principal.key_id


def principal_of_key(db: Database, key_id: str | None) -> Principal:
    """The principal of a stored key (a job runs for the key that queued it); no key: ``OPEN``."""
    if key_id is None:
        return OPEN
    with db.session() as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            return Principal(key_id=key_id, name="a deleted key", scopes=frozenset())
        return Principal(
            key_id=row.id, name=row.name, scopes=frozenset(Scope(s) for s in row.scopes), limits=dict(row.limits or {})
        )
