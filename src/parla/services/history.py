"""Generation history: every synthesis, searchable, with its audio, statistics and retention.

Rows come from ``SpeechService._record``; their audio lives under ``<data_dir>/generations/``.
Deleting removes the row before the file: a file left without a row is an orphan that the next
clean-up removes, while a row left without its file would promise audio that is gone.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, computed_field
from sqlalchemy import ColumnElement, delete, func, select

from parla.engines.base import TimedWord
from parla.errors import InvalidInputError, NotFoundError
from parla.services.keys import may_see, visible
from parla.services.runtime_config import GOVERNED_SOURCES, ConfigService
from parla.store.blobs import LocalBlobStore
from parla.store.db import Database
from parla.store.models import Generation, utcnow

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
GENERATIONS = "generations"
"""The blob folder holding the audio, one ``<id>.<ext>`` per generation."""
ORPHAN_MIN_AGE_S = 3600.0
"""A file with no row is removed only once it is this old, whatever the cut-off: a generation
being streamed to a slow client writes its file long before its row exists."""
_CHUNK = 500
"""Ids per ``IN (...)``, well under every database's limit on parameters."""

T = TypeVar("T")


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _utc(moment: datetime) -> datetime:
    """Aware and in UTC: clients may send naive times (taken as UTC), and SQLite gives naive ones back."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _unlink(path: Path) -> int | None:
    """Remove a file; its size, or None when it was not there (or could not be removed)."""
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return None
    except OSError as exc:  # left for the next clean-up rather than failing this one
        log.warning("could not remove %s: %s", path, exc)
        return None
    return size


def _old_files(paths: Iterable[Path], before: float) -> Iterator[Path]:
    for path in paths:
        try:
            if path.is_file() and path.stat().st_mtime < before:
                yield path
        except FileNotFoundError:  # removed meanwhile
            continue


# -- request and response shapes --------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryFilter:
    """Which generations a listing or the statistics cover; empty fields match everything."""

    search: str | None = None
    voice: str | None = None
    voice_id: str | None = None
    engine: str | None = None
    source: str | None = None
    sources: frozenset[str] | None = None
    """Only generations asked for by these APIs (``source``); ``None``: every API's."""
    created_after: datetime | None = None
    created_before: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        # What the caller may see at all: its key's own generations (every one for admin).
        conditions: list[ColumnElement[bool]] = [visible(Generation.owner_key_id)]
        if self.search:
            conditions.append(Generation.text.icontains(self.search, autoescape=True))
        if self.voice:
            conditions.append(func.lower(Generation.voice) == self.voice.strip().lower())
        if self.voice_id:
            conditions.append(Generation.voice_id == self.voice_id)
        if self.engine:
            conditions.append(Generation.engine == self.engine)
        if self.source:
            conditions.append(Generation.source == self.source)
        if self.sources is not None:
            conditions.append(Generation.source.in_(sorted(self.sources)))
        if self.created_after:
            conditions.append(Generation.created_at >= _utc(self.created_after))
        if self.created_before:
            conditions.append(Generation.created_at < _utc(self.created_before))
        return conditions


class GenerationPublic(BaseModel):
    id: str
    created_at: datetime
    text: str
    voice: str
    voice_id: str | None = Field(description="The voice's id (a library voice's id, a built-in voice's name).")
    engine: str
    model: str
    parameters: dict[str, Any]
    seed: int | None
    format: str
    sample_rate: int
    duration_s: float
    elapsed_s: float
    first_audio_s: float | None
    real_time_factor: float = Field(
        description="Seconds of compute per second of audio; below 1 is faster than real time."
    )
    source: str
    has_audio: bool = Field(description="Whether the audio file was kept (and not yet cleaned up).")
    has_timestamps: bool = Field(
        False, description="Whether its words were timed: captions at /v1/history/{id}/captions."
    )
    checks: dict[str, Any] | None = Field(
        None,
        description="What hearing its pieces found, when they were checked: pieces checked, retried and"
        " flagged, mean and largest word error rate, and the pieces spoken again or still wrong.",
    )

    @classmethod
    def of(cls, row: Generation) -> GenerationPublic:
        return cls(
            id=row.id,
            created_at=_utc(row.created_at),
            text=row.text,
            voice=row.voice,
            voice_id=row.voice_id,
            engine=row.engine,
            model=row.model,
            parameters=dict(row.parameters or {}),
            seed=row.seed,
            format=row.format,
            sample_rate=row.sample_rate,
            duration_s=row.duration_s,
            elapsed_s=row.elapsed_s,
            first_audio_s=row.first_audio_s,
            real_time_factor=row.real_time_factor,
            source=row.source,
            has_audio=row.file is not None,
            has_timestamps=row.words is not None,
            checks=row.checks,
        )


