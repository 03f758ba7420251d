"""SQL tables. One family per entity; ids are UUID strings so rows move between databases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Dialect, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every database (SQLite keeps no zone and returns naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.astimezone(UTC) if value is not None and value.tzinfo else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Generation(Base):
    """One synthesis, from any path (API, CLI, jobs): what was said, how, and where the audio is."""

    __tablename__ = "generations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_key_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    """The API key that made it (None: made without keys, or before them: the admins')."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    text: Mapped[str] = mapped_column(Text)
    voice: Mapped[str] = mapped_column(String(255), index=True)
    voice_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    """The id of the voice that spoke (a library voice's id, a built-in voice's name); unlike the
    name, it stays when a library voice is renamed."""
    engine: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(128))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    format: Mapped[str] = mapped_column(String(16))
    sample_rate: Mapped[int] = mapped_column(Integer)
    duration_s: Mapped[float] = mapped_column(Float)
    elapsed_s: Mapped[float] = mapped_column(Float)
    first_audio_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    file: Mapped[str | None] = mapped_column(String(512), nullable=True)
    source: Mapped[str] = mapped_column(String(32), default="api", index=True)
    """The API that asked for it (``openai``, ``generate``, ``voicebox``, ``character``...): each
    API lists, keeps and deletes its own."""
    words: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    """Each spoken word as ``[word, start, end, punctuation after it]`` (seconds), when timestamps were
    asked for: its captions."""
    checks: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """What hearing its pieces found (``services.checks.CheckReport.describe``), when they were checked."""

    @property
    def real_time_factor(self) -> float:
        return self.elapsed_s / self.duration_s if self.duration_s else 0.0


class Voice(Base):
    """A voice profile: one speaker, one or more samples (audio + transcript)."""

    __tablename__ = "voices"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_key_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    """The API key that made it (None: made without keys, or before them: the admins')."""
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    language: Mapped[str] = mapped_column(String(16), default="en")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    blend: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    """A blend of other voices (``alloy(2)+Ada(1)``) this voice speaks as, instead of samples."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    samples: Mapped[list[VoiceSample]] = relationship(
        back_populates="voice", cascade="all, delete-orphan", order_by="VoiceSample.created_at"
    )


class VoiceSample(Base):
    """One cleaned reference recording of a voice, stored as WAV, with its transcript and report."""

    __tablename__ = "voice_samples"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    voice_id: Mapped[str] = mapped_column(ForeignKey("voices.id", ondelete="CASCADE"), index=True)
    file: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    transcript: Mapped[str] = mapped_column(Text, default="")
    transcript_source: Mapped[str] = mapped_column(String(16), default="user")
    language: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """The language the sample is spoken in (and its transcript written in): what Whisper heard or was
    told, else the voice's when it was added. ``None`` for samples stored before languages were kept:
    they count as in their voice's language."""
    duration_s: Mapped[float] = mapped_column(Float)
    sample_rate: Mapped[int] = mapped_column(Integer)
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    voice: Mapped[Voice] = relationship(back_populates="samples")


class ConfigEntry(Base):
    """One runtime setting changed through the API (the Dia server API's ``PUT /config``). Only changed keys
    have a row; the others keep their defaults, so a new setting needs no data migration."""

    __tablename__ = "config"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


class Job(Base):
    """Work done in the background. This table is the truth about a job; the queue only carries ids."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_key_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    """The API key that made it (None: made without keys, or before them: the admins')."""
    kind: Mapped[str] = mapped_column(String(32), default="speech")
    source: Mapped[str] = mapped_column(String(32), default="job")
    """The generation's ``source`` once done: which API queued it."""
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    batch_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    generation_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Worker(Base):
    """A queue consumer (in the server or a ``parla worker`` process), alive while it heartbeats."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class VoiceMapping(Base):
    """The Dia server API's voice mapping: a voice id that speaks with an uploaded audio prompt (or a style)."""

    __tablename__ = "voice_mappings"

    voice_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    style: Mapped[str] = mapped_column(String(64), default="neutral")
    primary_speaker: Mapped[str] = mapped_column(String(8), default="S1")
    audio_prompt: Mapped[str | None] = mapped_column(String(100), nullable=True)
    audio_prompt_transcript: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Character(Base):
    """The Titans character API's character: a persona with a language model, knowledge, style examples and a voice.

    Integer ids, as the Titans character API's clients expect (``"character_id": 1``). Files live under
    ``characters/<id>/``; the knowledge base lives in Chroma under the character's id.
    """

    __tablename__ = "characters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner_key_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    """The API key that made it (None: made without keys, or before them: the admins')."""
    name: Mapped[str] = mapped_column(String(255), unique=True)
    llm_model: Mapped[str | None] = mapped_column(String(512), nullable=True)
    llm_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    voice_cloning_settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    stt_settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    voice_id: Mapped[str | None] = mapped_column(ForeignKey("voices.id", ondelete="SET NULL"), nullable=True)
    owns_voice: Mapped[bool] = mapped_column(Boolean, default=False)
    """The voice was made from this character's ``voice_cloning_audio`` and goes with it."""
    image_file: Mapped[str | None] = mapped_column(String(512), nullable=True)
    knowledge_files: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    style_examples: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class ApiKey(Base):
    """A key clients send (``Authorization: Bearer ...`` or ``X-API-Key``). Only its SHA-256 is
    kept, and the first characters to recognise it in a list: the key itself is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    limits: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    """This key's own limits (``KeyLimits`` fields); the others come from the settings."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    """Revoked keys stay listed (who had access, until when); they open nothing."""


class UsageCounter(Base):
    """What a key used in one window (a minute's requests, a day's characters or audio seconds),
    when the counters live in the database (no ``PARLA_REDIS_URL``)."""

    __tablename__ = "usage_counters"

    key_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    window_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    """The window's number: seconds since the epoch divided by its length."""
    amount: Mapped[float] = mapped_column(Float, default=0.0)


class GenerationLease(Base):
    """One generation under way for a key (its concurrency limit), until it ends or expires (a
    process that died mid-generation frees its slot when the lease runs out)."""

    __tablename__ = "generation_leases"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    key_id: Mapped[str] = mapped_column(String(36), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Pronunciation(Base):
    """How to say a word: a respelling (any engine) or IPA phonemes (engines that read them), for
    every voice or for one."""

    __tablename__ = "pronunciations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    word: Mapped[str] = mapped_column(String(100), index=True)
    respelling: Mapped[str | None] = mapped_column(String(200), nullable=True)
    phonemes: Mapped[str | None] = mapped_column(String(200), nullable=True)
    voice_id: Mapped[str | None] = mapped_column(ForeignKey("voices.id", ondelete="CASCADE"), nullable=True, index=True)
    """None: for every voice (an admin's to make); else this voice's, and goes with it."""
    owner_key_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
