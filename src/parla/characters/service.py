"""Characters (Titans character API): personas that answer questions from their own knowledge, in their own
style and voice, by text or by speech.

A character ties together services that exist on their own: a voice in the library (made from
``voice_cloning_audio``), a knowledge base in Chroma, a language model (an OpenAI-compatible
endpoint or the embedded GGUF model), Whisper for spoken questions and the speech service for the
answers, which are ordinary generations (history, retention) served at ``audio_url``.

Creating or changing a character checks every input before anything is written, then undoes what
it wrote if a later step fails: no half-made characters, voices, files or collections.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import shutil
import threading
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from parla.audio.decode import AudioDecodeError, AudioTooLongError, decode_audio
from parla.audio.encode import encode_audio, open_encoder
from parla.audio.preprocess import PreprocessSettings, preprocess
from parla.audio.quality import MAX_SECONDS as MAX_SAMPLE_SECONDS
from parla.characters.llm import (
    REPO_FILE,
    LlamaCppChat,
    LLMConfig,
    LLMError,
    Message,
    ModelLookupError,
    OpenAICompatibleChat,
    bundled_model_path,
    chat_model_for,
    find_local_model,
    is_bundled_model,
    local_model_help,
    models_dir_file,
)
from parla.characters.prompting import (
    SentenceStream,
    StyleExample,
    as_question,
    build_messages,
    knowledge_context,
    parse_style_examples,
)
from parla.characters.runtime import LlamaRuntime
from parla.engines.base import AudioChunk
from parla.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    ParlaError,
    ServiceUnavailableError,
    TooLargeError,
    UpstreamError,
    validation_detail,
)
from parla.knowledge.documents import DocumentError, passages
from parla.knowledge.store import KnowledgeBase, Passage
from parla.offload import offload
from parla.paths import PathNotAllowedError, PathPolicy
from parla.services.speech import SpeechPlan, SpeechService
from parla.services.transcription import Transcriber
from parla.services.voices import VoiceCreate, VoiceLibrary
from parla.settings import Settings
from parla.store.blobs import LocalBlobStore
from parla.store.db import Database
from parla.store.models import Character, new_id, utcnow

log = logging.getLogger(__name__)

QUESTION_AUDIO_MAX_S = 120.0
MAX_IMAGE_BYTES = 10 * 1024 * 1024
PASSAGES_PER_ANSWER = 3
RELEVANCE_FLOOR = 0.6
"""Passages scoring below this fraction of the best one are left out: a small model answers from
whatever text it is given, so a weakly related passage is a wrong answer waiting to happen."""
ANSWER_FORMAT = "wav"
"""The Titans character API serves answers as WAV files."""

_IMAGE_KINDS = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpg", b"GIF87a": "gif", b"GIF89a": "gif"}


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

    @property
    def knowledge_context(self) -> str:
        return knowledge_context(self.passages)


def _image_kind(data: bytes) -> str | None:
    for magic, kind in _IMAGE_KINDS.items():
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _safe_filename(name: str) -> str:
    base = Path(name or "knowledge.txt").name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "knowledge.txt"


class CharacterService:
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
        self.db = db
        self.blobs = blobs
        self.voices = voices
        self.speech = speech
        self.transcriber = transcriber
        self.knowledge = knowledge
        self.embedded = embedded or LlamaCppChat()
        self.remote = remote or OpenAICompatibleChat()
        self.llm_runtime = llm_runtime or LlamaRuntime(settings.data_dir / "logs" / "llm-runtime.log")
        self.paths = PathPolicy.from_settings(settings)
        self._transcribers: dict[Path, Transcriber] = {}
        self._transcribers_lock = threading.Lock()

    # -- reading --------------------------------------------------------------------------------

    def _row(self, session: Any, character_id: int) -> Character:
        # Ids beyond a 64-bit integer cannot be in any database (and SQLite's driver raises on them).
        row = session.get(Character, character_id) if 0 < character_id < 2**63 else None
        if row is None:
            raise NotFoundError(f"character {character_id} not found", param="character_id")
        assert isinstance(row, Character)
        return row

    def get(self, character_id: int) -> CharacterPublic:
        with self.db.session() as session:
            return CharacterPublic.of(self._row(session, character_id))

    def list_all(self) -> list[CharacterPublic]:
        with self.db.session() as session:
            rows = session.scalars(select(Character).order_by(Character.id)).all()
            return [CharacterPublic.of(row) for row in rows]

    def image_path(self, character_id: int, filename: str) -> Path:
        with self.db.session() as session:
            image = self._row(session, character_id).image_file
        if not image or Path(image).name != filename:
            raise NotFoundError(f"character {character_id} has no image {filename!r}")
        return self.blobs.path(image)

    # -- checking -------------------------------------------------------------------------------

    def _llm_config(self, llm_model: str | None, raw: dict[str, Any] | None) -> tuple[LLMConfig, dict[str, Any]]:
        """The model configuration, checked; and what is stored (the request's own fields).

        A named model is what answers, never a stand-in: ``llm_config.model_path`` is a GGUF file
        for the embedded runtime; ``llm_config.base_url`` an endpoint that gets the name; a name
        that is the bundled model or a GGUF file runs embedded; any other name goes to the
        configured endpoint (PARLA_LLM_BASE_URL), else to a GGUF copy of it on this machine, and
        is refused (400) when there is neither. Naming nothing: the configured endpoint, else the
        default GGUF file (PARLA_LLM_MODEL_PATH), else the bundled model."""
        stored = dict(raw or {})
        try:
            config = LLMConfig.model_validate(stored)
        except ValidationError as exc:
            raise InvalidInputError(validation_detail(exc.errors(), "llm_config")[0], param="llm_config") from None
        if config.base_url and not re.match(r"^https?://", config.base_url):
            raise InvalidInputError("llm_config.base_url must be an http(s) URL", param="llm_config")
        if config.model_path and config.base_url:
            # Two models named: which one answers would be a guess.
            raise InvalidInputError(
                "llm_config names both model_path (a GGUF file run here) and base_url (an endpoint): keep one",
                param="llm_config",
            )
        named = (config.model_name or llm_model or "").strip() or None
        param = "llm_config.model_name" if config.model_name else "llm_model"
        if config.model_path:
            config.model_path = str(self.local_model(config.model_path, "llm_config.model_path"))
        elif config.base_url:
            config.model_name = named or self.settings.llm_model
        elif named and is_bundled_model(named):
            config.model_path = None  # the embedded runtime's default: the bundled file
        elif named and (named.lower().endswith(".gguf") or not self.settings.llm_base_url):
            config.model_path = str(self.local_model(named, param))
        elif named:
            self._use_default_endpoint(config)
            config.model_name = named
        elif self.settings.llm_base_url:
            self._use_default_endpoint(config)
            config.model_name = self.settings.llm_model
        elif self.settings.llm_model_path:
            config.model_path = str(self.settings.llm_model_path)
        return config, stored

    def _use_default_endpoint(self, config: LLMConfig) -> None:
        config.base_url = self.settings.llm_base_url
        config.api_key = config.api_key or self.settings.llm_api_key

    def local_model(self, name: str, param: str) -> Path:
        """The GGUF file of a model on this machine, read offline (nothing is downloaded): the bundled
        model by any of its names; a GGUF file in the data dir, ``PARLA_ALLOWED_PATHS`` or
        ``PARLA_MODELS_DIR`` (there also by its file name); or a Hugging Face repository id
        (``org/name``, ``org/name/file.gguf``) whose copy in ``PARLA_MODELS_DIR`` or the hub cache
        holds a GGUF file. Otherwise a 400 that says which model was named and what to configure:
        a named model is never replaced by another one."""
        if is_bundled_model(name):
            try:
                return bundled_model_path()
            except LLMError as exc:
                raise ServiceUnavailableError(str(exc)) from None
        models_dir = self.settings.models_dir
        repo_file = REPO_FILE.match(name.strip()) is not None
        if name.lower().endswith(".gguf"):
            in_models_dir = models_dir_file(name, models_dir)
            if in_models_dir:
                return in_models_dir
            roots = [self.settings.data_dir, *self.settings.allowed_paths, *([models_dir] if models_dir else [])]
            try:
                path: Path | None = PathPolicy(roots).resolve(name, param=param)
            except PathNotAllowedError:
                if not repo_file:  # a path, and outside the allowed directories
                    raise
                path = None
            if path and path.is_file():
                return path
            if not repo_file:
                raise InvalidInputError(f"no GGUF model file at {name}", param=param)
        try:
            found = find_local_model(name, models_dir)
        except ModelLookupError as exc:
            raise InvalidInputError(f"{param}: {exc}", param=param) from None
        if found and found.kind == "gguf":
            return found.path
        if found:
            raise InvalidInputError(
                f"{param} {name!r} is here ({found.path}) but as a transformers model, which Parla cannot run in "
                "process (it runs GGUF files, and downloads no models at run time): serve it with an "
                "OpenAI-compatible server (vLLM, text-generation-inference) and set llm_config.base_url (or "
                "PARLA_LLM_BASE_URL / OPENAI_BASE_URL), or put a GGUF file of it in that folder",
                param=param,
            )
        raise InvalidInputError(
            f"{param} {name!r} is not a model Parla can run here, and Parla downloads no models at run time (it "
            "works offline): it is not the bundled SmolLM2-135M-Instruct and no GGUF file of it is on this machine. "
            f"Set llm_config.base_url (or PARLA_LLM_BASE_URL / OPENAI_BASE_URL) to an OpenAI-compatible endpoint "
            f"that serves {name!r}, or {local_model_help(name, models_dir)}",
            param=param,
        )

    def _persona(self, row: Character) -> Persona:
        config, _ = self._llm_config(row.llm_model, row.llm_config)
        voice_settings = VoiceCloningSettings.model_validate(row.voice_cloning_settings or {})
        engine = voice_settings.model if voice_settings.model in self.speech.registry.names() else None
        return Persona(
            id=row.id,
            name=row.name,
            llm=config,
            voice=row.voice_id or voice_settings.voice,
            engine=engine,
            language=voice_settings.language,
            stt=STTSettings.model_validate(row.stt_settings or {}),
            style_examples=[StyleExample.model_validate(e) for e in row.style_examples or []],
        )

    def persona(self, character_id: int) -> Persona:
        with self.db.session() as session:
            return self._persona(self._row(session, character_id))

    def require_language_model(self, persona: Persona) -> None:
        """A 503 that says when, before any work, while the embedded model's runtime is still being
        installed (or is missing); a character on an endpoint does not need it."""
        if persona.llm.base_url:
            return
        state = self.llm_runtime.state()
        if not state.ready:
            raise ServiceUnavailableError(state.detail)

    @staticmethod
    def _settings_of(model: type[BaseModel], raw: dict[str, Any] | None, param: str) -> dict[str, Any]:
        try:
            return model.model_validate(raw or {}).model_dump(exclude_none=True)
        except ValidationError as exc:
            raise InvalidInputError(validation_detail(exc.errors(), param)[0], param=param) from None

    def _check_stt(self, stt: dict[str, Any]) -> None:
        if stt.get("model", "whisper") != "whisper":
            raise InvalidInputError("stt_settings.model: Parla recognises speech with whisper", param="stt_settings")
        if stt.get("model_path"):
            path = self.paths.resolve(str(stt["model_path"]), param="stt_settings.model_path")
            if not (path / "model.bin").is_file():
                raise InvalidInputError(
                    f"stt_settings.model_path {stt['model_path']!r} is not a CTranslate2 Whisper model directory",
                    param="stt_settings",
                )

    @staticmethod
    def _check_image(upload: Upload) -> str:
        if len(upload.data) > MAX_IMAGE_BYTES:
            raise TooLargeError("character_image is larger than 10 MB", param="character_image")
        kind = _image_kind(upload.data)
        if kind is None:
            raise InvalidInputError("character_image is not a PNG, JPEG, GIF or WebP image", param="character_image")
        return kind

    @staticmethod
    def _knowledge_passages(upload: Upload) -> list[str]:
        try:
            return passages(upload.data, upload.filename or "knowledge.txt")
        except DocumentError as exc:
            raise InvalidInputError(f"knowledge_base_file: {exc}", param="knowledge_base_file") from None

    # -- writing --------------------------------------------------------------------------------

    @staticmethod
    def _preprocessing(settings: dict[str, Any]) -> PreprocessSettings | None:
        """The audio preprocessing options (the Titans character API's), read at the top level of
        ``voice_cloning_settings`` or under its ``audio_preprocessing``; ``None`` when ``preprocess_audio`` is off."""
        if not settings.get("preprocess_audio", True):
            return None
        nested = settings.get("audio_preprocessing") or {}
        if not isinstance(nested, dict):
            raise InvalidInputError(
                "voice_cloning_settings.audio_preprocessing must be an object", param="voice_cloning_settings"
            )
        given = {key: settings[key] for key in PreprocessSettings.model_fields if key in settings}
        try:
            return PreprocessSettings.model_validate({**given, **nested})
        except ValidationError as exc:
            detail = validation_detail(exc.errors(), "voice_cloning_settings")[0]
            raise InvalidInputError(detail, param="voice_cloning_settings") from None

    @staticmethod
    def _preprocessed(data: bytes, options: PreprocessSettings) -> bytes:
        """The upload after preprocessing, as a WAV at its own rate. Audio that cannot be decoded, or is too long,
        is passed on as it is: the voice library refuses it with its usual reason."""
        try:
            samples, rate = decode_audio(data, max_seconds=MAX_SAMPLE_SECONDS + 1)
        except (AudioDecodeError, AudioTooLongError):
            return data
        try:
            return encode_audio(preprocess(samples, rate, options), rate, "wav")
        except ValueError as exc:
            raise InvalidInputError(f"voice_cloning_audio: {exc}", param="voice_cloning_audio") from None

    def _make_voice(self, name: str, upload: Upload, settings: dict[str, Any]) -> str:
        """A library voice from the character's reference recording (preprocessed unless ``preprocess_audio``
        is off); returns its id."""
        options = self._preprocessing(settings)
        data = self._preprocessed(upload.data, options) if options is not None else upload.data
        voice_name = f"character: {name}"[:100]
        language = settings.get("language", "en")
        transcript = settings.get("reference_text")
        try:
            try:
                voice, _ = self.voices.create_with_sample(
                    VoiceCreate(name=voice_name, language=language), data, transcript
                )
            except ConflictError:  # a voice of that name exists (made by hand): this one gets a suffix
                fields = VoiceCreate(name=f"{voice_name[:92]} #{new_id()[:6]}", language=language)
                voice, _ = self.voices.create_with_sample(fields, data, transcript)
        except ParlaError as exc:
            raise InvalidInputError(f"voice_cloning_audio: {exc.detail}", param="voice_cloning_audio") from None
        return voice.id

    def _store_knowledge(self, character_id: int, upload: Upload, texts: list[str]) -> dict[str, Any]:
        filename = _safe_filename(upload.filename)
        key = f"characters/{character_id}/knowledge/{filename}"
        writer = self.blobs.writer(key)
        writer.write(upload.data)
        writer.commit()
        count = self.knowledge.add_passages(f"character-{character_id}", texts, filename)
        return {"filename": filename, "passages": count, "bytes": len(upload.data)}

    def _store_image(self, character_id: int, upload: Upload, kind: str) -> str:
        key = f"characters/{character_id}/image.{kind}"
        for old in self.blobs.path(f"characters/{character_id}").glob("image.*"):
            old.unlink(missing_ok=True)
        writer = self.blobs.writer(key)
        writer.write(upload.data)
        writer.commit()
        return key

    def create(self, fields: CharacterFields, uploads: CharacterUploads) -> CharacterPublic:
        name = (fields.name or "").strip()
        if not name:
            raise InvalidInputError("a character needs a name", param="name")
        # Everything that can be checked is checked before anything is written.
        _, llm_config = self._llm_config(fields.llm_model, fields.llm_config)
        voice_settings = self._settings_of(
            VoiceCloningSettings, fields.voice_cloning_settings, "voice_cloning_settings"
        )
        self._preprocessing(voice_settings)  # a bad option is refused now, with or without audio
        stt = self._settings_of(STTSettings, fields.stt_settings, "stt_settings")
        self._check_stt(stt)
        if voice_settings.get("voice"):
            self.voices.resolve(str(voice_settings["voice"]))  # 404 for an unknown voice
        style = parse_style_examples(uploads.style_tuning_file.data) if uploads.style_tuning_file else []
        image_kind = self._check_image(uploads.character_image) if uploads.character_image else None
        texts = self._knowledge_passages(uploads.knowledge_base_file) if uploads.knowledge_base_file else None
        with self.db.session() as session:
            if session.scalar(select(Character.id).where(Character.name == name)) is not None:
                raise ConflictError(f"a character named {name!r} already exists", param="name")

        voice_id: str | None = None
        character_id: int | None = None
        try:
            if uploads.voice_cloning_audio:
                voice_id = self._make_voice(name, uploads.voice_cloning_audio, voice_settings)
            try:
                with self.db.session() as session:
                    row = Character(
                        name=name,
                        llm_model=fields.llm_model,
                        llm_config=llm_config,
                        voice_cloning_settings=voice_settings,
                        stt_settings=stt,
                        voice_id=voice_id,
                        owns_voice=voice_id is not None,
                        knowledge_files=[],
                        style_examples=[e.model_dump() for e in style],
                    )
                    session.add(row)
                    session.flush()
                    character_id = row.id
            except IntegrityError:
                raise ConflictError(f"a character named {name!r} already exists", param="name") from None
            image = (
                self._store_image(character_id, uploads.character_image, image_kind)
                if uploads.character_image and image_kind
                else None
            )
            knowledge = (
                [self._store_knowledge(character_id, uploads.knowledge_base_file, texts)]
                if uploads.knowledge_base_file and texts
                else []
            )
            with self.db.session() as session:
                row = self._row(session, character_id)
                row.image_file, row.knowledge_files = image, knowledge
                session.flush()
                created = CharacterPublic.of(row)
        except BaseException:
            self._undo_create(character_id, voice_id)
            raise
        return created

    def _undo_create(self, character_id: int | None, voice_id: str | None) -> None:
        if character_id is not None:
            with self.db.session() as session:
                row = session.get(Character, character_id)
                if row is not None:
                    session.delete(row)
            self._remove_files(character_id)
        if voice_id:
            with contextlib.suppress(NotFoundError):
                self.voices.delete(voice_id)

    def _remove_files(self, character_id: int) -> None:
        shutil.rmtree(self.blobs.path(f"characters/{character_id}"), ignore_errors=True)
        try:
            self.knowledge.drop(f"character-{character_id}")
        except Exception:  # the collection may never have been made; Chroma's errors vary by version
            log.warning("could not drop the knowledge base of character %s", character_id, exc_info=True)

    def update(self, character_id: int, fields: CharacterFields, uploads: CharacterUploads) -> CharacterPublic:
        """Change what is given; a new file replaces the old one (knowledge, image, voice, style)."""
        with self.db.session() as session:
            row = self._row(session, character_id)
            current_model, current_config = row.llm_model, dict(row.llm_config or {})
            old_voice, owned = row.voice_id, row.owns_voice
            voice_settings_now = dict(row.voice_cloning_settings or {})
        changes: dict[str, Any] = {}
        if fields.name is not None:
            name = fields.name.strip()
            if not name:
                raise InvalidInputError("a character needs a name", param="name")
            changes["name"] = name
        if fields.llm_model is not None or fields.llm_config is not None:
            llm_model = fields.llm_model if fields.llm_model is not None else current_model
            raw = fields.llm_config if fields.llm_config is not None else current_config
            _, changes["llm_config"] = self._llm_config(llm_model, raw)
            changes["llm_model"] = llm_model
        if fields.voice_cloning_settings is not None:
            changes["voice_cloning_settings"] = self._settings_of(
                VoiceCloningSettings, fields.voice_cloning_settings, "voice_cloning_settings"
            )
            self._preprocessing(changes["voice_cloning_settings"])
            if changes["voice_cloning_settings"].get("voice"):
                self.voices.resolve(str(changes["voice_cloning_settings"]["voice"]))
        if fields.stt_settings is not None:
            changes["stt_settings"] = self._settings_of(STTSettings, fields.stt_settings, "stt_settings")
            self._check_stt(changes["stt_settings"])
        if uploads.style_tuning_file:
            changes["style_examples"] = [e.model_dump() for e in parse_style_examples(uploads.style_tuning_file.data)]
        image_kind = self._check_image(uploads.character_image) if uploads.character_image else None
        texts = self._knowledge_passages(uploads.knowledge_base_file) if uploads.knowledge_base_file else None

        new_voice: str | None = None
        try:
            if uploads.voice_cloning_audio:
                settings = changes.get("voice_cloning_settings", voice_settings_now)
                new_voice = self._make_voice(
                    changes.get("name", str(character_id)), uploads.voice_cloning_audio, settings
                )
                changes["voice_id"], changes["owns_voice"] = new_voice, True
            try:
                with self.db.session() as session:
                    row = self._row(session, character_id)
                    for key, value in changes.items():
                        setattr(row, key, value)
                    row.updated_at = utcnow()
                    session.flush()
            except IntegrityError:
                raise ConflictError(f"a character named {changes.get('name')!r} already exists", param="name") from None
        except BaseException:
            if new_voice:
                self.voices.delete(new_voice)
            raise
        # The row is updated; files follow. A replaced voice made for this character goes.
        if new_voice and old_voice and owned:
            with contextlib.suppress(NotFoundError):
                self.voices.delete(old_voice)
        with self.db.session() as session:
            row = self._row(session, character_id)
            if image_kind and uploads.character_image:
                row.image_file = self._store_image(character_id, uploads.character_image, image_kind)
            if texts and uploads.knowledge_base_file:
                self.knowledge.drop(f"character-{character_id}")
                shutil.rmtree(self.blobs.path(f"characters/{character_id}/knowledge"), ignore_errors=True)
                row.knowledge_files = [self._store_knowledge(character_id, uploads.knowledge_base_file, texts)]
            session.flush()
            return CharacterPublic.of(row)

    def delete(self, character_id: int) -> None:
        """The character, its files, its knowledge base, and the voice made for it."""
        with self.db.session() as session:
            row = self._row(session, character_id)
            voice_id, owned = row.voice_id, row.owns_voice
            session.delete(row)
        self._remove_files(character_id)
        if voice_id and owned:
            with contextlib.suppress(NotFoundError):
                self.voices.delete(voice_id)

    # -- answering ------------------------------------------------------------------------------

    def check_question(self, question: str | None) -> str:
        question = (question or "").strip()
        if not question:
            raise InvalidInputError("the question is empty", param="question")
        if len(question) > self.settings.max_question_chars:
            raise TooLargeError(
                f"the question is {len(question)} characters; the limit is {self.settings.max_question_chars}",
                param="question",
            )
        return question

    def _transcriber_for(self, stt: STTSettings) -> Transcriber:
        if not stt.model_path:
            return self.transcriber
        path = self.paths.resolve(stt.model_path, param="stt_settings.model_path")
        with self._transcribers_lock:
            if path not in self._transcribers:
                self._transcribers[path] = Transcriber(self.settings.model_copy(update={"whisper_model_path": path}))
            return self._transcribers[path]

    def transcribe_question(self, character_id: int, data: bytes) -> str:
        """What the person asked, heard by the character's Whisper (blocking)."""
        persona = self.persona(character_id)
        if not data:
            raise InvalidInputError("audio_file is empty", param="audio_file")
        if len(data) > self.settings.max_upload_bytes:
            raise TooLargeError("audio_file is too large", param="audio_file")
        try:
            audio, _ = decode_audio(data, 16_000, max_seconds=QUESTION_AUDIO_MAX_S)
        except AudioTooLongError:
            raise InvalidInputError(
                f"audio_file is longer than {QUESTION_AUDIO_MAX_S:g} s; ask a shorter question", param="audio_file"
            ) from None
        except AudioDecodeError as exc:
            raise InvalidInputError(f"audio_file is not audio that can be read: {exc}", param="audio_file") from None
        heard = self._transcriber_for(persona.stt).transcribe(audio, language=persona.stt.language)
        if not heard.text.strip():
            raise InvalidInputError("no speech was heard in audio_file", param="audio_file")
        return as_question(heard.text)

    def context(self, persona: Persona, question: str) -> tuple[list[Message], list[Passage]]:
        """The retrieved passages and the messages for the model (blocking: embeds the question)."""
        found = self.knowledge.search(f"character-{persona.id}", question, k=PASSAGES_PER_ANSWER)
        found = [p for p in found if p.score >= RELEVANCE_FLOOR * found[0].score] if found else []
        messages = build_messages(
            name=persona.name,
            question=question,
            passages=found,
            style_examples=persona.style_examples,
            system_prompt=persona.llm.system_prompt,
        )
        return messages, found

    def tokens(self, persona: Persona, messages: list[Message]) -> Iterator[str]:
        """The answer as the model writes it (blocking); the model's failures become a 502."""
        model = chat_model_for(persona.llm, self.embedded, self.remote)
        try:
            yield from model.stream(messages, persona.llm)
        except LLMError as exc:
            raise UpstreamError(f"the language model failed: {exc}") from None

    def speech_plan(self, persona: Persona, text: str, fmt: str = ANSWER_FORMAT) -> SpeechPlan:
        return self.speech.prepare(
            text=text,
            voice=persona.voice,
            model=persona.engine,
            fmt=fmt,
            seed=persona.id,  # one character, one delivery: the same seed for every sentence
            language=persona.language,
            source="character",
        )

    async def answer(self, character_id: int, question: str) -> Answer:
        """The whole answer: text, then its audio kept as a generation (the Titans character API's ask endpoints)."""
        question = self.check_question(question)
        persona = await offload(self.persona, character_id)
        self.require_language_model(persona)
        messages, found = await offload(self.context, persona, question)
        text = (await offload(lambda: "".join(self.tokens(persona, messages)))).strip()
        answer = Answer(question, text, found, persona.id, persona.name)
        if not text:
            answer.warnings.append("the language model gave an empty answer")
            return answer
        plan = self.speech_plan(persona, text)
        await self.speech.render(plan, keep=True)
        answer.generation_id = plan.id
        return answer

    async def converse(
        self, character_id: int, question: str, *, speak: bool = True
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The answer as events while it is made: ``answer.delta`` (text as the model writes it),
        with ``speak`` also ``speech.audio.delta`` (24 kHz 16-bit PCM, base64) sentence by sentence
        while the model is still writing, then ``answer.done`` and ``speech.audio.done`` (the kept
        answer's ``audio_url``). A client that leaves stops the model and the synthesis."""
        question = self.check_question(question)
        persona = await offload(self.persona, character_id)
        # The model and speech are checked before the model starts: fail fast, not mid-answer.
        self.require_language_model(persona)
        self.speech_plan(persona, question)
        messages, found = await offload(self.context, persona, question)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[dict[str, Any] | BaseException | None] = asyncio.Queue()
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        stop = threading.Event()
        chunks: list[AudioChunk] = []

        def write() -> None:
            """The model on a thread; tokens cross to the loop as they come."""
            splitter = SentenceStream()
            try:
                for token in self.tokens(persona, messages):
                    if stop.is_set():
                        return
                    loop.call_soon_threadsafe(events.put_nowait, {"type": "answer.delta", "delta": token})
                    for piece in splitter.feed(token) if speak else ():
                        loop.call_soon_threadsafe(sentences.put_nowait, piece)
                for piece in splitter.close() if speak else ():
                    loop.call_soon_threadsafe(sentences.put_nowait, piece)
                loop.call_soon_threadsafe(events.put_nowait, {"type": "answer.written"})
            except BaseException as exc:
                loop.call_soon_threadsafe(events.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(sentences.put_nowait, None)

        async def say() -> None:
            encoder = None
            try:
                while (piece := await sentences.get()) is not None:
                    async for chunk in self.speech.audio(self.speech_plan(persona, piece, "pcm")):
                        chunks.append(chunk)
                        encoder = encoder or open_encoder("pcm", chunk.sample_rate)
                        data = encoder.encode(chunk.samples)
                        if data:
                            await events.put({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
                if encoder is not None:
                    tail = encoder.close()
                    if tail:
                        await events.put({"type": "speech.audio.delta", "audio": base64.b64encode(tail).decode()})
                await events.put({"type": "speech.spoken"})
            except BaseException as exc:
                await events.put(exc)
                raise

        writer = loop.run_in_executor(None, write)
        speaker = asyncio.create_task(say()) if speak else None
        text = ""
        pending = {"answer.written", "speech.spoken"} if speak else {"answer.written"}
        try:
            while pending:
                event = await events.get()
                if isinstance(event, BaseException):
                    raise event
                assert event is not None
                kind = event["type"]
                if kind in pending:
                    pending.discard(kind)
                    if kind == "answer.written":
                        text = text.strip()
                        yield {"type": "answer.done", "text": text, "knowledge_context": knowledge_context(found)}
                    continue
                if kind == "answer.delta":
                    text += event["delta"]
                yield event
        finally:
            stop.set()
            if speaker is not None and not speaker.done():
                speaker.cancel()
            await asyncio.gather(writer, *([speaker] if speaker else []), return_exceptions=True)
        answer = Answer(question, text, found, persona.id, persona.name)
        if text:
            plan = self.speech_plan(persona, text)
            if chunks:
                await offload(self.speech.record_audio, plan, chunks)
            else:
                await self.speech.render(plan, keep=True)
            answer.generation_id = plan.id
        yield {"type": "speech.audio.done", "generation_id": answer.generation_id, "answer": answer}

    # -- preparing ------------------------------------------------------------------------------

    async def load(self, character_id: int) -> list[str]:
        """Load what the character's answers need (model, embedder, voice, Whisper); returns what was loaded."""
        persona = await offload(self.persona, character_id)
        loaded: list[str] = []
        if not persona.llm.base_url:
            self.require_language_model(persona)
            try:
                await offload(self.embedded.load, persona.llm)
            except LLMError as exc:
                raise UpstreamError(f"the language model failed to load: {exc}") from None
            loaded.append("language model")
        await offload(self.knowledge.embedder.embed, ["warm up"])
        loaded.append("embedder")
        if persona.voice:
            await self.speech.warm_voice(persona.voice)
            loaded.append("voice")
        await offload(self._transcriber_for(persona.stt).load)
        loaded.append("speech recognition")
        return loaded
