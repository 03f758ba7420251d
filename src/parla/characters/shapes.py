"""What the character modules hand each other and the Titans character API: the request's fields
and uploads, a character as shown, what checking a request decided (``NewCharacter``,
``CharacterChange``), what answering needs of a character (``Persona``) and an answer.

Kept apart from the modules that check, store and answer, so that each can name these without
importing the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from parla.audio.preprocess import PreprocessSettings
from parla.characters.llm import LLMConfig
from parla.characters.prompting import StyleExample, knowledge_context
from parla.knowledge.store import Passage
from parla.store.models import Character

ANSWER_SOURCE = "character"
"""The ``source`` of the generations that are characters' answers (served at ``audio_url``)."""

# -- the request ---------------------------------------------------------------------------------


ENGINE_ALIASES = {"f5tts": "f5"}
"""The Titans character API's model names that are a Parla engine under its own name: a character
asking for ``f5tts`` speaks with the ``f5`` engine when it can run (a worker named ``f5tts`` first)."""


class VoiceCloningSettings(BaseModel):
    """The Titans character API's ``voice_cloning_settings``, plus Parla's ``voice`` (an existing
    voice by name or id)."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(
        None, description="The engine; the Titans character API's names (f5tts, xtts, zonos) when such a worker runs."
    )
    reference_text: str | None = Field(None, max_length=5000)
    preprocess_audio: bool = True
    language: str = Field("en", min_length=2, max_length=16)
    voice: str | None = Field(None, description="A voice from the library (or a built-in one) instead of an upload.")


class STTSettings(BaseModel):
    """The Titans character API's ``stt_settings``. Whisper is the only recogniser; ``model_path`` names another
    CTranslate2 Whisper model inside the allowed directories."""

    model_config = ConfigDict(extra="allow")

    model: str = "whisper"
    model_size: str | None = None
    model_path: str | None = None
    language: str | None = Field(None, min_length=2, max_length=16)


class CharacterFields(BaseModel):
    """The form fields of ``/create-character`` and ``/update-character``, parsed."""

    name: str | None = Field(None, max_length=255)
    llm_model: str | None = Field(None, max_length=512)
    llm_config: dict[str, Any] | None = None
    voice_cloning_settings: dict[str, Any] | None = None
    stt_settings: dict[str, Any] | None = None


@dataclass
class Upload:
    data: bytes
    filename: str


@dataclass
class CharacterUploads:
    character_image: Upload | None = None
    knowledge_base_file: Upload | None = None
    voice_cloning_audio: Upload | None = None
    style_tuning_file: Upload | None = None


# -- checked, to be written ----------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    upload: Upload
    kind: str
    """The file extension its bytes call for: png, jpg, gif or webp."""


@dataclass(frozen=True)
class Knowledge:
    upload: Upload
    passages: list[str]


@dataclass(frozen=True)
class VoiceSource:
    """How to make the character's library voice from its reference recording."""

    upload: Upload
    preprocessing: PreprocessSettings | None
    """``None``: the recording is used as it came (``preprocess_audio`` off)."""
    language: str
    transcript: str | None


@dataclass(frozen=True)
class NewCharacter:
    """A character to create: every input checked, nothing written yet."""

    name: str
    llm_model: str | None
    llm_config: dict[str, Any]
    voice_cloning_settings: dict[str, Any]
    stt_settings: dict[str, Any]
    style_examples: list[dict[str, str]]
    voice: VoiceSource | None
    image: Image | None
    knowledge: Knowledge | None


@dataclass(frozen=True)
class CharacterChange:
    """A change to a character: the columns to set and the files to replace, every input checked."""

    columns: dict[str, Any]
    voice: VoiceSource | None
    image: Image | None
    knowledge: Knowledge | None


@dataclass(frozen=True)
class CurrentSettings:
    """A character's settings as stored, which a change is checked against."""

    llm_model: str | None
    llm_config: dict[str, Any]
    voice_cloning_settings: dict[str, Any]

    @classmethod
    def of(cls, row: Character) -> CurrentSettings:
        return cls(row.llm_model, dict(row.llm_config or {}), dict(row.voice_cloning_settings or {}))


# -- shown and answered --------------------------------------------------------------------------


class CharacterPublic(BaseModel):
    id: int
    name: str
    image_file: str | None = Field(None, exclude=True)
    llm_model: str | None
    llm_config: dict[str, Any]
    voice_cloning_settings: dict[str, Any]
    stt_settings: dict[str, Any]
    voice_id: str | None
    knowledge_files: list[dict[str, Any]]
    style_examples: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Character) -> CharacterPublic:
        config = dict(row.llm_config or {})
        if config.get("api_key"):
            config["api_key"] = "********"  # never shown back, like any secret
        return cls(
            id=row.id,
            name=row.name,
            image_file=row.image_file,
            llm_model=row.llm_model,
            llm_config=config,
            voice_cloning_settings=dict(row.voice_cloning_settings or {}),
            stt_settings=dict(row.stt_settings or {}),
            voice_id=row.voice_id,
            knowledge_files=list(row.knowledge_files or []),
            style_examples=len(row.style_examples or []),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@dataclass(frozen=True)
class Persona:
    """What answering needs of a character, read once (no database session held while the model writes)."""

    id: int
    name: str
    llm: LLMConfig
    voice: str | None
    engine: str | None
    language: str
    stt: STTSettings
    style_examples: list[StyleExample]


@dataclass
class Answer:
    question: str
    text: str
    passages: list[Passage]
    character_id: int
    character_name: str
    generation_id: str | None = None
    audio_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    source: str = "generated"
    """Which path answered: ``generated`` (the model), ``extracted`` (a passage sentence, the model's
    answer being unsupported), ``declined`` (the knowledge base does not say)."""
    supporting_passages: list[dict[str, object]] = field(default_factory=list)
    """The passages (``Document N`` as in ``knowledge_context``) and sentences the answer stands on."""

    @property
    def knowledge_context(self) -> str:
        return knowledge_context(self.passages)
