"""Services own Parla's behaviour; routers and compatibility dialects call them."""

from __future__ import annotations

from dataclasses import dataclass

from parla.characters.service import CharacterService
from parla.engines.registry import EngineRegistry
from parla.knowledge.embedder import Embedder
from parla.knowledge.store import KnowledgeBase
from parla.services.dialogue import DialogueService
from parla.services.history import HistoryService
from parla.services.jobs import JobService
from parla.services.keys import KeyService
from parla.services.mappings import VoiceMappings
from parla.services.pronunciations import PronunciationDictionary
from parla.services.queue import JobQueue
from parla.services.runtime_config import ConfigService
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
    config: ConfigService
    history: HistoryService
    jobs: JobService
    queue: JobQueue
    dialogue: DialogueService
    mappings: VoiceMappings
    characters: CharacterService
    keys: KeyService
    pronunciations: PronunciationDictionary

    @classmethod
    def build(cls, settings: Settings, *, engines: EngineRegistry | None = None, role: str = "server") -> Services:
        """Wire every service from ``settings`` and bring the database schema up to date. Each is
        whole once constructed: what it needs is given to it, in the order below. ``role``: what
        this process is to the job queue (``server``, or ``worker`` for ``parla worker``)."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.resolved_database_url)
        db.migrate()
        blobs = LocalBlobStore(settings.data_dir)
        engines = engines or EngineRegistry.from_entry_points(settings)
        engines.start()  # remote engines' state refreshers (stopped by close)
        transcriber = Transcriber(settings)
        mappings = VoiceMappings(settings=settings, db=db, transcriber=transcriber, presets=engines.voice_presets)
        voices = VoiceLibrary(
            settings=settings,
            db=db,
            blobs=blobs,
            transcriber=transcriber,
            aliases=mappings.resolve,
            presets=engines.voice_presets,
            engine_voices=engines.engine_voices,
            engine_voice=engines.engine_voice,
        )
        config = ConfigService(settings=settings, db=db)
        config.apply()  # the log level stored by a PUT /config before this start
        speech = SpeechService(
            settings=settings,
            registry=engines,
            voices=voices,
            db=db,
            blobs=blobs,
            save_outputs=lambda: config.get().save_outputs,
        )
        dialogue = DialogueService(speech, engines)
        jobs = JobService(settings=settings, db=db, speech=speech, dialogue=dialogue, role=role)
        characters = CharacterService(
            settings=settings,
            db=db,
            blobs=blobs,
            voices=voices,
            speech=speech,
            transcriber=transcriber,
            knowledge=KnowledgeBase(
                path=settings.resolved_chroma_path,
                url=settings.chroma_url,
                embedder=Embedder(settings.embedding_model_dir),
            ),
        )
        return cls(
            settings=settings,
            db=db,
            blobs=blobs,
            engines=engines,
            voices=voices,
            transcriber=transcriber,
            speech=speech,
            config=config,
            history=HistoryService(db=db, blobs=blobs, config=config),
            jobs=jobs,
            queue=jobs.queue,
            dialogue=dialogue,
            keys=KeyService(db),
            pronunciations=speech.pronunciations,
            mappings=mappings,
            characters=characters,
        )

    def close(self) -> None:
        self.engines.shutdown()
        self.db.dispose()


__all__ = ["Services"]
