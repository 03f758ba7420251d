"""Per-key limits: requests per minute, generations at once, characters of text and seconds of
audio per day (``KeyLimits``: the settings' defaults, a key's own over them; 0 is no limit).

Counters live where every Parla process sees them: in Redis with ``PARLA_REDIS_URL`` (several
server processes share one budget), else in the database. They count in fixed windows (the
current minute, the current UTC day): over a limit is a 429 whose ``Retry-After`` is the time to
the next window. A generation holds a lease while it runs, freed when it ends, or when it expires
should its process die mid-way.

Nothing is limited while no key exists (the open server on loopback), and text is charged when a
generation is accepted, audio when it is recorded: a request refused for either used nothing.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from parla.errors import ParlaError
from parla.offload import offload
from parla.services.keys import Principal
from parla.settings import KeyLimits, Settings
from parla.store.db import Database
from parla.store.models import ApiKey, GenerationLease, UsageCounter

MINUTE = 60
DAY = 86_400
LEASE_S = 15 * 60
"""Longest a generation holds its slot without ending (a dead process's slot comes back then)."""


class RateLimitedError(ParlaError):
    status_code = 429

    def __init__(self, detail: str, *, retry_after: float, limit: str) -> None:
        super().__init__(detail, param=limit)
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}


class Counters(Protocol):
    def add(self, key_id: str, kind: str, amount: float, window_s: int) -> float:
        """Add ``amount`` to the current window's counter and return its new total."""

    def total(self, key_id: str, kind: str, window_s: int) -> float:
        """The current window's total."""

    def lease(self, key_id: str, limit: int) -> str | None:
        """A slot among ``limit`` for a generation (its id), or None when all are taken."""

    def release(self, key_id: str, lease: str) -> None: ...


def window_no(window_s: int, now: float | None = None) -> int:
    return int((time.time() if now is None else now) // window_s)


def seconds_left(window_s: int) -> float:
    now = time.time()
    return (window_no(window_s, now) + 1) * window_s - now


def _insert_for(session: Session) -> Any:
    """The database's own INSERT, which knows ``ON CONFLICT`` (SQLite and PostgreSQL share its form)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql_insert
    return sqlite_insert


class DatabaseCounters:
    """The counters as rows (``usage_counters``, ``generation_leases``), for SQLite and PostgreSQL."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, key_id: str, kind: str, amount: float, window_s: int) -> float:
        number = window_no(window_s)
        with self._db.session() as session:
            # One statement that adds in the database (an upsert), not a read then a write: two
            # processes adding at once both count. It is also the transaction's first statement,
            # so SQLite takes its write lock here and the total read next is this one's.
            insert = _insert_for(session)(UsageCounter).values(
                key_id=key_id, kind=kind, window_no=number, amount=amount
            )
            session.execute(
                insert.on_conflict_do_update(
                    index_elements=["key_id", "kind", "window_no"], set_={"amount": UsageCounter.amount + amount}
                )
            )
            total = session.scalar(
                select(UsageCounter.amount).where(
                    UsageCounter.key_id == key_id, UsageCounter.kind == kind, UsageCounter.window_no == number
                )
            )
            # Old windows are of no use: each key keeps only the current ones.
            session.execute(
                delete(UsageCounter).where(
                    UsageCounter.key_id == key_id, UsageCounter.kind == kind, UsageCounter.window_no < number
                )
            )
        return float(total or 0.0)

    def total(self, key_id: str, kind: str, window_s: int) -> float:
        with self._db.session() as session:
            row = session.get(UsageCounter, (key_id, kind, window_no(window_s)))
            return float(row.amount) if row is not None else 0.0

    def lease(self, key_id: str, limit: int) -> str | None:
        now = datetime.now(UTC)
        with self._db.session() as session:
            # Counting then adding must be one at a time per key: PostgreSQL locks the key's row;
            # SQLite's first write (the delete) takes the database's write lock for the transaction.
            if session.get_bind().dialect.name == "postgresql":
                session.execute(select(ApiKey.id).where(ApiKey.id == key_id).with_for_update())
            session.execute(
                delete(GenerationLease).where(GenerationLease.key_id == key_id, GenerationLease.expires_at < now)
            )
            held = session.scalar(select(func.count()).where(GenerationLease.key_id == key_id)) or 0
            if held >= limit:
                return None
            lease = GenerationLease(key_id=key_id, expires_at=now + timedelta(seconds=LEASE_S))
            session.add(lease)
            session.flush()
            return lease.id

    def release(self, key_id: str, lease: str) -> None:
        with self._db.session() as session:
            session.execute(delete(GenerationLease).where(GenerationLease.id == lease))


class RedisCounters:
    """The same in Redis: a counter per key, kind and window (expiring with it), and a sorted set of
    leases per key scored by their expiry."""

    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url)

    @staticmethod
    def _name(key_id: str, kind: str, window_s: int) -> str:
        return f"parla:usage:{key_id}:{kind}:{window_no(window_s)}"

    def add(self, key_id: str, kind: str, amount: float, window_s: int) -> float:
        name = self._name(key_id, kind, window_s)
        pipe = self._redis.pipeline()
        pipe.incrbyfloat(name, amount)
        pipe.expire(name, window_s + 60)
        total, _ = pipe.execute()
        return float(total)

    def total(self, key_id: str, kind: str, window_s: int) -> float:
        value = self._redis.get(self._name(key_id, kind, window_s))
        return float(value) if value is not None else 0.0

    def lease(self, key_id: str, limit: int) -> str | None:
        name, lease, now = f"parla:leases:{key_id}", uuid.uuid4().hex, time.time()
        pipe = self._redis.pipeline()  # MULTI: the three steps apply together
        pipe.zremrangebyscore(name, 0, now)
        pipe.zadd(name, {lease: now + LEASE_S})
        pipe.zcard(name)
        pipe.expire(name, LEASE_S)
        held = int(pipe.execute()[2])
        if held > limit:  # counted with this one: give it back
            self._redis.zrem(name, lease)
            return None
        return lease

    def release(self, key_id: str, lease: str) -> None:
        self._redis.zrem(f"parla:leases:{key_id}", lease)