class GenerationPage(BaseModel):
    items: list[GenerationPublic]
    total: int = Field(description="How many generations match, over all pages.")
    limit: int
    offset: int


class HistoryStats(BaseModel):
    total_generations: int
    total_duration_seconds: float
    total_elapsed_seconds: float
    mean_real_time_factor: float = Field(description="The mean of each generation's real-time factor.")
    generations_by_voice: dict[str, int]
    duration_seconds_by_voice: dict[str, float]
    generations_by_engine: dict[str, int]

    @computed_field(description="The voicebox API's name for generations_by_voice.")  # type: ignore[prop-decorator]
    @property
    def generations_by_profile(self) -> dict[str, int]:
        return self.generations_by_voice


class CleanupResult(BaseModel):
    deleted_generations: int = 0
    deleted_files: int = 0
    freed_bytes: int = 0
    older_than_hours: float | None = Field(None, description="The age limit applied; null when retention is off.")


# -- the service ------------------------------------------------------------------------------------


class HistoryService:
    def __init__(self, *, db: Database, blobs: LocalBlobStore, config: ConfigService) -> None:
        self.db = db
        self.blobs = blobs
        self.config = config

    def list_page(
        self, filters: HistoryFilter | None = None, *, limit: int = DEFAULT_LIMIT, offset: int = 0
    ) -> GenerationPage:
        """Matching generations, newest first, one page of them, with the number in all."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInputError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}", param="limit")
        if offset < 0:
            raise InvalidInputError(f"offset must be 0 or more, got {offset}", param="offset")
        conditions = (filters or HistoryFilter()).conditions()
        with self.db.session() as session:
            total = session.scalar(select(func.count()).select_from(Generation).where(*conditions)) or 0
            rows = session.scalars(
                select(Generation)
                .where(*conditions)
                .order_by(Generation.created_at.desc(), Generation.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
            items = [GenerationPublic.of(row) for row in rows]
        return GenerationPage(items=items, total=total, limit=limit, offset=offset)

    def _row(self, session: Any, generation_id: str) -> Generation:
        row = session.get(Generation, generation_id)
        if row is None or not may_see(row.owner_key_id):
            raise NotFoundError(f"generation {generation_id!r} not found")
        return row  # type: ignore[no-any-return]

    def get(self, generation_id: str) -> GenerationPublic:
        with self.db.session() as session:
            return GenerationPublic.of(self._row(session, generation_id))

    def words(self, generation_id: str) -> list[TimedWord]:
        """The timed words of a generation; 404 when its request did not ask for timestamps."""
        with self.db.session() as session:
            words = self._row(session, generation_id).words
        if words is None:
            raise NotFoundError(
                f"generation {generation_id!r} has no timestamps: ask for them with timestamps: true when speaking"
            )
        return [TimedWord(str(w[0]), float(w[1]), float(w[2]), str(w[3]) if len(w) > 3 else "") for w in words]

    def audio(self, generation_id: str) -> tuple[Path, str]:
        """The audio file of a generation and its format; 404 when it was not kept or is gone."""
        with self.db.session() as session:
            row = self._row(session, generation_id)
            key, fmt = row.file, row.format
        if key is None:
            raise NotFoundError(f"generation {generation_id!r} has no audio: outputs were not being saved")
        path = self.blobs.path(key)
        if not path.is_file():
            raise NotFoundError(f"the audio of generation {generation_id!r} is no longer there")
        return path, fmt

    def delete(self, generation_id: str) -> None:
        with self.db.session() as session:
            row = self._row(session, generation_id)
            key = row.file
            session.delete(row)
        if key:
            _unlink(self.blobs.path(key))

    def stats(self, filters: HistoryFilter | None = None) -> HistoryStats:
        conditions = (filters or HistoryFilter()).conditions()
        with self.db.session() as session:
            total, duration, elapsed = session.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(Generation.duration_s), 0.0),
                    func.coalesce(func.sum(Generation.elapsed_s), 0.0),
                )
                .select_from(Generation)
                .where(*conditions)
            ).one()
            mean_rtf = session.scalar(
                select(func.avg(Generation.elapsed_s / Generation.duration_s)).where(
                    *conditions, Generation.duration_s > 0
                )
            )
            by_voice = session.execute(
                select(Generation.voice, func.count(), func.sum(Generation.duration_s))
                .where(*conditions)
                .group_by(Generation.voice)
                .order_by(func.count().desc(), Generation.voice)
            ).all()
            by_engine = session.execute(
                select(Generation.engine, func.count())
                .where(*conditions)
                .group_by(Generation.engine)
                .order_by(func.count().desc(), Generation.engine)
            ).all()
        return HistoryStats(
            total_generations=total,
            total_duration_seconds=float(duration),
            total_elapsed_seconds=float(elapsed),
            mean_real_time_factor=float(mean_rtf or 0.0),
            generations_by_voice={voice: count for voice, count, _ in by_voice},
            duration_seconds_by_voice={voice: float(seconds or 0.0) for voice, _, seconds in by_voice},
            generations_by_engine={engine: count for engine, count in by_engine},
        )

    # -- retention ------------------------------------------------------------------------------

    def counts_by_voice_id(self, filters: HistoryFilter | None = None) -> dict[str, int]:
        """How many generations each voice (by id) spoke, for rows that know their voice's id."""
        conditions = (filters or HistoryFilter()).conditions()
        with self.db.session() as session:
            rows = session.execute(
                select(Generation.voice_id, func.count())
                .where(*conditions, Generation.voice_id.is_not(None))
                .group_by(Generation.voice_id)
                .order_by(func.count().desc(), Generation.voice_id)
            ).all()
        return {str(voice_id): count for voice_id, count in rows}

    def cleanup(self, older_than_hours: float, *, sources: frozenset[str] | None = GOVERNED_SOURCES) -> CleanupResult:
        """Delete the generations of ``sources`` (default: the ones the runtime config governs;
        ``None``: every API's, when an operator asks for that explicitly) made more than
        ``older_than_hours`` ago, their files, and files in the generations folder that no row
        names (once older than the cut-off)."""
        if not math.isfinite(older_than_hours) or older_than_hours < 0:
            raise InvalidInputError(
                f"older_than_hours must be 0 or more, got {older_than_hours}", param="older_than_hours"
            )
        # Beyond a million hours (114 years) nothing is old enough; datetime arithmetic would overflow.
        cutoff = utcnow() - timedelta(hours=min(older_than_hours, 1e6))
        result = self._purge(HistoryFilter(sources=sources, created_before=cutoff), cutoff)
        result.older_than_hours = older_than_hours
        return result

    def apply_retention(
        self, older_than_hours: float | None = None, *, sources: frozenset[str] | None = GOVERNED_SOURCES
    ) -> CleanupResult:
        """The clean-up for the runtime config's ``output_retention_hours`` (0: keep everything),
        or for ``older_than_hours`` when given."""
        if older_than_hours is None:
            older_than_hours = self.config.get().output_retention_hours
            if older_than_hours <= 0:
                return CleanupResult()
        return self.cleanup(older_than_hours, sources=sources)

    def delete_all(self, *, sources: frozenset[str] | None = GOVERNED_SOURCES) -> CleanupResult:
        """Every generation of ``sources`` and its file (the Dia server API's ``DELETE /logs``)."""
        return self._purge(HistoryFilter(sources=sources), utcnow())

    def _purge(self, filters: HistoryFilter, cutoff: datetime) -> CleanupResult:
        with self.db.session() as session:
            doomed = session.execute(select(Generation.id, Generation.file).where(*filters.conditions())).all()
            for ids in _chunks([row.id for row in doomed]):
                session.execute(delete(Generation).where(Generation.id.in_(ids)))
        result = CleanupResult(deleted_generations=len(doomed))
        sizes = [_unlink(self.blobs.path(row.file)) for row in doomed if row.file]
        sizes += self._remove_orphans(min(cutoff.timestamp(), time.time() - ORPHAN_MIN_AGE_S))
        result.deleted_files = sum(1 for size in sizes if size is not None)
        result.freed_bytes = sum(size for size in sizes if size is not None)
        return result

    def _remove_orphans(self, before: float) -> list[int | None]:
        """Remove files under generations/ last modified before ``before`` (a Unix time) that no
        row names: left by a crash, or by a row deleted while its file could not be."""
        folder = self.blobs.path(GENERATIONS)
        if not folder.is_dir():
            return []
        old = {f"{GENERATIONS}/{path.name}": path for path in _old_files(folder.iterdir(), before)}
        with self.db.session() as session:
            named: set[str | None] = set()
            for keys in _chunks(list(old)):
                named.update(session.scalars(select(Generation.file).where(Generation.file.in_(keys))))
        return [_unlink(path) for key, path in old.items() if key not in named]
