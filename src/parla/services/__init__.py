"""Services own Parla's behaviour; routers and compatibility dialects call them."""

from __future__ import annotations

from dataclasses import dataclass

from parla.engines.registry import EngineRegistry
from parla.services.speech import SpeechService
from parla.services.transcription import Transcriber
from parla.services.voices import VoiceLibrary
from parla.settings import Settings
from parla.store.blobs import LocalBlobStore
from parla.store.db import Database


@dataclass
class Services:
    settings: Settings
    db: Database
    blobs: LocalBlobStore
    engines: EngineRegistry
    voices: VoiceLibrary
    transcriber: Transcriber
    speech: SpeechService

    @classmethod
    def build(cls, settings: Settings, *, engines: EngineRegistry | None = None) -> Services:
        """Wire every service from ``settings`` and bring the database schema up to date."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.resolved_database_url)
        db.migrate()
        blobs = LocalBlobStore(settings.data_dir)
        engines = engines or EngineRegistry.from_entry_points(settings)
        transcriber = Transcriber(settings)
        voices = VoiceLibrary(settings=settings, db=db, blobs=blobs, transcriber=transcriber)
        speech = SpeechService(settings=settings, registry=engines, voices=voices, db=db, blobs=blobs)
        return cls(
            settings=settings,
            db=db,
            blobs=blobs,
            engines=engines,
            voices=voices,
            transcriber=transcriber,
            speech=speech,
        )

    def close(self) -> None:
        self.engines.shutdown()
        self.db.dispose()


__all__ = ["Services"]
