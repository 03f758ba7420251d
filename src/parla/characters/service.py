"""Characters (Titans character API): personas that answer questions from their own knowledge, in their own
style and voice, by text or by speech.

A character ties together services that exist on their own: a voice in the library (made from
``voice_cloning_audio``), a knowledge base in Chroma, a language model (an OpenAI-compatible
endpoint or the embedded GGUF model), Whisper for spoken questions and the speech service for the
answers, which are ordinary generations (history, retention) served at ``audio_url``.

``CharacterService`` is the one door the routes use; behind it each part does one thing:
``checks`` (every input, before anything is written), ``store`` (the row, its voice, knowledge and
files, undone when a step fails), ``hearing`` (Whisper) and ``conversation`` (answering).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

from parla.characters.checks import CharacterChecks
from parla.characters.conversation import Conversation
from parla.characters.hearing import Hearing
from parla.characters.llm import LlamaCppChat, Message, OpenAICompatibleChat
from parla.characters.runtime import LlamaRuntime
from parla.characters.shapes import (
    Answer,
    CharacterFields,
    CharacterPublic,
    CharacterUploads,
    CurrentSettings,
    Persona,
    STTSettings,
    Upload,
    VoiceCloningSettings,
)
from parla.characters.store import CharacterStore
from parla.knowledge.store import KnowledgeBase
from parla.offload import offload
from parla.services.speech import SpeechService
from parla.services.transcription import Transcriber
from parla.services.voices import VoiceLibrary
from parla.settings import Settings
from parla.store.blobs import LocalBlobStore
from parla.store.db import Database

__all__ = [
    "Answer",
    "CharacterFields",
    "CharacterPublic",
    "CharacterService",
    "CharacterUploads",
    "Persona",
    "STTSettings",
    "Upload",
    "VoiceCloningSettings",
]


class CharacterService:
    """Blocking methods are for worker threads (the routes ``offload`` them); ``answer``,
    ``converse`` and ``load`` are async and keep their blocking work off the event loop themselves."""

    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        blobs: LocalBlobStore,
        voices: VoiceLibrary,
        speech: SpeechService,
        transcriber: Transcriber,
        knowledge: KnowledgeBase,
        embedded: LlamaCppChat | None = None,
        remote: OpenAICompatibleChat | None = None,
        llm_runtime: LlamaRuntime | None = None,
    ) -> None:
        self.settings = settings
        self.speech = speech
        self.knowledge = knowledge
        self.llm_runtime = llm_runtime or LlamaRuntime(settings.data_dir / "logs" / "llm-runtime.log")
        self.checks = CharacterChecks(settings=settings, voices=voices)
        self.store = CharacterStore(db=db, blobs=blobs, voices=voices, knowledge=knowledge)
        self.hearing = Hearing(settings=settings, transcriber=transcriber)
        self.conversation = Conversation(
            store=self.store,
            checks=self.checks,
            speech=speech,
            knowledge=knowledge,
            embedded=embedded or LlamaCppChat(),
            remote=remote or OpenAICompatibleChat(),
            runtime=lambda: self.llm_runtime,  # read at each question: a runtime set here later is the one asked
        )

    def loaded(self) -> dict[str, Any]:
        """What the characters hold in memory, for ``/health``: each loads on its first use, so a
        server that only speaks reports none. ``whisper_models``: characters' own Whisper models
        (``stt_settings.model_path``) only; the server's are its transcriber's."""
        return {
            "language_models": self.conversation.embedded.loaded_models,
            "knowledge_store": self.knowledge.loaded,
            "embedder": self.knowledge.embedder.loaded,
            "whisper_models": self.hearing.loaded_models(),
        }

    # -- characters (blocking) ----------------------------------------------------------------------

    def get(self, character_id: int) -> CharacterPublic:
        return self.store.get(character_id)

    def list_all(self) -> list[CharacterPublic]:
        return self.store.list_all()

    def image_path(self, character_id: int, filename: str) -> Path:
        return self.store.image_path(character_id, filename)

    def answer_audio(self, character_id: int, filename: str) -> Path:
        """The WAV file at an answer's ``audio_url``; 404 when unknown or removed by retention."""
        return self.store.answer_audio(character_id, filename)

    def create(self, fields: CharacterFields, uploads: CharacterUploads) -> CharacterPublic:
        # Everything that can be checked is checked before anything is written.
        return self.store.create(self.checks.new_character(fields, uploads))

    def update(self, character_id: int, fields: CharacterFields, uploads: CharacterUploads) -> CharacterPublic:
        """Change what is given; a new file replaces the old one (knowledge, image, voice, style)."""
        current = self.store.read(character_id, CurrentSettings.of)
        return self.store.update(character_id, self.checks.change(current, fields, uploads))

    def delete(self, character_id: int) -> None:
        """The character, its files, its knowledge base, and the voice made for it."""
        self.store.delete(character_id)

    def local_model(self, name: str, param: str) -> Path:
        """The GGUF file of a model named ``name`` on this machine (see ``CharacterChecks.local_model``)."""
        return self.checks.local_model(name, param)

    # -- answering ----------------------------------------------------------------------------------

    def check_question(self, question: str | None) -> str:
        return self.checks.question(question)

    def persona(self, character_id: int) -> Persona:
        return self.conversation.persona(character_id)

    def require_language_model(self, persona: Persona) -> None:
        self.conversation.require_language_model(persona)

    def transcribe_question(self, character_id: int, data: bytes) -> str:
        """What the person asked, heard by the character's Whisper (blocking)."""
        persona = self.persona(character_id)
        return self.hearing.question(data, persona.stt)

    def tokens(self, persona: Persona, messages: list[Message]) -> Iterator[str]:
        """The answer as the model writes it (blocking)."""
        return self.conversation.tokens(persona, messages)

    async def answer(self, character_id: int, question: str) -> Answer:
        return await self.conversation.answer(character_id, question)

    def converse(self, character_id: int, question: str, *, speak: bool = True) -> AsyncGenerator[dict[str, Any], None]:
        return self.conversation.converse(character_id, question, speak=speak)

    async def load(self, character_id: int) -> list[str]:
        """Load what the character's answers need (model, embedder, voice, Whisper); returns what was loaded."""
        persona = await offload(self.persona, character_id)
        loaded: list[str] = []
        if await self.conversation.load_model(persona):
            loaded.append("language model")
        await offload(self.knowledge.embedder.embed, ["warm up"])
        loaded.append("embedder")
        if persona.voice:
            await self.speech.warm_voice(persona.voice)
            loaded.append("voice")
        transcriber = await offload(self.hearing.transcriber_for, persona.stt)
        await offload(transcriber.load)
        loaded.append("speech recognition")
        return loaded