class UsageLimits:
    def __init__(self, settings: Settings, counters: Counters) -> None:
        self._defaults = settings.key_limits
        self._counters = counters

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> UsageLimits:
        counters: Counters = RedisCounters(settings.redis_url) if settings.redis_url else DatabaseCounters(db)
        return cls(settings, counters)

    def limits_of(self, principal: Principal) -> KeyLimits:
        own: Mapping[str, Any] = principal.limits
        return self._defaults.model_copy(update=dict(own)) if own else self._defaults

    def admit_request(self, principal: Principal) -> None:
        """Count a request against the key's requests per minute (429 past it)."""
        limit = self.limits_of(principal).requests_per_minute
        if principal.key_id is None or not limit:
            return
        if self._counters.add(principal.key_id, "requests", 1, MINUTE) > limit:
            raise RateLimitedError(
                f"this API key made more than its {limit} requests per minute (requests_per_minute)",
                retry_after=seconds_left(MINUTE),
                limit="requests_per_minute",
            )

    def charge_text(self, principal: Principal, chars: int) -> None:
        """Accept ``chars`` more characters for speech today, or refuse (429) with nothing charged:
        over the key's characters per day, or its audio seconds of today already spent."""
        if principal.key_id is None:
            return
        limits = self.limits_of(principal)
        audio_limit = limits.audio_seconds_per_day
        if audio_limit and self._counters.total(principal.key_id, "audio_s", DAY) >= audio_limit:
            raise RateLimitedError(
                f"this API key has used its {audio_limit:g} seconds of audio for today (audio_seconds_per_day)",
                retry_after=seconds_left(DAY),
                limit="audio_seconds_per_day",
            )
        text_limit = limits.text_chars_per_day
        if not text_limit:
            return
        used = self._counters.total(principal.key_id, "text_chars", DAY)
        if used + chars > text_limit:
            raise RateLimitedError(
                f"this text of {chars} characters would pass this API key's {text_limit} characters for today "
                f"({used:.0f} used; text_chars_per_day)",
                retry_after=seconds_left(DAY),
                limit="text_chars_per_day",
            )
        self._counters.add(principal.key_id, "text_chars", chars, DAY)

    def charge_audio(self, principal: Principal, seconds: float) -> None:
        """Count audio made (once it is recorded); the next request past the day's limit is refused."""
        if principal.key_id is not None and self.limits_of(principal).audio_seconds_per_day:
            self._counters.add(principal.key_id, "audio_s", seconds, DAY)

    @asynccontextmanager
    async def generating(self, principal: Principal) -> AsyncIterator[None]:
        """Hold one of the key's concurrent generations for the block (429 when all are taken)."""
        limit = self.limits_of(principal).concurrent_generations
        if principal.key_id is None or not limit:
            yield
            return
        key_id = principal.key_id
        lease = await offload(self._counters.lease, key_id, limit)
        if lease is None:
            raise RateLimitedError(
                f"this API key has {limit} generations running already, its limit (concurrent_generations)",
                retry_after=1,
                limit="concurrent_generations",
            )
        try:
            yield
        finally:
            await offload(self._counters.release, key_id, lease)
